/**
 * Data sets the workloads load, and the same messages as plain objects for the peers and the
 * ceiling. Every message is about 300 bytes of plain text (as in bench-notes), rendered from one
 * template with the contact's name and city.
 */
import type { SendMailOptions } from 'nodemailer';
import { buildMessage, compileForSending, type MessageTemplate } from '../../services/delivery/message.js';
import { createEngine, type Engine } from '../../src/engine.js';
import { createLogger } from '../../services/kernel/logger.js';

export const TEMPLATE: MessageTemplate & { name: string } = {
  name: 'bench',
  subject: 'News for {{name}}',
  text:
    'Hello {{name}},\n\nThis is the monthly letter for readers in {{city | your town}}. ' +
    'Nothing in it matters: it is a benchmark message of about three hundred bytes, ' +
    'rendered per recipient like a real campaign.\n\nBest regards,\nThe bench team',
  html: null,
};

export const FROM = 'news@bench.example';

/** One recipient, as fairsend's generation produces it (email `u<user>r<n>@example.test`). */
export interface Recipient {
  taskId: number;
  contactId: number;
  email: string;
  name: string;
  attributes: Record<string, unknown>;
}

export function emailOf(user: number, n: number): string {
  return `u${user}r${n}@example.test`;
}

/** The recipients of a users x campaigns x recipients set, as plain objects (peers and ceiling). */
export function recipientsOf(users: number, campaignsPerUser: number, perCampaign: number): Recipient[] {
  const out: Recipient[] = [];
  let contactId = 0;
  for (let u = 1; u <= users; u++) {
    for (let c = 1; c <= campaignsPerUser; c++) {
      const taskId = (u - 1) * campaignsPerUser + c;
      for (let n = 1; n <= perCampaign; n++) {
        out.push({ taskId, contactId: contactId + n, email: emailOf(u, n), name: `Reader ${n}`, attributes: { city: 'Lyon' } });
      }
    }
    contactId += perCampaign;
  }
  return out;
}

const COMPILED = compileForSending(TEMPLATE);

/** What fairsend sends for a recipient; the peers and the ceiling send exactly this. */
export function render(r: Recipient): SendMailOptions {
  return buildMessage(COMPILED, { id: r.taskId, fromAddress: FROM, fromName: null }, r, {});
}

/** Scheduler errors seen by bench engines (logged by the engine at 'error'; counted here, first few kept). */
export const engineErrors = { count: 0, first: [] as string[] };

export async function benchEngine(url: string, overrides: { attemptRecords?: boolean } = {}): Promise<Engine> {
  // Logs off: a benchmark prints figures; scheduler errors are counted and reported instead.
  const engine = await createEngine({ databaseUrl: url, logger: createLogger('silent'), maintenanceEnabled: false, ...overrides });
  engine.scheduler.on('error', (err) => {
    engineErrors.count++;
    if (engineErrors.first.length < 5) engineErrors.first.push(err instanceof Error ? err.message : String(err));
  });
  return engine;
}

/** Inserts `n` contacts for a user in one statement (all tagged 'bench', city Lyon). */
export async function insertContacts(engine: Engine, userId: number, userNo: number, n: number): Promise<void> {
  await engine.apiDb.query(
    `INSERT INTO contacts (user_id, email, name, tags, attributes)
     SELECT $u, 'u' || $no::int || 'r' || g || '@example.test', 'Reader ' || g, '["bench"]'::jsonb, '{"city":"Lyon"}'::jsonb
       FROM generate_series(1, $n::int) g`,
    { bind: { u: userId, no: userNo, n } },
  );
}

export interface ServiceSpec {
  name: string;
  port: number;
  sendingRate: number;
  dailyQuota: number;
  maxConnections: number;
}

export async function createService(engine: Engine, s: ServiceSpec): Promise<number> {
  const svc = await engine.services.create({
    name: s.name,
    transport: { host: '127.0.0.1', port: s.port },
    sendingRate: s.sendingRate,
    dailyQuota: s.dailyQuota,
    quotaTimezone: 'UTC',
    maxConnections: s.maxConnections,
  });
  return svc.id;
}

/**
 * users x campaignsPerUser campaigns of perCampaign recipients each, queues generated (so the
 * measured run starts with the queue in place), one service to the sink. Returns the total.
 */
export async function seedCampaigns(
  engine: Engine,
  o: { users: number; campaignsPerUser: number; perCampaign: number; service: ServiceSpec },
): Promise<number> {
  for (let u = 1; u <= o.users; u++) await seedUser(engine, u, o);
  await generateAll(engine);
  await engine.apiDb.query('VACUUM ANALYZE subtasks');
  await createService(engine, o.service);
  return o.users * o.campaignsPerUser * o.perCampaign;
}

/** User `u`: its contacts, one template, and `campaignsPerUser` campaigns to all its contacts (not generated yet). */
async function seedUser(engine: Engine, u: number, o: { campaignsPerUser: number; perCampaign: number }): Promise<void> {
  const user = await engine.users.create({ name: `User ${u}`, email: `owner${u}@bench.example`, quota: 100_000_000 });
  await insertContacts(engine, user.id, u, o.perCampaign);
  const tpl = await engine.templates.create(user.id, { name: TEMPLATE.name, subject: TEMPLATE.subject, text: TEMPLATE.text! });
  for (let c = 1; c <= o.campaignsPerUser; c++) {
    await engine.campaigns.create({
      userId: user.id,
      name: `u${u} c${c}`,
      from: FROM,
      templates: [tpl.id],
      recipientRule: { type: 'all' },
    });
  }
}

/**
 * Like seedCampaigns, for many users (W4: up to 10,000 x 3 campaigns): users are made through the
 * API `concurrency` at a time. Returns the total number of messages queued.
 */
export async function seedManyUsers(
  engine: Engine,
  o: { users: number; campaignsPerUser: number; perCampaign: number; service: ServiceSpec },
  concurrency = 8,
): Promise<{ total: number; createSeconds: number; generateSeconds: number }> {
  let next = 1;
  const worker = async () => {
    for (let u = next++; u <= o.users; u = next++) await seedUser(engine, u, o);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const t1 = performance.now();
  // Generation is safe from several callers at once (each campaign is generated exactly once).
  await Promise.all(Array.from({ length: 4 }, () => generateAll(engine)));
  const t2 = performance.now();
  await engine.apiDb.query('VACUUM ANALYZE');
  await createService(engine, o.service);
  return { total: o.users * o.campaignsPerUser * o.perCampaign, createSeconds: (t1 - t0) / 1000, generateSeconds: (t2 - t1) / 1000 };
}

export async function generateAll(engine: Engine): Promise<void> {
  while ((await engine.scheduler.processScheduledTasks(100)).length > 0) {
    /* until no campaign is due */
  }
}

export async function sentTotal(engine: Engine): Promise<number> {
  const [rows] = (await engine.apiDb.query('SELECT COALESCE(sum(sent_count), 0)::bigint AS n FROM tasks')) as [{ n: string }[], unknown];
  return Number(rows[0]!.n);
}
