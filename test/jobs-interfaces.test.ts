import { runCli } from '../src/cli/index.js';
import { createHttpServer } from '../src/http/server.js';
import { createToken } from '../services/auth.js';
import type { Engine } from '../src/engine.js';
import { createTestEngine } from './helpers/db.js';
import { LogSink } from './helpers/http.js';

/** The real maintenance jobs, steered through all three interfaces: code, HTTP, CLI. */
describe('maintenance jobs through the programmatic API, HTTP and the CLI', () => {
  let engine: Engine;
  let server: Awaited<ReturnType<typeof createHttpServer>>;
  let address: string;
  let token: string;
  beforeAll(async () => {
    engine = await createTestEngine();
    const admin = await engine.users.create({ name: 'Ops', email: 'ops@example.test', quota: 0, role: 'admin' });
    token = await createToken(engine, admin.id);
    server = await createHttpServer(engine, { port: 0, host: '127.0.0.1' });
    address = await server.listen();
  });
  afterAll(async () => {
    await server.close();
    await engine.close();
  });

  const job = (name: string) => engine.jobs.list().find((j) => j.name === name)!;
  const http = (method: string, path: string) => fetch(`${address}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
  const cli = async (...args: string[]) => {
    const out = new LogSink();
    const err = new LogSink();
    const code = await runCli(['node', 'fairsend', ...args, '--url', address, '--token', token], {
      stdout: out,
      stderr: err,
      env: { LOG_LEVEL: 'silent' },
    });
    return { code, out: out.text, err: err.text };
  };

  it('pauses, resumes and runs a job in code', async () => {
    engine.jobs.pause('index_report');
    expect(job('index_report').paused).toBe(true);
    engine.jobs.resume('index_report');
    expect(job('index_report').paused).toBe(false);
    const run = await engine.jobs.runNow('index_report');
    expect(run.outcome).toBe('success');
    expect(job('index_report').lastOutcome).toBe('success');
  });

  it('pauses, resumes and runs a job over HTTP', async () => {
    expect((await http('POST', '/api/jobs/analyze_tables/pause')).status).toBe(200);
    expect(job('analyze_tables').paused).toBe(true);
    expect((await http('POST', '/api/jobs/analyze_tables/resume')).status).toBe(200);
    expect(job('analyze_tables').paused).toBe(false);
    const runs = job('analyze_tables').runs;
    expect((await http('POST', '/api/jobs/analyze_tables/run')).status).toBe(200);
    expect(job('analyze_tables').runs).toBe(runs + 1);
    expect(job('analyze_tables').lastOutcome).toBe('success');
  });

  it('pauses, resumes and runs a job from the CLI', async () => {
    expect(await cli('jobs', 'pause', 'check_table_bloat')).toMatchObject({ code: 0, err: '' });
    expect(job('check_table_bloat').paused).toBe(true);
    expect(await cli('jobs', 'resume', 'check_table_bloat')).toMatchObject({ code: 0, err: '' });
    expect(job('check_table_bloat').paused).toBe(false);
    const runs = job('check_table_bloat').runs;
    expect((await cli('jobs', 'run', 'check_table_bloat')).code).toBe(0);
    expect(job('check_table_bloat').runs).toBe(runs + 1);
    const unknown = await cli('jobs', 'pause', 'no_such_job');
    expect(unknown.code).not.toBe(0);
    expect(unknown.err).toMatch(/^fairsend: .*no_such_job/);
  });
});
