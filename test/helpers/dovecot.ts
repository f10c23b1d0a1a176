/**
 * A private Dovecot IMAP server for the bounce-mailbox tests: Debian's `dovecot-imapd`
 * (/usr/sbin/dovecot), started in the foreground with its own configuration, mail and runtime
 * folders in a temporary directory, listening on a free port of 127.0.0.1, one user with a plain
 * password, no TLS. The system's Dovecot (if any) is not touched. `.ci/run` installs the package;
 * without it the tests fail and say so.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export const DOVECOT = '/usr/sbin/dovecot';

export interface TestDovecot {
  host: string;
  port: number;
  user: string;
  password: string;
  /** `imap://user:password@127.0.0.1:port/INBOX` (the password URL-encoded). */
  url(mailbox?: string): string;
  /** Dovecot's own log (for a failing test's message). */
  log(): string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Resolves once something accepts TCP connections on host:port, or rejects after `ms`. */
async function waitForPort(host: string, port: number, ms: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = createConnection({ host, port }, () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error('dovecot exited during start-up');
    if (Date.now() > deadline) throw new Error(`dovecot did not listen on ${host}:${port} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts Dovecot on a free port; tries another port when one was taken between the look and the bind. */
export async function startDovecot(): Promise<TestDovecot> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDovecotOnce();
    } catch (err) {
      if (attempt >= 3 || !/exited during start-up/.test((err as Error).message)) throw err;
    }
  }
}

async function startDovecotOnce(): Promise<TestDovecot> {
  if (!existsSync(DOVECOT))
    throw new Error(`the IMAP tests need Dovecot (${DOVECOT}): apt-get install dovecot-imapd (.ci/run installs it)`);
  const dir = mkdtempSync(join(tmpdir(), 'fairsend-dovecot-'));
  chmodSync(dir, 0o755);
  const mail = join(dir, 'mail');
  mkdirSync(mail);
  // Dovecot never serves mail as uid 0: as root the mailbox belongs to nobody, otherwise to us.
  const root = process.getuid?.() === 0;
  const me = userInfo();
  const mailUid = root ? 65534 : me.uid;
  const mailGid = root ? 65534 : me.gid;
  chmodSync(mail, 0o777);
  const port = await freePort();
  const user = 'bounces';
  const password = 'p@ss/w%rd#secret'; // URL-special characters, no colon (passwd-file's separator)
  writeFileSync(join(dir, 'users'), `${user}:{PLAIN}${password}::::::\n`);
  const conf = `
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
instance_name = fairsend-test-${port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
default_internal_user = ${root ? 'dovecot' : me.username}
default_login_user = ${root ? 'dovenull' : me.username}
mail_location = maildir:${mail}/%u
passdb {
  driver = passwd-file
  args = ${dir}/users
}
userdb {
  driver = static
  args = uid=${mailUid} gid=${mailGid} home=${mail}/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener imaps {
    port = 0
  }
  ${root ? '' : 'chroot ='}
}
service anvil {
  chroot =
}
service stats {
  unix_listener stats-writer {
    mode = 0666
  }
}
`;
  writeFileSync(join(dir, 'dovecot.conf'), conf);
  const log = () => (existsSync(join(dir, 'dovecot.log')) ? readFileSync(join(dir, 'dovecot.log'), 'utf8') : '');
  let exited = false;
  const child: ChildProcess = spawn(DOVECOT, ['-F', '-c', join(dir, 'dovecot.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  child.on('exit', () => (exited = true));
  try {
    await waitForPort('127.0.0.1', port, 20_000, () => !exited);
  } catch (err) {
    child.kill('SIGKILL');
    const message = `${(err as Error).message}\n${stderr}\n${log()}`;
    rmSync(dir, { recursive: true, force: true });
    throw new Error(message, { cause: err });
  }
  return {
    host: '127.0.0.1',
    port,
    user,
    password,
    url: (mailbox = 'INBOX') => `imap://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(mailbox)}`,
    log,
    async stop() {
      if (!exited) {
        const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await gone;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
