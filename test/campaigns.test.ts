import { ErrorCodes, FairsendError, QuotaExceededError, ValidationError } from '../services/kernel/errors.js';
import type { Engine } from '../src/engine.js';
import { createTestEngine, rows } from './helpers/db.js';

/** Expects `p` to reject with a FairsendError of `code` whose issues name `path`. */
async function expectIssue(p: Promise<unknown>, path: string, message?: RegExp, code: string = ErrorCodes.VALIDATION) {
  const err = await p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FairsendError);
  expect((err as FairsendError).code).toBe(code);
  const issues = (err as ValidationError).issues ?? [];
  const hit = issues.find((i) => i.path === path);
  if (!hit) throw new Error(`no issue at path ${path}: ${JSON.stringify(issues)}`);
  if (message) expect(hit.message).toMatch(message);
}

describe('campaign creation', () => {
  let engine: Engine;
  let alice: number;
  let bob: number;
  let tplA: number;
  let tplB: number;
  const ids: Record<string, number> = {};

  beforeAll(async () => {
    engine = await createTestEngine();
    alice = (await engine.users.create({ name: 'Alice', email: 'alice@example.test', quota: 1000 })).id;
    bob = (await engine.users.create({ name: 'Bob', email: 'bob@example.test', quota: 1000 })).id;
    const r = await engine.contacts.bulkCreate(alice, [
      { email: 'n1@example.test', name: 'N1', tags: ['newsletter'] },
      { email: 'n2@example.test', name: 'N2', tags: ['newsletter', 'vip'] },
      { email: 'n3@example.test', name: 'N3', tags: ['newsletter', 'churned'] },
      { email: 'p1@example.test', name: 'P1', tags: ['product'] },
      { email: 'x1@example.test', name: 'X1', tags: [] },
      { email: 'u1@example.test', name: 'U1', tags: ['newsletter'], status: 'unsubscribed' },
      { email: 'b1@example.test', name: 'B1', tags: ['newsletter'], status: 'bounced' },
    ]);
    ['n1', 'n2', 'n3', 'p1', 'x1', 'u1', 'b1'].forEach((k, i) => (ids[k] = r.ids[i]!));
    ids.bob1 = (await engine.contacts.bulkCreate(bob, [{ email: 'bob-reader@example.test', tags: ['newsletter'] }])).ids[0]!;
    tplA = (await engine.templates.create(alice, { name: 't', subject: 'Hi {{name}}', text: 'Hello {{name}} at {{email}}' })).id;
    tplB = (await engine.templates.create(bob, { name: 't', subject: 'Hi', text: 'Hello' })).id;
  });
  afterAll(() => engine.close());

  /** Creates a campaign for Alice, generates it, and returns the recipients' emails in queue order. */
  async function recipientsOf(input: Partial<Parameters<Engine['campaigns']['create']>[0]>): Promise<string[]> {
    const c = await engine.campaigns.create({ userId: alice, name: 'c', from: 'news@example.test', templates: [tplA], ...input });
    await engine.scheduler.processScheduledTasks();
    const r = await rows<{ email: string }>(engine.apiDb, 'SELECT email FROM subtasks WHERE task_id = $id ORDER BY contact_id', {
      id: c.id,
    });
    await engine.campaigns.cancel(c.id).catch(() => undefined);
    return r.map((x) => x.email.split('@')[0]!);
  }

  it('resolves tag rules: include only, exclude only, both, none; never unsubscribed or bounced', async () => {
    expect(await recipientsOf({ recipientRule: { type: 'tag_based', includeTags: ['newsletter'] } })).toEqual(['n1', 'n2', 'n3']);
    expect(await recipientsOf({ recipientRule: { type: 'tag_based', excludeTags: ['newsletter'] } })).toEqual(['p1', 'x1']);
    expect(
      await recipientsOf({ recipientRule: { type: 'tag_based', includeTags: ['newsletter', 'product'], excludeTags: ['churned'] } }),
    ).toEqual(['n1', 'n2', 'p1']);
    expect(await recipientsOf({ recipientRule: { type: 'tag_based' } })).toEqual(['n1', 'n2', 'n3', 'p1', 'x1']);
    expect(await recipientsOf({ recipientRule: { type: 'all' } })).toEqual(['n1', 'n2', 'n3', 'p1', 'x1']);
  });

  it('takes the union of explicit ids and the rule, once per address, ordered by contact id', async () => {
    const got = await recipientsOf({ contacts: [ids.x1!, ids.n2!, ids.x1!], recipientRule: { type: 'tag_based', includeTags: ['vip'] } });
    expect(got).toEqual(['n2', 'x1']);
    // Explicitly listed but unsubscribed: still not sent to.
    expect(await recipientsOf({ contacts: [ids.u1!, ids.p1!] })).toEqual(['p1']);
  });

  it('merges the same address imported twice (case-insensitive) into one contact', async () => {
    const r = await engine.contacts.bulkCreate(alice, [
      { email: 'Dup@Example.test', tags: ['dup'], attributes: { a: 1 } },
      { email: 'dup@example.TEST', attributes: { b: 2 } },
    ]);
    expect(r.ids[0]).toBe(r.ids[1]);
    expect(await recipientsOf({ recipientRule: { type: 'tag_based', includeTags: ['dup'] } })).toHaveLength(1);
    const [c] = await rows<{ attributes: unknown }>(engine.apiDb, 'SELECT attributes FROM contacts WHERE id = $id', { id: r.ids[0] });
    expect(c!.attributes).toEqual({ a: 1, b: 2 });
  });

  it("isolates users: another user's contacts or templates are refused, and rules never reach them", async () => {
    await expectIssue(
      engine.campaigns.create({ userId: alice, name: 'c', from: 'a@example.test', templates: [tplB], contacts: [ids.n1!] }),
      'templates[0]',
      /not found for user/,
    );
    await expectIssue(
      engine.campaigns.create({ userId: alice, name: 'c', from: 'a@example.test', templates: [tplA], contacts: [ids.n1!, ids.bob1!] }),
      'contacts',
      new RegExp(`not found for user ${alice}: ${ids.bob1}`),
    );
    const all = await recipientsOf({ recipientRule: { type: 'tag_based', includeTags: ['newsletter'] } });
    expect(all).not.toContain('bob-reader');
  });

  it('refuses a campaign larger than the user credit, says both numbers, and writes nothing', async () => {
    const carol = (await engine.users.create({ name: 'Carol', email: 'carol@example.test', quota: 2 })).id;
    await engine.contacts.bulkCreate(carol, [{ email: 'c1@example.test' }, { email: 'c2@example.test' }, { email: 'c3@example.test' }]);
    const tpl = (await engine.templates.create(carol, { name: 't', subject: 's', text: 't' })).id;
    const before = await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM tasks');
    const err = await engine.campaigns
      .create({ userId: carol, name: 'too big', from: 'c@example.test', templates: [tpl], recipientRule: { type: 'all' } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QuotaExceededError);
    expect((err as QuotaExceededError).code).toBe('QUOTA_EXCEEDED');
    expect((err as QuotaExceededError).message).toBe('user quota exceeded: campaign needs 3 sends, user has 2 remaining');
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM tasks')).toEqual(before);
    expect((await engine.users.get(carol)).remainingQuota).toBe(2);
  });

  it('lets exactly one of two concurrent creations through when together they exceed the credit', async () => {
    const dave = (await engine.users.create({ name: 'Dave', email: 'dave@example.test', quota: 5 })).id;
    await engine.contacts.bulkCreate(
      dave,
      [1, 2, 3].map((i) => ({ email: `d${i}@example.test` })),
    );
    const tpl = (await engine.templates.create(dave, { name: 't', subject: 's', text: 't' })).id;
    const create = () =>
      engine.campaigns.create({ userId: dave, name: 'race', from: 'd@example.test', templates: [tpl], recipientRule: { type: 'all' } });
    const results = await Promise.allSettled([create(), create(), create(), create()]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results.filter((r) => r.status === 'rejected'))
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(QuotaExceededError);
    expect((await engine.users.get(dave)).remainingQuota).toBe(2);
    expect(await rows(engine.apiDb, 'SELECT count(*)::int AS n FROM tasks WHERE created_by = $u', { u: dave })).toEqual([{ n: 1 }]);
  });

  it('chooses among several templates deterministically by contact id, the same on every run', async () => {
    const t2 = (await engine.templates.create(alice, { name: 't2', subject: 'Other', text: 'x' })).id;
    const t3 = (await engine.templates.create(alice, { name: 't3', subject: 'Third', text: 'x' })).id;
    const run = async () => {
      const c = await engine.campaigns.create({
        userId: alice,
        name: 'multi',
        from: 'a@example.test',
        templates: [tplA, t2, t3],
        recipientRule: { type: 'all' },
      });
      await engine.scheduler.processScheduledTasks();
      const r = await rows<{ contact_id: string; template_id: number }>(
        engine.apiDb,
        'SELECT contact_id, template_id FROM subtasks WHERE task_id = $id ORDER BY contact_id',
        { id: c.id },
      );
      await engine.campaigns.cancel(c.id);
      return r.map((x) => [Number(x.contact_id), x.template_id]);
    };
    const first = await run();
    expect(await run()).toEqual(first);
    for (const [contact, template] of first) expect(template).toBe([tplA, t2, t3][contact! % 3]);
    expect(new Set(first.map(([, t]) => t)).size).toBeGreaterThan(1);
  });

  it('checks template variables against the recipients, and accepts fallbacks', async () => {
    await engine.contacts.bulkCreate(alice, [
      { email: 'city1@example.test', tags: ['city'], attributes: { city: 'Paris' } },
      { email: 'city2@example.test', tags: ['city'] },
    ]);
    const tCity = (await engine.templates.create(alice, { name: 'city', subject: 'News for {{city}}', text: 'x' })).id;
    await expectIssue(
      engine.campaigns.create({
        userId: alice,
        name: 'c',
        from: 'a@example.test',
        templates: [tCity],
        recipientRule: { type: 'tag_based', includeTags: ['city'] },
      }),
      'templates',
      /\{\{ city \}\} is printed without a default, and 1 of 2 recipients have no "city" attribute \(e\.g\. city2@example\.test\)/,
      ErrorCodes.TEMPLATE_VARIABLE,
    );
    const tFallback = (await engine.templates.create(alice, { name: 'city', subject: 'News for {{ city | you }}', text: '{{name}}' })).id;
    const ok = await engine.campaigns.create({
      userId: alice,
      name: 'c',
      from: 'a@example.test',
      templates: [tFallback],
      recipientRule: { type: 'tag_based', includeTags: ['city'] },
    });
    expect(ok.recipients).toBe(2);
    await engine.campaigns.cancel(ok.id);
  });

  it('refuses CR or LF in subjects, names and sender (header injection)', async () => {
    await expectIssue(
      engine.templates.create(alice, { name: 't', subject: 'Hi\r\nBcc: victim@example.test', text: 'x' }),
      'subject',
      /CR or LF/,
    );
    await expectIssue(
      engine.campaigns.create({
        userId: alice,
        name: 'c',
        from: { address: 'a@example.test', name: 'Evil\nBcc: x@y.z' },
        templates: [tplA],
        contacts: [ids.n1!],
      }),
      'from.name',
      /CR or LF/,
    );
    await expectIssue(
      engine.campaigns.create({ userId: alice, name: 'c', from: 'a@example.test\r\nBcc: x@y.z', templates: [tplA], contacts: [ids.n1!] }),
      'from',
    );
    await expectIssue(
      engine.contacts.bulkCreate(alice, [{ email: 'ok@example.test', name: 'Line\nBreak' }]),
      'contacts[0].name',
      /CR or LF/,
    );
  });

  it('refuses an empty recipient set with its own code', async () => {
    await expectIssue(
      engine.campaigns.create({
        userId: alice,
        name: 'c',
        from: 'a@example.test',
        templates: [tplA],
        recipientRule: { type: 'tag_based', includeTags: ['nobody'] },
      }),
      'recipientRule',
      /empty/,
      ErrorCodes.EMPTY_RECIPIENTS,
    );
    await expectIssue(
      engine.campaigns.create({ userId: alice, name: 'c', from: 'a@example.test', templates: [tplA] }),
      'contacts',
      /needs recipients/,
    );
  });

  it('names the path of a malformed recipient rule', async () => {
    const base = { userId: alice, name: 'c', from: 'a@example.test', templates: [tplA] };
    await expectIssue(
      engine.campaigns.create({ ...base, recipientRule: { type: 'tag_based', includeTags: ['ok', 7] } as never }),
      'recipientRule.includeTags[1]',
    );
    await expectIssue(engine.campaigns.create({ ...base, recipientRule: { type: 'everyone' } as never }), 'recipientRule.type');
    await expectIssue(
      engine.campaigns.create({ ...base, recipientRule: { type: 'tag_based', include_tags: ['x'] } as never }),
      'recipientRule',
    );
  });

  it('refuses unknown ids, bad dates and unknown time zones, naming the field', async () => {
    const base = { name: 'c', from: 'a@example.test', templates: [tplA], contacts: [ids.n1!] };
    await expectIssue(engine.campaigns.create({ ...base, userId: 999999 }), 'userId', /not found/);
    await expectIssue(engine.campaigns.create({ ...base, userId: alice, templates: [424242] }), 'templates[0]', /not found/);
    await expectIssue(engine.campaigns.create({ ...base, userId: alice, contacts: [-1] }), 'contacts[0]', /positive/);
    await expectIssue(engine.campaigns.create({ ...base, userId: alice, scheduledAt: 'next tuesday' }), 'scheduledAt', /ISO 8601/);
    await expectIssue(engine.campaigns.create({ ...base, userId: alice, timezone: 'Europe/Atlantis' }), 'timezone', /IANA/);
    await expectIssue(engine.users.create({ name: 'Z', email: 'z@example.test', quota: 1, timezone: 'Nowhere/Land' }), 'timezone', /IANA/);
  });

  it('interprets a zone-less scheduledAt in the campaign time zone and generates only when due', async () => {
    const c = await engine.campaigns.create({
      userId: alice,
      name: 'later',
      from: 'a@example.test',
      templates: [tplA],
      contacts: [ids.n1!],
      timezone: 'Asia/Tokyo',
      scheduledAt: '2099-01-01T09:00',
    });
    expect(c.scheduledAt.toISOString()).toBe('2099-01-01T00:00:00.000Z');
    expect(await engine.scheduler.processScheduledTasks()).toEqual([]);
    expect((await engine.campaigns.progress(c.id)).status).toBe('scheduled');
    await engine.campaigns.cancel(c.id);
  });

  it('pauses, resumes and cancels with refunds; a cancelled campaign cannot resume', async () => {
    const before = (await engine.users.get(alice)).remainingQuota;
    const c = await engine.campaigns.create({
      userId: alice,
      name: 'p',
      from: 'a@example.test',
      templates: [tplA],
      recipientRule: { type: 'tag_based', includeTags: ['newsletter'] },
    });
    expect((await engine.users.get(alice)).remainingQuota).toBe(before - 3);
    await engine.scheduler.processScheduledTasks();
    expect(await engine.campaigns.progress(c.id)).toMatchObject({ status: 'sending', total: 3, queued: 3, sent: 0 });
    await engine.campaigns.pause(c.id);
    expect((await engine.campaigns.progress(c.id)).status).toBe('paused');
    await expect(engine.campaigns.pause(c.id)).rejects.toMatchObject({ code: 'CONFLICT' });
    await engine.campaigns.resume(c.id);
    expect((await engine.campaigns.progress(c.id)).status).toBe('sending');
    // One message went out before the cancel: only the two unsent are refunded.
    await engine.apiDb.query(
      `UPDATE subtasks SET status = 'sent', sent_at = now() WHERE task_id = $id AND contact_id = (SELECT min(contact_id) FROM subtasks WHERE task_id = $id)`,
      {
        bind: { id: c.id },
      },
    );
    expect(await engine.campaigns.cancel(c.id)).toEqual({ refunded: 2 });
    expect(await engine.campaigns.progress(c.id)).toMatchObject({ status: 'cancelled', total: 3, queued: 0, sent: 1, cancelled: 2 });
    expect((await engine.users.get(alice)).remainingQuota).toBe(before - 1);
    await expect(engine.campaigns.resume(c.id)).rejects.toMatchObject({
      code: 'CONFLICT',
      message: `cannot resume campaign ${c.id}: it is cancelled`,
    });
    await expect(engine.campaigns.cancel(c.id)).rejects.toMatchObject({ code: 'CONFLICT' });
  });

  it('refunds the whole reservation when a campaign is cancelled before generation', async () => {
    const before = (await engine.users.get(alice)).remainingQuota;
    const c = await engine.campaigns.create({
      userId: alice,
      name: 'f',
      from: 'a@example.test',
      templates: [tplA],
      contacts: [ids.n1!, ids.n2!],
      scheduledAt: '2099-01-01T00:00:00Z',
    });
    expect(await engine.campaigns.cancel(c.id)).toEqual({ refunded: 2 });
    expect((await engine.users.get(alice)).remainingQuota).toBe(before);
    expect(await engine.campaigns.progress(c.id)).toMatchObject({ total: 2, queued: 0, cancelled: 2 });
  });
});
