/**
 * A private certificate authority and SMTP servers that speak TLS, for the transport tests.
 *
 * The CA and the server certificate are made by the `openssl` command-line tool at test time (in
 * a temporary directory, about 50 ms): no certificate is checked in to expire one day. `.ci/run`
 * installs openssl where it is missing; without it these tests fail and say so.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';

export interface TestPki {
  /** The private CA's certificate (PEM): what a service trusts. */
  ca: string;
  /** The server's key and certificate, for host names `mail.test` and `localhost` and the address 127.0.0.1. */
  key: string;
  cert: string;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT')
      throw new Error('the TLS tests need the openssl command (apt-get install openssl; .ci/run installs it)', { cause: err });
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString() ?? e.message}`, { cause: err });
  }
}

/** A fresh CA and a server certificate it signed (P-256 keys, valid for two days). */
export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'fairsend-pki-'));
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=fairsend test CA'], dir);
    openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=mail.test'], dir);
    writeFileSync(
      join(dir, 'ext.cnf'),
      'subjectAltName=DNS:mail.test,DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n',
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        'server.csr',
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        'server.pem',
        '-days',
        '2',
      ].concat(['-extfile', 'ext.cnf']),
      dir,
    );
    const read = (f: string) => readFileSync(join(dir, f), 'utf8');
    return { ca: read('ca.pem'), key: read('server.key'), cert: read('server.pem') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What one SMTP session showed the server. */
export interface SessionRecord {
  /** The name the client gave in EHLO/HELO. */
  ehlo: string;
  /** TLS was on when the client sent MAIL FROM (or when it authenticated, or closed). */
  secure: boolean;
  auth?: { method: string; user: string };
}

export interface TlsSmtpOptions {
  pki: TestPki;
  /** Implicit TLS from the first byte. */
  secure?: boolean;
  /** Refuse STARTTLS (the command is unknown, as on a server without it). */
  noStartTls?: boolean;
  /** Require AUTH with exactly these methods. */
  authMethods?: ('PLAIN' | 'LOGIN' | 'XOAUTH2')[];
  /** The highest TLS version the server speaks. */
  maxTlsVersion?: 'TLSv1.2';
  /** Accepted credentials: user and password (PLAIN, LOGIN) or access token (XOAUTH2). */
  credentials?: { user: string; secret: string };
}

/** smtp-server on loopback with a certificate from `pki`, recording each session. */
export class TlsSmtp {
  readonly sessions: SessionRecord[] = [];
  /** MAIL FROM commands received, with whether TLS was on. */
  readonly mailFrom: { address: string; secure: boolean }[] = [];
  /** AUTH attempts received, with whether TLS was on. */
  readonly authAttempts: { method: string; secure: boolean }[] = [];
  /** Messages accepted (250 after DATA). */
  accepted = 0;
  port = 0;
  private server: SMTPServer;

  constructor(opts: TlsSmtpOptions) {
    const auth = opts.authMethods;
    const options: SMTPServerOptions = {
      secure: opts.secure ?? false,
      key: opts.pki.key,
      cert: opts.pki.cert,
      ...(opts.maxTlsVersion ? { maxVersion: opts.maxTlsVersion } : {}),
      logger: false,
      // The test decides; a server should never offer AUTH in clear, but one that does must still get nothing.
      allowInsecureAuth: true,
      authOptional: !auth,
      ...(auth ? { authMethods: auth } : {}),
      disabledCommands: [...(opts.noStartTls ? ['STARTTLS'] : []), ...(auth ? [] : ['AUTH'])],
      onConnect: (_session, cb) => cb(),
      onAuth: (a: SMTPServerAuthentication, session: SMTPServerSession, cb) => {
        this.authAttempts.push({ method: a.method, secure: session.secure });
        const c = opts.credentials;
        const ok =
          c !== undefined &&
          a.username === c.user &&
          (a.method === 'XOAUTH2' ? a.accessToken === c.secret : a.password === c.secret) &&
          (auth ?? []).includes(a.method as 'PLAIN');
        if (!ok) {
          // XOAUTH2 failures answer with a JSON challenge, as Gmail does.
          if (a.method === 'XOAUTH2') return cb(null, { data: { status: '401', schemes: 'bearer', scope: 'mail' } });
          return cb(new Error('Invalid username or password'));
        }
        cb(null, { user: a.username });
      },
      onMailFrom: (address, session, cb) => {
        this.mailFrom.push({ address: address.address, secure: session.secure });
        cb();
      },
      onData: (stream, session, cb) => {
        stream.resume();
        stream.on('end', () => {
          this.accepted++;
          const authMethod = this.authAttempts.at(-1)?.method;
          this.sessions.push({
            ehlo: session.hostNameAppearsAs,
            secure: session.secure,
            ...(session.user && authMethod ? { auth: { method: authMethod, user: String(session.user) } } : {}),
          });
          cb();
        });
      },
    };
    this.server = new SMTPServer(options);
    // A client that gives up in the handshake (an untrusted certificate) is an error here: expected.
    this.server.on('error', () => undefined);
  }

  async start(): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server.server, 'listening');
    this.port = (this.server.server.address() as AddressInfo).port;
    return this;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export function startTlsSmtp(opts: TlsSmtpOptions): Promise<TlsSmtp> {
  return new TlsSmtp(opts).start();
}
