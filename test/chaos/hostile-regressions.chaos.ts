/**
 * Regressions of the bugs the hostile-input property tests found, one named case each, so a
 * failure says which bug came back without replaying a fast-check seed.
 */
import { ErrorCodes, FairsendError, ValidationError } from '../../services/kernel/errors.js';
import type { Engine } from '../../src/engine.js';
import { createTestEngine, rows } from '../helpers/db.js';
import { httpFixture } from '../helpers/http.js';
import { buildMessage, compileForSending, messageIdFor } from '../../services/delivery/message.js';

let engine: Engine;
beforeAll(async () => {
  engine = await createTestEngine();
});
afterAll(async () => {
  await engine?.close();
});

async function refusal(call: () => Promise<unknown>): Promise<ValidationError> {
  try {
    await call();
  } catch (err) {
    expect(err).toBeInstanceOf(FairsendError);
    return err as ValidationError;
  }
  throw new Error('expected a refusal, the call succeeded');
}

describe('NUL characters and unpaired surrogates are refused with a typed error naming the field', () => {
  // Before: a NUL in a template, user or service name was stored as the two characters "\0", an
  // unpaired surrogate as U+FFFD, and in contacts or recipient rules either failed with an untyped
  // DatabaseError ("unsupported Unicode escape sequence", "invalid byte sequence for encoding").
  it('in templates, users and services (were silently altered)', async () => {
    const user = await engine.users.create({ name: 'N', email: 'n@example.test', quota: 10 });
    const tpl = await refusal(() => engine.templates.create(user.id, { name: 'a\u0000b', subject: 's\uD800', text: 't' }));
    expect(tpl.code).toBe(ErrorCodes.VALIDATION);
    expect(tpl.issues.map((i) => i.path).sort()).toEqual(['name', 'subject']);
    expect((await refusal(() => engine.users.create({ name: 'x\u0000', email: 'u@example.test', quota: 1 }))).issues[0]!.path).toBe('name');
    const svc = await refusal(() =>
      engine.services.create({ name: 'x', transport: { host: 'h\u0000', port: 25 }, sendingRate: 1, dailyQuota: 1 }),
    );
    expect(svc.issues[0]!.path).toBe('transport.host');
    expect(await rows(engine.apiDb, 'SELECT (SELECT count(*) FROM templates)::int AS t, (SELECT count(*) FROM users)::int AS u')).toEqual([
      { t: 0, u: 1 },
    ]);
  });

  it('in contact imports, anywhere in a row, attribute keys included (was an untyped DatabaseError)', async () => {
    const user = await engine.users.create({ name: 'C', email: 'c@example.test', quota: 10 });
    const err = await refusal(() =>
      engine.contacts.bulkCreate(user.id, [
        { email: 'ok@example.org' },
        { email: 'a@example.org', tags: ['x\u0000'] },
        { email: 'b@example.org', attributes: { city: { deep: ['\uDC00'] } } },
        { email: 'c@example.org', attributes: { 'k\u0000': 1 } as Record<string, unknown> },
      ]),
    );
    expect(err.issues.map((i) => i.path)).toEqual([
      'contacts[1].tags[0]',
      'contacts[2].attributes.city.deep[0]',
      'contacts[3].attributes.k\u0000', // the attribute-name rule
      'contacts[3].attributes', // the unstorable key
    ]);
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM contacts')).toEqual([{ n: 0 }]);
  });

  it('in recipient rule tags (was an untyped DatabaseError)', async () => {
    const user = await engine.users.create({ name: 'R', email: 'r@example.test', quota: 10 });
    const tpl = await engine.templates.create(user.id, { name: 't', subject: 's', text: 't' });
    const err = await refusal(() =>
      engine.campaigns.create({
        userId: user.id,
        name: 'c',
        from: 'a@example.org',
        templates: [tpl.id],
        recipientRule: { type: 'tag_based', excludeTags: ['a\u0000b'] },
      }),
    );
    expect(err.issues.map((i) => i.path)).toEqual(['recipientRule.excludeTags[0]']);
  });

  it('over HTTP: a 400 naming the snake_case field, never a 201 with altered text', async () => {
    const f = await httpFixture();
    try {
      const res = await f.call('POST', '/api/templates', f.adminToken, '{"name":"a\\u0000","subject":"s","text":"t\\ud800"}', {
        'content-type': 'application/json',
      });
      expect(res.statusCode).toBe(400);
      expect(
        res
          .json<{ error: { issues: { path: string }[] } }>()
          .error.issues.map((i) => i.path)
          .sort(),
      ).toEqual(['name', 'text']);
      const csv = await f.call('POST', '/api/contacts', f.adminToken, 'email,name\na@example.org,ok\nb@example.org,"x\u0000"\n', {
        'content-type': 'text/csv',
      });
      expect(csv.statusCode).toBe(400);
      expect(csv.json<{ error: { issues: { path: string }[] } }>().error.issues.map((i) => i.path)).toEqual(['row 3.name']);
    } finally {
      await f.close();
    }
  });
});

describe('an internationalized sender domain', () => {
  // Before: the Message-ID carried the raw UTF-8 domain (<4.2@bücher.example>) while nodemailer
  // punycoded the From address: a non-ASCII header in a message that is otherwise plain RFC 5322.
  it('gives an ASCII (punycode) Message-ID, the same on every attempt', () => {
    expect(messageIdFor(4, 2, 'bücher.example')).toBe('<4.2@xn--bcher-kva.example>');
    expect(messageIdFor(4, 2, '例子.广告')).toBe('<4.2@xn--fsqu00a.xn--4rr70v>');
    expect(messageIdFor(4, 2, 'example.org')).toBe('<4.2@example.org>');
    const mail = buildMessage(
      compileForSending({ subject: 's', html: null, text: 't' }),
      { id: 4, fromAddress: 'news@bücher.example', fromName: null },
      { taskId: 4, contactId: 2, email: 'a@example.org', name: null, attributes: {} },
      {},
    );
    expect(mail.messageId).toBe('<4.2@xn--bcher-kva.example>');
  });
});

describe('a CSV header naming a column twice', () => {
  // Before: `email,email` imported only the second address and dropped the first without a word
  // (csv-parse keeps the last cell of a repeated column), likewise for tags, name or attributes.
  it('is refused with a 400 naming the column, and nothing is written', async () => {
    const f = await httpFixture();
    try {
      for (const csv of [
        'email,email\na@example.org,b@example.org\n',
        'email,city,city\na@example.org,Paris,Rome\n',
        'email, tags ,tags\na@example.org,x,y\n',
      ]) {
        const res = await f.call('POST', '/api/contacts', f.adminToken, csv, { 'content-type': 'text/csv' });
        expect([csv, res.statusCode]).toEqual([csv, 400]);
        expect(res.json<{ error: { issues: { path: string; message: string }[] } }>().error.issues[0]).toEqual({
          path: `row 1.${csv.includes('city') ? 'city' : csv.includes('tags') ? 'tags' : 'email'}`,
          message: 'names a column that the header row already has',
        });
      }
      expect(await rows(f.engine.apiDb, 'SELECT count(*)::int AS n FROM contacts')).toEqual([{ n: 0 }]);
    } finally {
      await f.close();
    }
  });
});

describe('a path the router refuses', () => {
  // Before: fastify answered these itself, before the error handler: 414 (not a documented status)
  // or 400, with its own body `{ error: "Bad Request", code: "FST_ERR_...", message }` echoing the URL.
  it('answers 400 with the API error shape, not echoing the URL', async () => {
    const f = await httpFixture();
    try {
      for (const url of [`/api/campaigns/${'L'.repeat(201)}`, `/api/campaigns/${'9'.repeat(300)}/pause`, '/api/campaigns/%E0%A4%A']) {
        const res = await f.call(url.endsWith('pause') ? 'POST' : 'GET', url, f.adminToken);
        expect([url, res.statusCode]).toEqual([url, 400]);
        const { error } = res.json<{ error: { code: string; message: string } }>();
        expect(error.code).toBe('BAD_REQUEST');
        expect(error.message).not.toContain('LLLL');
        expect(error.message).not.toContain('%E0');
      }
    } finally {
      await f.close();
    }
  });
});
