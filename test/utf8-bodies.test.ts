/**
 * Invalid UTF-8 in a body is a 400 naming the field (JSON) or the line (CSV, forms), and nothing is
 * written (issue 17): bytes that are not UTF-8 were decoded to U+FFFD and stored before.
 */
import { jsonPathAt, notUtf8Error } from '../src/http/json-body.js';
import { rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';

/** `text` as UTF-8 with `bad` bytes in place of the first `§`. */
const withBadBytes = (text: string, bad: number[] = [0xff]) => {
  const [a, b] = text.split('§') as [string, string];
  return Buffer.concat([Buffer.from(a, 'utf8'), Buffer.from(bad), Buffer.from(b, 'utf8')]);
};

describe('jsonPathAt / notUtf8Error (unit)', () => {
  const at = (json: string) => jsonPathAt(json.replace('§', '\ufffd'), json.indexOf('§'));
  it.each([
    ['{"contacts":[{"email":"a@x.io"},{"email":"b@x.io","name":"B§b"}]}', 'contacts[1].name'],
    ['[{"email":"a@x.io","tags":["x","y§"]}]', '[0].tags[1]'],
    ['{"subject":"s§","text":"t"}', 'subject'],
    ['{"a":{"b\\"q":{"c":"§"}}}', 'a["b\\"q"].c'],
    ['{"contacts":[{"attributes":{"k§":"v"}}]}', 'a key of contacts[0].attributes'],
    ['{"a":1}§', ''],
  ])('%s -> %j', (json, path) => {
    expect(at(json)).toBe(path);
  });

  it('names the JSON field with the byte and line; for text, the line', () => {
    const json = notUtf8Error(withBadBytes('{\n"a": "x",\n"b": "é§"}', [0xc3, 0x28]), 'json');
    expect(json.issues).toEqual([{ path: 'b', message: expect.stringMatching(/not valid UTF-8.*byte 20, line 3/) }]);
    const text = notUtf8Error(withBadBytes('email\na@x.io\nb§@x.io\n', [0xe2, 0x82]), 'text');
    expect(text.issues).toEqual([{ path: 'line 3', message: expect.stringContaining('not valid UTF-8') }]);
  });
});

describe('invalid UTF-8 over HTTP', () => {
  let f: HttpFixture;
  let user: { id: number; token: string };
  beforeAll(async () => {
    f = await httpFixture();
    user = await f.user('Utf');
  });
  afterAll(async () => f.close());

  const count = async (table: string) => (await rows<{ n: number }>(f.engine.apiDb, `SELECT count(*)::int AS n FROM ${table}`))[0]!.n;
  const json = { 'content-type': 'application/json' };
  const csv = { 'content-type': 'text/csv' };

  it.each([
    ['an overlong form', [0xc0, 0xaf]],
    ['a lone continuation byte', [0x80]],
    ['a surrogate', [0xed, 0xa0, 0x80]],
    ['0xff', [0xff]],
    ['a truncated sequence', [0xe2, 0x82]],
  ])('a JSON import with %s in a name: 400 naming contacts[1].name, nothing written', async (_what, bad) => {
    const body = withBadBytes('{"contacts":[{"email":"a@example.com"},{"email":"b@example.com","name":"B§ob"}]}', bad);
    const res = await f.call('POST', '/api/contacts', user.token, body, json);
    expect(res.statusCode).toBe(400);
    const err = res.json() as { error: { issues: { path: string; message: string }[] } };
    expect(err.error.issues).toEqual([{ path: 'contacts[1].name', message: expect.stringContaining('is not valid UTF-8') }]);
    expect(await count('contacts')).toBe(0);
  });

  it('a bare JSON array, a key, and another route (templates) are refused the same way', async () => {
    let res = await f.call('POST', '/api/contacts', user.token, withBadBytes('[{"email":"a@example.com","attributes":{"k§":"v"}}]'), json);
    expect(res.statusCode).toBe(400);
    expect(JSON.stringify(res.json())).toContain('a key of [0].attributes');
    res = await f.call('POST', '/api/templates', user.token, withBadBytes('{"name":"t","subject":"Hi §","text":"x"}'), json);
    expect(res.statusCode).toBe(400);
    expect((res.json() as { error: { issues: { path: string }[] } }).error.issues[0]!.path).toBe('subject');
    expect(await count('templates')).toBe(0);
    expect(await count('contacts')).toBe(0);
  });

  it('valid UTF-8 (and a real U+FFFD typed by the user) still imports', async () => {
    const res = await f.call(
      'POST',
      '/api/contacts',
      user.token,
      Buffer.from('[{"email":"ü@example.com","name":"Zoë \ufffd"}]', 'utf8'),
      json,
    );
    expect(res.statusCode).toBe(200);
    expect(await rows(f.engine.apiDb, 'SELECT email, name FROM contacts')).toEqual([{ email: 'ü@example.com', name: 'Zoë \ufffd' }]);
    await f.engine.apiDb.query('DELETE FROM contacts');
  });

  it('a CSV import with a bad byte on its third line: 400 naming line 3, nothing written (inline and background)', async () => {
    const body = withBadBytes('email,name\na@example.com,A\nb@example.com,B§\nc@example.com,C\n');
    const res = await f.call('POST', '/api/contacts', user.token, body, csv);
    expect(res.statusCode).toBe(400);
    expect((res.json() as { error: { issues: { path: string; message: string }[] } }).error.issues).toEqual([
      { path: 'line 3', message: expect.stringContaining('is not valid UTF-8') },
    ]);
    const bg = await f.call('POST', '/api/contacts?background=true', user.token, body, csv);
    expect(bg.statusCode).toBe(202);
    const id = (bg.json() as { import: { id: number } }).import.id;
    const deadline = Date.now() + 30_000;
    let job: { status: string; error?: { issues?: { path: string }[] } } = { status: 'running' };
    while (job.status === 'running' && Date.now() < deadline) {
      job = ((await f.call('GET', `/api/contacts/imports/${id}`, user.token)).json() as { import: typeof job }).import;
      if (job.status === 'running') await new Promise((r) => setTimeout(r, 50));
    }
    expect(job.status).toBe('failed');
    expect(JSON.stringify(job.error)).toContain('line 3');
    expect(await count('contacts')).toBe(0);
  });

  it('a suppression CSV with a bad byte: 400 naming the line, nothing written', async () => {
    const res = await f.call('POST', '/api/suppressions/import', user.token, withBadBytes('email\nx@example.com\ny§@example.com\n'), csv);
    expect(res.statusCode).toBe(400);
    expect(JSON.stringify(res.json())).toContain('line 3');
    expect(await count('suppressions')).toBe(0);
  });
});
