/**
 * Streaming and background contact imports (issue 17): CSV parsed as a stream and written in
 * batches in one transaction (all or nothing, issues naming row and field), background jobs with
 * polled progress over HTTP and the programmatic API, and the time zone cache.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { runCli } from '../src/cli/index.js';
import { ValidationError } from '../services/kernel/errors.js';
import { isKnownZone, knownZoneCacheSize } from '../services/timezones.js';
import { rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';

async function issuesOf(p: Promise<unknown>) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ValidationError);
  return (err as ValidationError).issues;
}

const csvOf = (n: number, row: (i: number) => string, header = 'email,timezone,city') =>
  header + '\n' + Array.from({ length: n }, (_, i) => row(i)).join('\n') + '\n';

describe('time zone cache', () => {
  it('accepts canonical names, aliases and any case; refuses the rest without growing past its bound', () => {
    for (const z of ['Europe/Paris', 'UTC', 'US/Eastern', 'Asia/Calcutta', 'Asia/Kolkata', 'europe/paris', 'Etc/GMT+5']) {
      expect([z, isKnownZone(z)]).toEqual([z, true]);
    }
    for (const z of ['', 'Moon/Base', 'Europe/Paris ', 'Europe/Paris\u0000', 'x'.repeat(65), 'Europe\\Paris', 42, null]) {
      expect([z, isKnownZone(z)]).toEqual([z, false]);
    }
    const before = knownZoneCacheSize();
    for (let i = 0; i < 3000; i++) isKnownZone(`Nowhere/Place${i}`);
    expect(knownZoneCacheSize()).toBeLessThanOrEqual(before + 1024);
  });
});

describe('contact imports', () => {
  let f: HttpFixture;
  let bob: { id: number; token: string };
  let eve: { id: number; token: string };
  beforeAll(async () => {
    f = await httpFixture();
    bob = await f.user('Bob');
    eve = await f.user('Eve');
  });
  afterAll(() => f.close());

  const count = async (userId: number) =>
    (await rows<{ n: number }>(f.engine.apiDb, 'SELECT count(*)::int AS n FROM contacts WHERE user_id = $u', { u: userId }))[0]!.n;

  it('imports a CSV stream in batches, in one transaction: ids in row order, repeats across batches merged', async () => {
    // 2,500 rows cross two batch boundaries; row 2,300 repeats row 10 in another case.
    const csv = csvOf(2500, (i) => (i === 2299 ? `S9@Stream.test,Asia/Tokyo,Kyoto` : `s${i}@stream.test,Europe/Paris,Lyon`));
    const chunks = Readable.from(
      Array.from({ length: Math.ceil(csv.length / 1000) }, (_, i) => Buffer.from(csv.slice(i * 1000, i * 1000 + 1000))),
    );
    const progress: number[] = [];
    const r = await f.engine.contacts.importCsv(bob.id, chunks, { onProgress: (p) => progress.push(p.rows) });
    expect(r).toMatchObject({ created: 2499, updated: 0 });
    expect(r.ids).toHaveLength(2500);
    expect(r.ids[2299]).toBe(r.ids[9]);
    expect(progress).toEqual([500, 1000, 1500, 2000, 2500, 2500]); // one call per batch of BATCH (500) rows, then the end
    const [c] = await rows(f.engine.apiDb, 'SELECT email, timezone, attributes FROM contacts WHERE id = $id', { id: r.ids[9] });
    expect(c).toEqual({ email: 's9@stream.test', timezone: 'Asia/Tokyo', attributes: { city: 'Kyoto' } });
  });

  it('writes nothing when a row past the first batches is bad, and names every bad row and field', async () => {
    const before = await count(eve.id);
    const csv = csvOf(3000, (i) => (i === 1500 ? 'broken,UTC,' : i === 2800 ? `ok${i}@x.test,Moon/Base,` : `ok${i}@x.test,UTC,`));
    const issues = await issuesOf(f.engine.contacts.importCsv(eve.id, csv));
    expect(issues).toEqual([
      { path: 'row 1502.email', message: 'is not a valid email address' },
      { path: 'row 2802.timezone', message: 'is not a known IANA time zone' },
    ]);
    expect(await count(eve.id)).toBe(before);
  });

  it('runs a large HTTP import in the background: 202, Location, progress polled, result; others see 404', async () => {
    const csv = csvOf(12_000, (i) => `bg${i}@bg.test,America/New_York,${'c'.repeat(80)}`);
    expect(csv.length).toBeGreaterThan(1024 * 1024);
    const res = await f.call('POST', '/api/contacts', bob.token, csv, { 'content-type': 'text/csv' });
    expect(res.statusCode).toBe(202);
    const job = res.json<{ import: { id: number; status: string; bytes_total: number; format: string } }>().import;
    expect(job).toMatchObject({ status: 'running', bytes_total: Buffer.byteLength(csv), format: 'csv' });
    expect(res.headers.location).toBe(`/api/contacts/imports/${job.id}`);
    expect((await f.call('GET', `/api/contacts/imports/${job.id}`, eve.token)).statusCode).toBe(404);
    await f.engine.contacts.waitForImport(job.id);
    const done = await f.call('GET', `/api/contacts/imports/${job.id}`, bob.token);
    expect(done.statusCode).toBe(200);
    expect(done.json<{ import: unknown }>().import).toMatchObject({
      status: 'completed',
      rows_read: 12_000,
      bytes_read: Buffer.byteLength(csv),
      percent: 100,
      result: { created: 12_000, updated: 0 },
      error: null,
    });
    expect((await f.call('GET', `/api/contacts/imports/${job.id}`, f.adminToken)).statusCode).toBe(200);
  });

  it('reports a failed background import with its issues, having written nothing', async () => {
    const before = await count(eve.id);
    const csv = csvOf(50, (i) => (i === 40 ? 'nope,UTC,' : `f${i}@fail.test,UTC,`));
    const res = await f.call('POST', '/api/contacts?background=true', eve.token, csv, { 'content-type': 'text/csv' });
    expect(res.statusCode).toBe(202);
    const { id } = res.json<{ import: { id: number } }>().import;
    await f.engine.contacts.waitForImport(id);
    const view = await f.engine.contacts.getImport(id, { userId: eve.id });
    expect(view).toMatchObject({
      status: 'failed',
      result: null,
      error: { code: 'VALIDATION', issues: [{ path: 'row 42.email', message: 'is not a valid email address' }] },
    });
    expect(await count(eve.id)).toBe(before);
  });

  it('runs programmatic background imports of rows, and shows an import whose process died as interrupted', async () => {
    const job = await f.engine.contacts.startImport(bob.id, {
      contacts: Array.from({ length: 1500 }, (_, i) => ({ email: `p${i}@prog.test` })),
    });
    expect(job).toMatchObject({ status: 'running', format: 'json', rowsTotal: 1500 });
    await f.engine.contacts.waitForImport(job.id);
    expect(await f.engine.contacts.getImport(job.id)).toMatchObject({ status: 'completed', rowsRead: 1500, result: { created: 1500 } });
    await expect(f.engine.contacts.getImport(job.id, { userId: eve.id })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    // A running row nobody has refreshed for over a minute: its process is gone.
    await f.engine.apiDb.query(
      `INSERT INTO contact_imports (id, user_id, format, status, updated_at) VALUES (999999, $u, 'csv', 'running', now() - interval '2 minutes')`,
      { bind: { u: bob.id } },
    );
    expect(await f.engine.contacts.getImport(999999)).toMatchObject({ status: 'failed', error: { code: 'IMPORT_INTERRUPTED' } });
  });

  it('fairsend contacts import FILE: a progress bar, then the result; a bad file exits 1 naming its row', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fairsend-import-'));
    const run = async (args: string[]) => {
      let out = '';
      let err = '';
      const sink = (add: (s: string) => void) =>
        new Writable({
          write(chunk: Buffer, _enc, cb) {
            add(chunk.toString('utf8'));
            cb();
          },
        });
      const code = await runCli(['node', 'fairsend', 'contacts', 'import', ...args], {
        stdout: sink((s) => (out += s)),
        stderr: sink((s) => (err += s)),
        env: { DATABASE_URL: f.engine.databaseUrl, LOG_LEVEL: 'silent' },
      });
      return { code, out, err };
    };
    const csv = join(dir, 'people.csv');
    await writeFile(
      csv,
      csvOf(3000, (i) => `cli${i}@cli.test,UTC,Paris`),
    );
    const ok = await run([csv, '--user', String(eve.id), '--interval', '50']);
    expect(ok).toMatchObject({ code: 0, err: '' });
    expect(ok.out).toMatch(/\d+% \| \d+ rows, \d+\/\d+ bytes/);
    expect(ok.out).toMatch(/import #\d+: 3000 rows, 3000 created, 0 updated\n$/);
    const json = join(dir, 'people.json');
    await writeFile(json, JSON.stringify({ contacts: [{ email: 'cli0@cli.test', status: 'unsubscribed' }, { email: 'new@cli.test' }] }));
    expect((await run([json, '--user', String(eve.id)])).out).toMatch(/2 rows, 1 created, 1 updated/);
    const bad = join(dir, 'bad.csv');
    await writeFile(bad, 'email,timezone\nfine@cli.test,UTC\nbroken,UTC\n');
    const failed = await run([bad, '--user', String(eve.id)]);
    expect(failed.code).toBe(1);
    expect(failed.err).toBe('fairsend: row 3.email: is not a valid email address\n');
    expect(await count(eve.id)).toBe(3001);
  });
});
