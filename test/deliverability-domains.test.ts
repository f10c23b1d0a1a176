/**
 * Which recipient domains generation looks up (services/deliverability/domains.ts): only the
 * campaign's, only those without a fresh stored answer, found on the stored contacts.domain column
 * by a walk of the user's distinct domains, and the same set when the walk is capped and the
 * campaign's recipients are scanned instead. Real PostgreSQL, a fake MX lookup.
 */
import type { Engine } from '../src/engine.js';
import { staleDomains } from '../services/deliverability/domains.js';
import { recipientPredicate } from '../services/recipients.js';
import type { MxLookup } from '../services/deliverability/providers.js';
import { createTestDatabase, createTestEngine, rows } from './helpers/db.js';

describe('recipient domains at generation', () => {
  let engine: Engine;
  let user: number;
  let other: number;
  let tpl: number;
  const calls: string[] = [];
  const lookup: MxLookup = async (domain) => {
    calls.push(domain);
    return domain.startsWith('g-') ? ['aspmx.l.google.com'] : ['mx.' + domain];
  };

  beforeAll(async () => {
    engine = await createTestEngine({ databaseUrl: await createTestDatabase(), mxLookup: lookup });
    user = (await engine.users.create({ name: 'D', email: 'd@example.test', quota: 100_000 })).id;
    other = (await engine.users.create({ name: 'O', email: 'o@example.test', quota: 100_000 })).id;
    tpl = (await engine.templates.create(user, { name: 't', subject: 's', text: 'x' })).id;
    await engine.contacts.bulkCreate(user, [
      { email: 'a1@g-alpha.com', tags: ['news'] },
      { email: 'a2@G-Alpha.com', tags: ['news'] },
      { email: 'b1@beta.org', tags: ['news'] },
      { email: 'c1@gamma.net', tags: ['other'] },
      { email: 'd1@delta.io', tags: ['news', 'churned'] },
      { email: 'e1@gmail.com', tags: ['news'] },
    ]);
    // Another user's contact at a domain of no campaign here: never looked up for this user.
    await engine.contacts.bulkCreate(other, [{ email: 'z@zeta.com', tags: ['news'] }]);
  });
  afterAll(() => engine.close());

  const campaign = (name: string) =>
    engine.campaigns.create({
      userId: user,
      name,
      from: 'd@example.test',
      templates: [tpl],
      recipientRule: { type: 'tag_based', includeTags: ['news'], excludeTags: ['churned'] },
    });

  it('stores each contact domain, lower-cased, and follows a changed address', async () => {
    const got = await rows<{ email: string; domain: string }>(
      engine.apiDb,
      'SELECT email, domain FROM contacts WHERE user_id = $u ORDER BY id',
      {
        u: user,
      },
    );
    expect(got.map((g) => g.domain)).toEqual(['g-alpha.com', 'g-alpha.com', 'beta.org', 'gamma.net', 'delta.io', 'gmail.com']);
    await engine.apiDb.query(`UPDATE contacts SET email = 'c1@Gamma2.NET' WHERE user_id = $u AND email = 'c1@gamma.net'`, {
      bind: { u: user },
    });
    const [c] = await rows<{ domain: string }>(engine.apiDb, `SELECT domain FROM contacts WHERE user_id = $u AND email = 'c1@Gamma2.NET'`, {
      u: user,
    });
    expect(c!.domain).toBe('gamma2.net');
  });

  it("looks up only the campaign's domains without a fresh answer, and writes each subtask's provider", async () => {
    calls.length = 0;
    const c = await campaign('first');
    const [r] = await engine.scheduler.processScheduledTasks();
    expect(r).toMatchObject({ taskId: c.id, generated: 4 });
    // gamma2.net (tag other), delta.io (excluded tag) and zeta.com (another user) are not the campaign's.
    expect([...calls].sort()).toEqual(['beta.org', 'g-alpha.com']);
    const got = await rows<{ email: string; provider: string }>(
      engine.apiDb,
      'SELECT email, provider FROM subtasks WHERE task_id = $t ORDER BY contact_id',
      { t: c.id },
    );
    expect(got).toEqual([
      { email: 'a1@g-alpha.com', provider: 'google' },
      { email: 'a2@g-alpha.com', provider: 'google' }, // the address is stored canonical: lower-case domain
      { email: 'b1@beta.org', provider: 'other:beta.org' },
      { email: 'e1@gmail.com', provider: 'google' },
    ]);
    await engine.campaigns.cancel(c.id);
  });

  it('asks again only for a domain whose stored answer has aged (a failed lookup after an hour, an answer after 30 days)', async () => {
    const where = recipientPredicate({
      userId: user,
      contacts: [],
      rule: { type: 'tag_based', include_tags: ['news'], exclude_tags: ['churned'] },
    });
    const stale = (limit?: number) => engine.schedulerDb.transaction((t) => staleDomains(engine.schedulerDb, user, where, t, limit));
    expect(await stale()).toEqual([]);
    await engine.apiDb.query(
      `UPDATE mail_domains SET source = 'fallback', resolved_at = now() - interval '2 hours' WHERE domain = 'beta.org';
       UPDATE mail_domains SET resolved_at = now() - interval '2 days' WHERE domain = 'g-alpha.com';
       UPDATE mail_domains SET resolved_at = now() - interval '31 days' WHERE domain = 'gmail.com';
       DELETE FROM mail_domains WHERE domain = 'delta.io'`,
    );
    expect((await stale()).sort()).toEqual(['beta.org', 'gmail.com']);
    // Capped walk (more distinct domains than the limit): one scan of the recipients, same answer.
    expect((await stale(1)).sort()).toEqual(['beta.org', 'gmail.com']);
    expect((await stale(2)).sort()).toEqual(['beta.org', 'gmail.com']);

    calls.length = 0;
    const c = await campaign('second');
    const [r] = await engine.scheduler.processScheduledTasks();
    expect(r).toMatchObject({ taskId: c.id, generated: 4 });
    expect(calls).toEqual([]); // beta.org from the resolver's cache; gmail.com is built in
    const stored = await rows<{ domain: string; fresh: boolean }>(
      engine.apiDb,
      `SELECT domain, resolved_at > now() - interval '1 minute' AS fresh FROM mail_domains WHERE domain IN ('beta.org', 'gmail.com') ORDER BY domain`,
    );
    expect(stored).toEqual([
      { domain: 'beta.org', fresh: true },
      { domain: 'gmail.com', fresh: true },
    ]);
    expect(await stale()).toEqual([]);
    await engine.campaigns.cancel(c.id);
  });
});
