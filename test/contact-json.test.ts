/**
 * Large JSON imports read contact by contact (services/contact-json.ts), never parsed whole: the
 * scanner as pure code (shapes, strings with brackets and escapes, every refusal naming its place),
 * then through HTTP above the background threshold (`streamJsonAbove`), where snake_case keys are
 * renamed per contact and nothing is written unless every contact is valid.
 */
import fc from 'fast-check';
import { jsonRows, SLICE_BYTES } from '../services/contact-json.js';
import { ValidationError } from '../services/kernel/errors.js';
import { rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';

async function read(body: string | Buffer) {
  const out: { at: PropertyKey[]; input: unknown }[] = [];
  for await (const r of jsonRows(Buffer.isBuffer(body) ? body : Buffer.from(body))) out.push(r);
  return out;
}

async function refusal(body: string | Buffer) {
  const err = await read(body).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ValidationError);
  return (err as ValidationError).issues;
}

describe('the JSON contact scanner', () => {
  it('reads the bare array and { "contacts": [...] }, each element as JSON.parse reads it', async () => {
    const contacts = [
      { email: 'a@x.test', name: 'A ] } , [ {', tags: ['t,1', '[x]'] },
      { email: 'b@x.test', attributes: { quote: 'say "hi" \\ there', nested: { deep: [1, { two: 2 }] }, u: 'é\u2028' } },
      { email: 'c@x.test', name: null },
    ];
    for (const body of [JSON.stringify(contacts), JSON.stringify({ contacts }, null, 2), `\ufeff  ${JSON.stringify({ contacts })}\n`]) {
      const got = await read(body);
      expect(got).toEqual(contacts.map((input, i) => ({ at: ['contacts', i], input })));
    }
  });

  it('agrees with JSON.parse on generated arrays', async () => {
    await fc.assert(
      fc.asyncProperty(
        // Keys that could reach a prototype are refused on purpose (see the next test).
        fc.array(
          fc.jsonValue().filter((v) => !/__proto__|constructor/.test(JSON.stringify(v))),
          { minLength: 1, maxLength: 8 },
        ),
        fc.boolean(),
        async (values, wrapped) => {
          const body = wrapped ? JSON.stringify({ contacts: values }) : JSON.stringify(values);
          const got = await read(body);
          const whole = JSON.parse(body) as unknown[] | { contacts: unknown[] };
          expect(got.map((r) => r.input)).toEqual(Array.isArray(whole) ? whole : whole.contacts);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('refuses what is not a contact import, naming the place', async () => {
    expect(await refusal('{"contacts": [{"email": "a@x.test"}], "extra": 1}')).toEqual([
      { path: 'body', message: 'holds a field besides "contacts"' },
    ]);
    expect(await refusal('{"people": []}')).toEqual([
      { path: 'people', message: 'is not a field of a contact import (expected "contacts")' },
    ]);
    expect(await refusal('{"contacts": {}}')).toEqual([{ path: 'contacts', message: 'must be an array of contacts' }]);
    expect(await refusal('[]')).toEqual([{ path: 'contacts', message: 'must hold at least one contact' }]);
    expect(await refusal('[{"email": "a@x.test"}, {"email": }]')).toEqual([
      { path: 'contacts[1]', message: expect.stringMatching(/^is not valid JSON/) },
    ]);
    expect(await refusal('[{"email": "a@x.test"}')).toEqual([
      { path: 'contacts[0]', message: 'is not valid JSON: the array is not closed' },
    ]);
    expect(await refusal('[{"email": "a@x.test"}] []')).toEqual([{ path: 'body', message: 'is not valid JSON: text after the end' }]);
    expect(await refusal('[{"email": "a@x.test", "__proto__": {"admin": true}}]')).toEqual([
      { path: 'contacts[0]', message: expect.stringMatching(/^is not valid JSON \(.*prototype/i) },
    ]);
    const badUtf8 = Buffer.concat([Buffer.from('[{"email": "a@x.test"}, {"name": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}]')]);
    expect(await refusal(badUtf8)).toEqual([{ path: 'contacts[1]', message: 'is not valid UTF-8' }]);
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
  });

  it('yields to the event loop between slices of a large body', async () => {
    const n = 20_000;
    const body = JSON.stringify(Array.from({ length: n }, (_, i) => ({ email: `u${i}@x.test`, name: `User number ${i}` })));
    expect(body.length).toBeGreaterThan(3 * SLICE_BYTES);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    let seen = 0;
    for await (const r of jsonRows(Buffer.from(body))) if (r.input) seen++;
    clearInterval(timer);
    expect(seen).toBe(n);
    // A whole parse would let no timer run until the end; here timers ran between slices.
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(body.length / SLICE_BYTES) - 1);
  });
});

describe('large JSON imports over HTTP', () => {
  let f: HttpFixture;
  let bob: { id: number; token: string };
  beforeAll(async () => {
    // A small threshold: every body above 2 KiB takes the contact-by-contact path.
    f = await httpFixture({ http: { backgroundImportBytes: 2048 } });
    bob = await f.user('Bob');
  });
  afterAll(() => f.close());

  const count = async () =>
    (await rows<{ n: number }>(f.engine.apiDb, 'SELECT count(*)::int AS n FROM contacts WHERE user_id = $u', { u: bob.id }))[0]!.n;
  const bigBody = (n: number, row: (i: number) => object) => JSON.stringify({ contacts: Array.from({ length: n }, (_, i) => row(i)) });

  it('imports in the background, renaming snake_case keys per contact (attributes kept as written)', async () => {
    const body = bigBody(300, (i) => ({
      email: `j${i}@json.test`,
      name: `J ${i}`,
      attributes: { first_name: `F${i}` },
      timezone: 'Europe/Paris',
    }));
    expect(body.length).toBeGreaterThan(2048);
    const res = await f.call('POST', '/api/contacts', bob.token, body, { 'content-type': 'application/json' });
    expect(res.statusCode).toBe(202);
    const job = res.json<{ import: { id: number; format: string; bytes_total: number } }>().import;
    expect(job).toMatchObject({ format: 'json', bytes_total: Buffer.byteLength(body) });
    await f.engine.contacts.waitForImport(job.id);
    const done = await f.call('GET', `/api/contacts/imports/${job.id}`, bob.token);
    expect(done.json<{ import: unknown }>().import).toMatchObject({
      status: 'completed',
      rows_read: 300,
      bytes_read: Buffer.byteLength(body),
      result: { created: 300, updated: 0 },
    });
    const [c] = await rows(f.engine.apiDb, `SELECT name, timezone, attributes FROM contacts WHERE email = 'j7@json.test'`);
    expect(c).toEqual({ name: 'J 7', timezone: 'Europe/Paris', attributes: { first_name: 'F7' } });
  });

  it('inline with background=false; a bad contact or a key given twice names the contact, and nothing is written', async () => {
    const before = await count();
    const bad = bigBody(200, (i) => (i === 150 ? { email: 'not-an-address' } : { email: `k${i}@json.test` }));
    const res = await f.call('POST', '/api/contacts?background=false', bob.token, bad, { 'content-type': 'application/json' });
    expect(res.statusCode).toBe(400);
    expect(res.json<{ error: { issues: { path: string; message: string }[] } }>().error.issues).toEqual([
      { path: 'contacts[150].email', message: 'is not a valid email address' },
    ]);
    const twice = bigBody(200, (i) =>
      i === 3 ? { email: 'd@json.test', time_zone: 'UTC', timeZone: 'UTC' } : { email: `d${i}@json.test` },
    );
    const res2 = await f.call('POST', '/api/contacts?background=false', bob.token, twice, { 'content-type': 'application/json' });
    expect(res2.statusCode).toBe(400);
    expect(JSON.stringify(res2.json())).toMatch(/contacts\[3\]\.time_?[zZ]one.*given twice/);
    expect(await count()).toBe(before);
    const ok = await f.call(
      'POST',
      '/api/contacts?background=false',
      bob.token,
      bigBody(200, (i) => ({ email: `k${i}@json.test` })),
      { 'content-type': 'application/json' },
    );
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ created: 200 });
    expect(await count()).toBe(before + 200);
  });
});
