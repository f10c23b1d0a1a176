/**
 * The CLI run in process (runCli) against a real PostgreSQL database: output of the commands, and
 * error exits with one clear line on stderr.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/index.js';
import type { Engine } from '../src/engine.js';
import { authenticate } from '../services/auth.js';
import { createToken } from '../services/auth.js';
import { createEmptyDatabase, createTestDatabase, createTestEngine, rows, TEST_SECRET_KEY } from './helpers/db.js';
import { userWithContacts } from './helpers/scheduler.js';

class Sink extends Writable {
  text = '';
  private waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    this.waiters = this.waiters.filter((w) => {
      const m = this.text.match(w.re);
      if (m) w.resolve(m);
      return !m;
    });
    cb();
  }
  /** Resolves when the output matches `re`. */
  waitFor(re: RegExp): Promise<RegExpMatchArray> {
    const m = this.text.match(re);
    return m ? Promise.resolve(m) : new Promise((resolve) => this.waiters.push({ re, resolve }));
  }
}

describe('fairsend CLI', () => {
  let url: string;
  let engine: Engine;
  let dir: string;

  const run = async (args: string[], extraEnv: Record<string, string> = {}, signal?: AbortSignal) => {
    const stdout = new Sink();
    const stderr = new Sink();
    const code = await runCli(['node', 'fairsend', ...args], {
      stdout,
      stderr,
      env: { DATABASE_URL: url, LOG_LEVEL: 'silent', FAIRSEND_SECRET_KEY: TEST_SECRET_KEY, ...extraEnv },
      ...(signal ? { signal } : {}),
    });
    return { code, out: stdout.text, err: stderr.text };
  };

  beforeAll(async () => {
    url = await createTestDatabase();
    engine = await createTestEngine({ databaseUrl: url });
    dir = await mkdtemp(join(tmpdir(), 'fairsend-cli-'));
    await engine.services.create({
      name: 'relay-eu',
      transport: { host: '127.0.0.1', port: 2525 },
      sendingRate: 0.5,
      dailyQuota: 1000,
      quotaTimezone: 'Europe/Paris',
    });
    await engine.services.create({
      name: 'slow-tokyo',
      transport: { host: '127.0.0.1', port: 2526 },
      sendingRate: 60,
      dailyQuota: 100,
      quotaTimezone: 'Asia/Tokyo',
    });
    await engine.services.create({
      name: 'implicit-insecure',
      transport: { host: '127.0.0.1', port: 2465, secure: true, tlsInsecure: true },
      sendingRate: 1,
      dailyQuota: 10,
    });
    await engine.apiDb.query(
      "UPDATE email_services SET used_quota = 40, quota_day = (now() AT TIME ZONE 'Europe/Paris')::date WHERE name = 'relay-eu'",
    );
  });
  afterAll(() => engine.close());

  it('lists services as a table with remaining quota and reset time', async () => {
    const { code, out, err } = await run(['services', 'list']);
    expect(err).toBe('');
    expect(code).toBe(0);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      /^id\s+name\s+every \(s\)\s+remaining\s+used\s+daily\s+resets at\s+in\s+health\s+enabled\s+tls\s+certificates$/,
    );
    expect(lines[1]).toMatch(/^-+(\s+-+)+$/);
    const row = (name: string) =>
      lines
        .find((l) => l.includes(name))!
        .trim()
        .split(/\s{2,}/);
    expect(row('relay-eu')).toEqual([
      '1',
      'relay-eu',
      '0.5',
      '960',
      '40',
      '1000',
      expect.stringMatching(/Z \(Europe\/Paris\)$/),
      expect.any(String),
      'ok',
      'yes',
      'opportunistic',
      'checked',
    ]);
    expect(row('slow-tokyo').slice(3, 6)).toEqual(['100', '0', '100']);
    expect(row('implicit-insecure').slice(-2)).toEqual(['implicit TLS', 'NOT CHECKED']);
    // The reset time is the next local midnight in the service's zone.
    const q = (await engine.services.quota()).find((s) => s.name === 'relay-eu')!;
    expect(row('relay-eu')[6]).toBe(`${q.resetsAt.toISOString().replace(/\.\d+Z$/, 'Z')} (Europe/Paris)`);
  });

  it('adds a service, reading the SMTP password from the environment and never printing it', async () => {
    const { code, out } = await run(
      [
        'services',
        'add',
        '--name',
        'added',
        '--host',
        'smtp.example.org',
        '--port',
        '2587',
        '--rate',
        '2',
        '--quota',
        '500',
        '--timezone',
        'UTC',
        '--smtp-user',
        'bob',
      ],
      { FAIRSEND_SMTP_PASS: 'pa55-word-xyz' },
    );
    expect(code).toBe(0);
    expect(out).toMatch(/^service #\d+ added: one send every 2s, 500 a day \(UTC\)\n$/);
    expect(out).not.toContain('pa55-word-xyz');
    const [s] = await rows<{ transport: { auth: { pass: string } } }>(
      engine.apiDb,
      "SELECT transport FROM email_services WHERE name = 'added'",
    );
    expect(s!.transport.auth.pass).toMatch(/^fsenc:v1:/); // stored encrypted with FAIRSEND_SECRET_KEY
    expect(engine.secrets.open(s!.transport.auth.pass, 'transport.auth.pass')).toBe('pa55-word-xyz');
    const missing = await run(['services', 'add', '--name', 'x', '--host', 'h', '--rate', '1', '--quota', '1', '--smtp-user', 'u']);
    expect(missing.code).toBe(1);
    expect(missing.err).toBe('fairsend: --smtp-user needs the password in the environment variable FAIRSEND_SMTP_PASS\n');
  });

  it('exits non-zero with one clear line for a campaign file that is not JSON', async () => {
    const file = join(dir, 'broken.json');
    await writeFile(file, '{ "name": "x", ');
    const { code, out, err } = await run(['campaign', 'create', '--file', file]);
    expect(code).toBe(1);
    expect(out).toBe('');
    expect(err.split('\n')).toEqual([expect.stringMatching(/^fairsend: .*broken\.json is not valid JSON: .+/), '']);
  });

  it('lists every invalid field of a campaign file on that one line', async () => {
    const file = join(dir, 'invalid.json');
    await writeFile(file, JSON.stringify({ userId: 1, name: 'x', from: 'nope', templates: [] }));
    const { code, err } = await run(['campaign', 'create', '--file', file]);
    expect(code).toBe(1);
    expect(err).toBe(
      'fairsend: from: is not a valid email address; templates: needs at least one template; contacts: needs recipients: contacts, recipientRule, or both\n',
    );
    const missing = await run(['campaign', 'create', '--file', join(dir, 'nope.json')]);
    expect(missing).toMatchObject({ code: 1, err: expect.stringMatching(/^fairsend: cannot read .*nope\.json: ENOENT\n$/) });
  });

  it('creates a campaign from a file and prints its status', async () => {
    const u = await userWithContacts(engine, 'Cli', 3);
    const file = join(dir, 'campaign.json');
    await writeFile(
      file,
      JSON.stringify({ userId: u.userId, name: 'From file', from: 'cli@example.test', templates: [u.templateId], contacts: u.contactIds }),
    );
    const created = await run(['campaign', 'create', '--file', file]);
    expect(created.code).toBe(0);
    const id = Number(/^campaign #(\d+) From file: scheduled, 3 recipients reserved/.exec(created.out)![1]);
    const status = await run(['campaign', 'status', String(id)]);
    expect(status).toMatchObject({ code: 0, err: '' });
    // Then the completion forecast (test/forecast.test.ts checks its figures).
    expect(status.out).toMatch(
      new RegExp(
        `^campaign #${id}: scheduled, 0 sent, 0 failed, 0 cancelled, 0 unknown, 3 queued, 0 sending, of 3, expected done \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\n$`,
      ),
    );
    const unknown = await run(['campaign', 'status', '999999']);
    expect(unknown).toMatchObject({ code: 1, err: 'fairsend: campaign 999999 not found\n' });
  });

  it('follows a campaign with --watch until it is cancelled', async () => {
    const u = await userWithContacts(engine, 'Watch', 2);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'Watched',
      from: 'w@example.test',
      templates: [u.templateId],
      contacts: u.contactIds,
    });
    const stdout = new Sink();
    const running = runCli(['node', 'fairsend', 'campaign', 'status', String(c.id), '--watch', '--interval', '100'], {
      stdout,
      stderr: new Sink(),
      env: { DATABASE_URL: url, LOG_LEVEL: 'silent', FAIRSEND_SECRET_KEY: TEST_SECRET_KEY },
    });
    await stdout.waitFor(/0\/2 done/);
    await stdout.waitFor(/\| (-|0\/min), ETA - \| scheduled/); // nothing sent: no rate, no ETA
    await engine.campaigns.cancel(c.id);
    expect(await running).toBe(0);
    expect(stdout.text).toContain(`campaign #${c.id}: cancelled, 0 sent, 0 failed, 2 cancelled`);
  });

  it('creates an admin and prints a token that authenticates', async () => {
    const { code, out } = await run(['users', 'create', '--name', 'Root', '--email', 'root@example.org', '--quota', '10', '--admin']);
    expect(code).toBe(0);
    const token = /api token \(shown once, store it now\): (fst_\S+)/.exec(out)![1]!;
    expect(await authenticate(engine, token)).toMatchObject({ email: 'root@example.org', role: 'admin' });
  });

  it('starts the HTTP server, serves until stopped, then shuts down cleanly', async () => {
    const stdout = new Sink();
    const stop = new AbortController();
    const running = runCli(['node', 'fairsend', 'start', '--port', '0', '--no-scheduler'], {
      stdout,
      stderr: new Sink(),
      env: { DATABASE_URL: url, LOG_LEVEL: 'silent', FAIRSEND_SECRET_KEY: TEST_SECRET_KEY },
      signal: stop.signal,
    });
    const [, address] = await stdout.waitFor(/fairsend listening on (http:\/\/\S+)/);
    const health = await fetch(`${address}/health`);
    expect(health.status).toBe(200);
    // The commands that read a running server's memory reach it with --url and a token.
    const admin = await engine.users.create({ name: 'Ops', email: 'ops@example.org', quota: 0, role: 'admin' });
    const token = await createToken(engine, admin.id);
    const status = await run(['scheduler', 'status', '--url', address!, '--token', token]);
    expect(status).toMatchObject({ code: 0, err: '' });
    expect(status.out).toMatch(/^scheduler stopped \(.+, version 0\.1\.0, up .+\)\nqueued subtasks: \d+, buffered: 0, rate: 0\/min \(1m\)/);
    expect(status.out).toMatch(/relay-eu\s+stopped\s+960\s+1000/);
    // Not running here: no fairness lag to show.
    expect(status.out).toMatch(/\bfair lag\n/);
    expect(status.out).toMatch(/relay-eu\s+stopped\s+.*\s-\n/);
    const jobs = await run(['jobs', 'list'], { FAIRSEND_URL: address!, FAIRSEND_TOKEN: token });
    expect(jobs.code).toBe(0);
    expect(jobs.out).toMatch(/^name\s+schedule\s+state\s+next run\s+last run\s+outcome\n/);
    expect(jobs.out).toMatch(/\ndb_health_check\s+every \d+m\s+/);
    const refused = await run(['scheduler', 'status', '--url', address!, '--token', 'fst_' + 'q'.repeat(43)]);
    expect(refused).toMatchObject({ code: 1, err: `fairsend: ${address} answered 401: the API token is not valid\n` });
    stop.abort();
    expect(await running).toBe(0);
    expect(stdout.text).toMatch(/stopping.*\nfairsend stopped\n$/);
    await expect(fetch(`${address}/health`)).rejects.toThrow();
  });

  it('runs jobs in process when a jobs API is given, and refuses pause without a server', async () => {
    const ran: string[] = [];
    const stdout = new Sink();
    const code = await runCli(['node', 'fairsend', 'jobs', 'run', 'analyze_tables'], {
      stdout,
      stderr: new Sink(),
      env: { DATABASE_URL: url, LOG_LEVEL: 'silent', FAIRSEND_SECRET_KEY: TEST_SECRET_KEY },
      jobs: () => ({
        list: () => [],
        pause: () => undefined,
        resume: () => undefined,
        runNow: async (name) => (ran.push(name), { name, outcome: 'success', durationMs: 7, error: null }),
      }),
    });
    expect(code).toBe(0);
    expect(ran).toEqual(['analyze_tables']);
    expect(stdout.text).toBe('analyze_tables: success in 7 ms\n');
    const pause = await run(['jobs', 'pause', 'analyze_tables']);
    expect(pause.code).toBe(1);
    expect(pause.err).toMatch(/^fairsend: jobs pause steers a running server's schedule: pass --url/);
  });

  it('prints the database view of the scheduler without a server', async () => {
    const { code, out } = await run(['scheduler', 'status']);
    expect(code).toBe(0);
    expect(out).toMatch(/^scheduler engines alive \(heartbeat in the last \d+s\): 0\n/);
    expect(out).toMatch(/queued subtasks: 0\n/);
    expect(out).toContain('relay-eu');
  });

  it('migrates an empty database, then finds it up to date, and seeds the demo data', async () => {
    const empty = await createEmptyDatabase();
    const first = await run(['migrate'], { DATABASE_URL: empty });
    expect(first.code).toBe(0);
    expect(first.out).toMatch(/^migrating .+ \.\.\.\n {2}applied 20261123000100-initial-schema\.cjs\n(.|\n)*\d+ migration\(s\) applied\n$/);
    expect((await run(['migrate'], { DATABASE_URL: empty })).out).toMatch(/already up to date\n$/);
    const seeded = await run(['seed'], { DATABASE_URL: empty });
    expect(seeded.code).toBe(0);
    expect(seeded.out).toContain('loaded 20261123000100-demo-data.cjs');
    const listed = await run(['services', 'list'], { DATABASE_URL: empty });
    expect(listed.out).toMatch(/demo-relay-fast\s+0\.05\s+5000\s+0\s+5000/);
  });

  it('exits 2 on usage errors', async () => {
    const unknown = await run(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/^fairsend: unknown command 'frobnicate'/);
    const missing = await run(['campaign', 'create']);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/^fairsend: required option '-f, --file <path>' not specified/);
    expect((await run(['campaign', 'status', 'abc'])).code).toBe(2);
  });

  it('prints its version', async () => {
    const { version } = JSON.parse(await readFile('package.json', 'utf8')) as { version: string };
    expect(await run(['--version'])).toEqual({ code: 0, out: `${version}\n`, err: '' });
    expect((await run(['-V'])).out).toBe(`${version}\n`);
  });

  it('lists, shows, pauses, resumes and cancels campaigns, with --json for scripts', async () => {
    const u = await userWithContacts(engine, 'Lister', 4);
    const c = await engine.campaigns.create({
      userId: u.userId,
      name: 'Listed',
      from: { address: 'lister@example.test', name: 'Lister' },
      templates: [u.templateId],
      contacts: u.contactIds,
    });
    const list = await run(['campaign', 'list', '--user', String(u.userId)]);
    expect(list).toMatchObject({ code: 0, err: '' });
    const lines = list.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^id\s+user\s+name\s+status\s+sent\s+failed\s+queued\s+total\s+scheduled at$/);
    expect(
      lines.slice(2).map((l) =>
        l
          .trim()
          .split(/\s{2,}/)
          .slice(0, 8),
      ),
    ).toEqual([[String(c.id), String(u.userId), 'Listed', 'scheduled', '0', '0', '4', '4']]);
    const asJson = await run(['campaign', 'list', '--user', String(u.userId), '--json']);
    expect(JSON.parse(asJson.out)).toEqual([
      expect.objectContaining({
        id: c.id,
        name: 'Listed',
        status: 'scheduled',
        progress: expect.objectContaining({ queued: 4, total: 4 }),
      }),
    ]);
    expect(JSON.parse((await run(['campaign', 'list', '--status', 'paused', '--json'])).out)).toEqual([]);

    const shown = await run(['campaign', 'show', String(c.id)]);
    expect(shown.code).toBe(0);
    expect(shown.out).toContain(`campaign #${c.id} Listed\n  status:       scheduled\n  user:         #${u.userId}\n`);
    expect(shown.out).toContain('  from:         Lister <lister@example.test>\n');
    expect(shown.out).toContain('  progress:     0 sent, 0 failed, 0 cancelled, 0 unknown, 4 queued, 0 sending, of 4\n');
    expect(JSON.parse((await run(['campaign', 'show', String(c.id), '--json'])).out)).toMatchObject({ id: c.id, recipients: 4 });

    expect(await run(['campaign', 'pause', String(c.id)])).toEqual({ code: 0, out: `campaign #${c.id}: paused\n`, err: '' });
    expect((await engine.campaigns.get(c.id)).status).toBe('paused');
    const again = await run(['campaign', 'pause', String(c.id)]);
    expect(again).toEqual({ code: 1, out: '', err: `fairsend: cannot pause campaign ${c.id}: it is paused\n` });
    expect(await run(['campaign', 'resume', String(c.id)])).toEqual({ code: 0, out: `campaign #${c.id}: scheduled\n`, err: '' });
    expect(await run(['campaign', 'cancel', String(c.id)])).toEqual({
      code: 0,
      out: `campaign #${c.id}: cancelled, 4 credit refunded\n`,
      err: '',
    });
    expect((await run(['campaign', 'resume', String(c.id)])).code).toBe(1);
    expect(await run(['campaign', 'show', '999999'])).toMatchObject({ code: 1, err: 'fairsend: campaign 999999 not found\n' });
    expect((await run(['campaign', 'list', '--status', 'nope'])).code).toBe(2);
  });

  it('creates a template from subject, text and HTML files, and lists templates', async () => {
    const u = await engine.users.create({ name: 'Tpl', email: 'tpl@example.test', quota: 10 });
    await writeFile(join(dir, 'subject.txt'), 'Hello {{name}}\n');
    await writeFile(join(dir, 'body.txt'), 'Dear {{name}},\nnews.\n');
    await writeFile(join(dir, 'body.html'), '<p>Dear {{name}}</p>\n');
    const args = ['templates', 'create', '--user', String(u.id), '--name', 'news', '--subject-file', join(dir, 'subject.txt')];
    const created = await run([...args, '--text-file', join(dir, 'body.txt'), '--html-file', join(dir, 'body.html')]);
    expect(created).toMatchObject({ code: 0, err: '' });
    const id = Number(/^template #(\d+) news for user #\d+: "Hello \{\{name\}\}" \(text \+ html\)\n$/.exec(created.out)![1]);
    expect(await engine.templates.get(u.id, id)).toMatchObject({
      subject: 'Hello {{name}}',
      text: 'Dear {{name}},\nnews.\n',
      html: '<p>Dear {{name}}</p>\n',
    });
    const listed = await run(['templates', 'list', '--user', String(u.id)]);
    expect(listed.out).toMatch(new RegExp(`\\n\\s*${id}\\s+news\\s+Hello \\{\\{name\\}\\}\\s+text\\+html\\n$`));
    expect(JSON.parse((await run(['templates', 'list', '--user', String(u.id), '--json'])).out)).toEqual([
      expect.objectContaining({ id, name: 'news', subject: 'Hello {{name}}' }),
    ]);
    const missing = await run([...args, '--text-file', join(dir, 'none.txt')]);
    expect(missing).toMatchObject({ code: 1, err: expect.stringMatching(/^fairsend: cannot read .*none\.txt: ENOENT\n$/) });
    const both = await run([...args, '--subject', 'x', '--text-file', join(dir, 'body.txt')]);
    expect(both).toMatchObject({ code: 1, err: 'fairsend: subject: give either --subject or --subject-file\n' });
    expect((await engine.templates.list(u.id)).length).toBe(1);
  });

  it('prints --json for services, scheduler status and jobs', async () => {
    const services = JSON.parse((await run(['services', 'list', '--json'])).out) as { name: string; quota: { remainingQuota: number } }[];
    expect(services.find((x) => x.name === 'relay-eu')).toMatchObject({ sendingRate: 0.5, quota: { remainingQuota: 960 } });
    const status = JSON.parse((await run(['scheduler', 'status', '--json'])).out) as { queuedSubtasks: number; services: unknown[] };
    expect(status).toMatchObject({ instances: [], queuedSubtasks: expect.any(Number) });
    expect(status.services.length).toBeGreaterThanOrEqual(2);
    const stdout = new Sink();
    const stderr = new Sink();
    const code = await runCli(['node', 'fairsend', 'jobs', 'list', '--json'], {
      stdout,
      stderr,
      env: { DATABASE_URL: url, LOG_LEVEL: 'silent', FAIRSEND_SECRET_KEY: TEST_SECRET_KEY },
      jobs: () => ({
        list: () => [{ name: 'analyze_tables', paused: false }],
        pause: () => undefined,
        resume: () => undefined,
        runNow: async () => undefined,
      }),
    });
    expect({ code, err: stderr.text }).toEqual({ code: 0, err: '' });
    expect(JSON.parse(stdout.text)).toEqual([{ name: 'analyze_tables', paused: false }]);
  });

  it('reports an unreachable database in one line', async () => {
    const { code, err } = await run(['services', 'list'], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    expect(code).toBe(1);
    expect(err.split('\n')).toHaveLength(2);
    expect(err).toMatch(/^fairsend: .*(ECONNREFUSED|connect)/);
  });
});
