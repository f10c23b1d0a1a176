/**
 * A large campaign's queue written by COPY over a second connection (services/queue-copy.ts)
 * against the same campaign's queue written by INSERT ... SELECT: the same rows, column for column,
 * with a per-recipient send window, two templates, mailbox providers looked up at generation and
 * tags full of quotes, backslashes and `$names` (COPY takes its values as literals). A COPY that
 * fails half-way leaves nothing behind and the pool usable. Real PostgreSQL.
 */
import { DateTime } from 'luxon';
import type { Engine } from '../src/engine.js';
import type { MxLookup } from '../services/deliverability/providers.js';
import { createTestDatabase, createTestEngine, rows } from './helpers/db.js';

const HOSTILE = ["it's", 'back\\slash', '$rcptUserId', "'); DROP TABLE subtasks; --", 'Ω "quoted"'];

describe('queue generation by COPY', () => {
  let url: string;
  let viaInsert: Engine;
  let viaCopy: Engine;
  let user: number;
  let templates: number[];
  const looked: string[] = [];
  const mxLookup: MxLookup = async (domain) => {
    looked.push(domain);
    if (domain === 'acme.com') return ['acme-com.mail.protection.outlook.com'];
    throw Object.assign(new Error(`queryMx ENOTFOUND ${domain}`), { code: 'ENOTFOUND' });
  };

  beforeAll(async () => {
    url = await createTestDatabase();
    // One clock for both, a Monday at 15:00 UTC: not_before is the generation's "now" for the
    // recipients inside their window (Paris, New York), the window's next opening for Tokyo's.
    const clock = () => DateTime.fromISO('2026-11-30T15:00:00Z');
    viaInsert = await createTestEngine({ databaseUrl: url, env: { GENERATION_COPY_MIN: '1000000000' }, mxLookup, clock });
    viaCopy = await createTestEngine({ databaseUrl: url, env: { GENERATION_COPY_MIN: '0' }, mxLookup, clock });
    user = (await viaInsert.users.create({ name: 'C', email: 'c@example.test', quota: 10_000_000, timezone: 'Europe/Paris' })).id;
    templates = [
      (await viaInsert.templates.create(user, { name: 'a', subject: 's', text: 'a' })).id,
      (await viaInsert.templates.create(user, { name: 'b', subject: 's', text: 'b' })).id,
    ];
    // 3,000 contacts: domains with and without an MX answer, zones set or not, one hostile tag
    // each, and one in seven carrying the excluded tag.
    await viaInsert.apiDb.query(
      `INSERT INTO contacts (user_id, email, timezone, tags)
       SELECT $u, 'r' || g || '@' || (ARRAY['gmail.com', 'acme.com', 'nomx.org', 'outlook.com'])[1 + g % 4],
              (ARRAY[NULL, 'America/New_York', 'Asia/Tokyo'])[1 + g % 3],
              jsonb_build_array(($hostile::text[])[1 + g % 5]) || CASE WHEN g % 7 = 0 THEN '["churned"]'::jsonb ELSE '[]'::jsonb END
         FROM generate_series(1, 3000) g`,
      { bind: { u: user, hostile: HOSTILE } },
    );
  });
  afterAll(async () => {
    await viaInsert.close();
    await viaCopy.close();
  });

  const campaign = (name: string, extra: Record<string, unknown> = {}) =>
    viaInsert.campaigns.create({
      userId: user,
      name,
      from: 'c@example.test',
      templates,
      recipientRule: { type: 'tag_based', includeTags: HOSTILE, excludeTags: ['churned'] },
      sendWindow: { start: '09:00', end: '17:00', timezone: 'recipient', days: [1, 2, 3, 4, 5] },
      ...extra,
    });

  const queueOf = (taskId: number) =>
    rows<Record<string, unknown>>(
      viaInsert.apiDb,
      `SELECT user_id, contact_id, email, template_id, not_before, timezone, provider, status, attempts
         FROM subtasks WHERE task_id = $id ORDER BY contact_id`,
      { id: taskId },
    );

  it('writes the same rows as INSERT ... SELECT, column for column', async () => {
    // COPY first: its generation looks the custom domains up, and its reader must see the answers.
    const b = await campaign('copy');
    const a = await campaign('insert');
    const [rb] = await viaCopy.scheduler.processScheduledTasks(1);
    const [ra] = await viaInsert.scheduler.processScheduledTasks(1);
    expect([ra?.taskId, ra?.via, rb?.taskId, rb?.via]).toEqual([a.id, 'insert', b.id, 'copy']);
    const expected = 3000 - Math.floor(3000 / 7);
    expect([ra?.generated, rb?.generated]).toEqual([expected, expected]);
    const [qa, qb] = [await queueOf(a.id), await queueOf(b.id)];
    expect(qb).toHaveLength(expected);
    expect(qb).toEqual(qa);
    // What the comparison stands on: both templates, three zones, providers looked up and built in.
    expect(new Set(qb.map((r) => r.template_id))).toEqual(new Set(templates));
    expect(new Set(qb.map((r) => r.timezone))).toEqual(new Set(['Europe/Paris', 'America/New_York', 'Asia/Tokyo']));
    expect(new Set(qb.map((r) => (r.not_before as Date).toISOString()))).toEqual(
      new Set(['2026-11-30T15:00:00.000Z', '2026-12-01T00:00:00.000Z']),
    );
    expect(new Set(qb.map((r) => r.provider))).toEqual(new Set(['google', 'microsoft', 'other:nomx.org']));
    expect(looked.sort()).toEqual(['acme.com', 'nomx.org']);
    expect((await viaCopy.campaigns.progress(b.id)).status).toBe('sending');
  });

  it('caps the copied queue at the credit and refunds nothing twice', async () => {
    const small = (await viaInsert.users.create({ name: 'S', email: 's@example.test', quota: 10 })).id;
    const t = (await viaInsert.templates.create(small, { name: 't', subject: 's', text: 'x' })).id;
    const made = await viaInsert.contacts.bulkCreate(
      small,
      Array.from({ length: 8 }, (_, i) => ({ email: `s${i}@example.test` })),
    );
    const c = await viaInsert.campaigns.create({
      userId: small,
      name: 'grow',
      from: 's@example.test',
      templates: [t],
      recipientRule: { type: 'all' },
    });
    await viaInsert.contacts.bulkCreate(
      small,
      Array.from({ length: 6 }, (_, i) => ({ email: `late${i}@example.test` })),
    );
    const [r] = await viaCopy.scheduler.processScheduledTasks(1);
    expect([r?.via, r?.generated, r?.cutOff]).toEqual(['copy', 10, 4]);
    const queued = await rows<{ contact_id: string }>(
      viaInsert.apiDb,
      'SELECT contact_id FROM subtasks WHERE task_id = $id ORDER BY contact_id',
      {
        id: c.id,
      },
    );
    expect(queued.map((q) => Number(q.contact_id)).slice(0, 8)).toEqual(made.ids);
    // The rows kept the queue's order (contact id) in the table, as the INSERT's do (generation.test).
    const [order] = await rows<{ ordered: boolean }>(
      viaInsert.apiDb,
      `SELECT bool_and(prev IS NULL OR contact_id > prev) AS ordered
         FROM (SELECT contact_id, lag(contact_id) OVER (ORDER BY ctid) AS prev FROM subtasks WHERE task_id = $id) s`,
      { id: c.id },
    );
    expect(order?.ordered).toBe(true);

    expect((await viaInsert.users.get(small)).remainingQuota).toBe(0);
  });

  it('leaves nothing behind when the COPY fails half-way, and the pool keeps working', async () => {
    await viaInsert.apiDb.query(`
      CREATE FUNCTION copy_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.contact_id % 1000 = 999 THEN RAISE EXCEPTION 'boom at %', NEW.contact_id; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER copy_test_boom BEFORE INSERT ON subtasks FOR EACH ROW EXECUTE FUNCTION copy_test_boom();`);
    const before = (await viaInsert.users.get(user)).remainingQuota;
    const c = await campaign('fails');
    await expect(viaCopy.scheduler.processScheduledTasks(1)).rejects.toThrow(/boom at/);
    const [left] = await rows<{ n: number }>(viaInsert.apiDb, 'SELECT count(*)::int AS n FROM subtasks WHERE task_id = $id', { id: c.id });
    expect(left?.n).toBe(0);
    expect((await viaInsert.campaigns.progress(c.id)).status).toBe('scheduled');
    expect((await viaInsert.users.get(user)).remainingQuota).toBe(before - (3000 - Math.floor(3000 / 7)));
    await viaInsert.apiDb.query('DROP TRIGGER copy_test_boom ON subtasks; DROP FUNCTION copy_test_boom()');
    // Every connection of the pool still answers, and the campaign generates on the next pass.
    await Promise.all(Array.from({ length: 5 }, () => viaCopy.schedulerDb.query('SELECT 1')));
    const [r] = await viaCopy.scheduler.processScheduledTasks(1);
    expect([r?.taskId, r?.via, r?.generated]).toEqual([c.id, 'copy', 3000 - Math.floor(3000 / 7)]);
  });
});
