/**
 * The provider stored on each subtask at generation, in SQL, with a fake MX lookup (these machines
 * have no DNS); and a service's deliverability settings, validated and stored. Real PostgreSQL.
 */
import type { Engine } from '../src/engine.js';
import type { MxLookup } from '../services/deliverability/providers.js';
import { ValidationError } from '../services/kernel/errors.js';
import { createTestDatabase, createTestEngine, rows } from './helpers/db.js';

const MX: Record<string, string[]> = {
  'acme.com': ['acme-com.mail.protection.outlook.com'],
  'startup.io': ['aspmx.l.google.com', 'alt1.aspmx.l.google.com'],
  'selfhosted.org': ['mx1.selfhosted.org'],
  'icloud-custom.net': ['mx01.mail.icloud.com'],
};

describe('provider at generation', () => {
  let engine: Engine;
  let user: number;
  let tpl: number;
  const calls: string[] = [];
  const lookup: MxLookup = async (domain) => {
    calls.push(domain);
    const hosts = MX[domain];
    if (!hosts) throw Object.assign(new Error(`queryMx ENOTFOUND ${domain}`), { code: 'ENOTFOUND' });
    return hosts;
  };

  beforeAll(async () => {
    engine = await createTestEngine({ databaseUrl: await createTestDatabase(), mxLookup: lookup });
    user = (await engine.users.create({ name: 'P', email: 'p@example.test', quota: 100_000 })).id;
    tpl = (await engine.templates.create(user, { name: 't', subject: 's', text: 'x' })).id;
  });
  afterAll(() => engine.close());

  it('resolves built-in domains in SQL, custom ones by MX before the INSERT, and stores each', async () => {
    const emails = [
      'a@gmail.com',
      'b@googlemail.com',
      'c@hotmail.co.uk',
      'd@outlook.com',
      'e@yahoo.fr',
      'f@aol.com',
      'g@icloud.com',
      'h@acme.com',
      'i@startup.io',
      'j@selfhosted.org',
      'k@unresolvable.xyz',
      'l@example.test',
      'm@icloud-custom.net',
      'n@ACME.com',
    ];
    await engine.contacts.bulkCreate(
      user,
      emails.map((email) => ({ email })),
    );
    const c = await engine.campaigns.create({
      userId: user,
      name: 'p',
      from: 'p@example.test',
      templates: [tpl],
      recipientRule: { type: 'all' },
    });
    const [r] = await engine.scheduler.processScheduledTasks();
    expect(r).toMatchObject({ taskId: c.id, generated: emails.length });
    const got = await rows<{ email: string; provider: string }>(engine.apiDb, 'SELECT email, provider FROM subtasks WHERE task_id = $t', {
      t: c.id,
    });
    const byEmail = Object.fromEntries(got.map((g) => [g.email.toLowerCase(), g.provider]));
    expect(byEmail).toEqual({
      'a@gmail.com': 'google',
      'b@googlemail.com': 'google',
      'c@hotmail.co.uk': 'microsoft',
      'd@outlook.com': 'microsoft',
      'e@yahoo.fr': 'yahoo',
      'f@aol.com': 'yahoo',
      'g@icloud.com': 'apple',
      'h@acme.com': 'microsoft',
      'i@startup.io': 'google',
      'j@selfhosted.org': 'other:selfhosted.org',
      'k@unresolvable.xyz': 'other:unresolvable.xyz',
      'l@example.test': 'other:example.test',
      'm@icloud-custom.net': 'apple',
      'n@acme.com': 'microsoft',
    });
    // Only custom domains were looked up, each once; reserved names never.
    expect([...calls].sort()).toEqual(['acme.com', 'icloud-custom.net', 'selfhosted.org', 'startup.io', 'unresolvable.xyz']);
    const stored = await rows<{ domain: string; provider: string; source: string }>(
      engine.apiDb,
      "SELECT domain, provider, source FROM mail_domains WHERE source <> 'builtin' ORDER BY domain",
    );
    const builtin = await rows<{ domain: string; provider: string }>(
      engine.apiDb,
      "SELECT domain, provider FROM mail_domains WHERE source = 'builtin' ORDER BY domain",
    );
    expect(builtin.map((b) => `${b.domain}=${b.provider}`)).toEqual([
      'aol.com=yahoo',
      'gmail.com=google',
      'googlemail.com=google',
      'hotmail.co.uk=microsoft',
      'icloud.com=apple',
      'outlook.com=microsoft',
      'yahoo.fr=yahoo',
    ]);
    expect(stored).toEqual([
      { domain: 'acme.com', provider: 'microsoft', source: 'mx' },
      { domain: 'example.test', provider: 'other:example.test', source: 'fallback' },
      { domain: 'icloud-custom.net', provider: 'apple', source: 'mx' },
      { domain: 'selfhosted.org', provider: 'other:selfhosted.org', source: 'mx' },
      { domain: 'startup.io', provider: 'google', source: 'mx' },
      { domain: 'unresolvable.xyz', provider: 'other:unresolvable.xyz', source: 'fallback' },
    ]);
    await engine.campaigns.cancel(c.id);

    // A second campaign asks nothing again: the answers are stored (and cached).
    calls.length = 0;
    await engine.apiDb.query('DELETE FROM mail_domains WHERE domain = $d', { bind: { d: 'startup.io' } });
    const c2 = await engine.campaigns.create({
      userId: user,
      name: 'p2',
      from: 'p@example.test',
      templates: [tpl],
      recipientRule: { type: 'all' },
    });
    await engine.scheduler.processScheduledTasks();
    expect(calls).toEqual([]); // startup.io came from the in-process cache, then was stored again
    const again = await rows<{ n: number }>(
      engine.apiDb,
      `SELECT count(*)::int AS n FROM subtasks WHERE task_id = $t AND provider = 'google'`,
      { t: c2.id },
    );
    expect(again[0]!.n).toBe(3);
    await engine.campaigns.cancel(c2.id);
  });

  it('stores a service deliverability settings, refuses bad ones naming the field, and writes nothing then', async () => {
    const settings = {
      providers: { google: { ratePerSecond: 2, hourly: 500 }, 'other:acme.com': { concurrency: 1 } },
      rules: [
        { name: 'acme-greylist', provider: 'other:acme.com', code: 451, pattern: 'greylist', scope: 'message', action: { type: 'retry' } },
      ],
      warmup: [{ start: '2026-12-01', caps: [50, 100, 500] }],
    } as const;
    const s = await engine.services.create({
      name: 'shaped',
      transport: { host: '127.0.0.1', port: 2525 },
      sendingRate: 0.1,
      dailyQuota: 1000,
      deliverability: settings as never,
    });
    expect(s.deliverability).toEqual({ ...settings, warmup: [{ start: '2026-12-01', zone: 'UTC', caps: [50, 100, 500] }] });
    expect((await engine.services.get(s.id)).deliverability?.providers?.google).toEqual({ ratePerSecond: 2, hourly: 500 });

    const bad = async (deliverability: unknown) => {
      try {
        await engine.services.update(s.id, { deliverability: deliverability as never });
      } catch (e) {
        expect(e).toBeInstanceOf(ValidationError);
        return (e as ValidationError).issues.map((i) => i.path);
      }
      throw new Error('accepted');
    };
    expect(await bad({ providers: { google: { hourly: 0 } } })).toEqual(['deliverability.providers.google.hourly']);
    expect(await bad({ warmup: [{ start: '2026-02-30', caps: [1] }] })).toEqual(['deliverability.warmup[0].start']);
    expect(await bad({ rules: [{ name: 'r', enhanced: '4.7', scope: 'provider', action: { type: 'retry' } }] })).toEqual([
      'deliverability.rules[0].enhanced',
    ]);
    expect((await engine.services.get(s.id)).deliverability?.providers?.google?.hourly).toBe(500);
    expect((await engine.services.update(s.id, { deliverability: null })).deliverability).toBeNull();
  });
});
