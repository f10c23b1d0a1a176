/**
 * The outcome write's PostgreSQL cost, alone (`npm run bench:outcomes`, DATABASE_URL set): W1's
 * queue (10 users x 5 campaigns x 2,000) leased to one engine, then written back as 'sent' by
 * flushOutcomes (services/scheduler/sql/outcomes.ts) in batches of each size asked, each batch one
 * message of each campaign in turn (as the fair ring sends them), with its attempt records and spent
 * units, as the engine writes them. Prints PostgreSQL's CPU (user + system of every postgres process
 * of the server, by pidusage) per write and per message: CPU time, not wall time, so a busy machine
 * changes it little. What it answers: how much of PostgreSQL's CPU a message is the write's fixed
 * cost, paid once a write whatever its size (docs/performance.md).
 *
 *   node dist/bench/outcome-write.js [--batch=16,4,4,16] [--messages=15000]
 */
import pidusage from 'pidusage';
import { Sequelize } from 'sequelize';
import { DateTime } from 'luxon';
import { flushOutcomes, type Attempt, type Outcome } from '../services/scheduler/sql/outcomes.js';
import { createBenchDatabase } from './lib/bench-db.js';
import { benchEngine, seedCampaigns } from './lib/fixtures.js';
import { serverPostgresPids } from './lib/procs.js';
import { fmt } from './lib/stats.js';

const arg = (name: string, dflt: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt;
const BATCHES = arg('batch', '16,4,4,16').split(',').map(Number);
const MESSAGES = Number(arg('messages', '15000'));
const OWNER = 'bench-outcomes';
/** CPU seconds (user + system) so far of the backend, and of it with every other postgres process. */
async function cpuSeconds(backend: number, others: number[]): Promise<{ mine: number; all: number }> {
  const ctime = (pid: number) =>
    pidusage(pid).then(
      (st) => st.ctime / 1000,
      () => 0,
    );
  const mine = await ctime(backend);
  let all = mine;
  for (const pid of others) all += await ctime(pid);
  return { mine, all };
}

type Row = { task_id: string; contact_id: string };

function batchOf(rows: Row[], serviceId: number): { outcomes: Outcome[]; attempts: Attempt[] } {
  const at = new Date();
  return {
    outcomes: rows.map((r) => ({
      taskId: Number(r.task_id),
      contactId: Number(r.contact_id),
      status: 'sent',
      serviceId,
      at,
      messageId: `<${r.task_id}.${r.contact_id}@bench.example>`,
      error: null,
      notBefore: null,
      attempt: 1,
    })),
    attempts: rows.map((r) => ({
      taskId: Number(r.task_id),
      contactId: Number(r.contact_id),
      at,
      serviceId,
      provider: 'example.test',
      mailboxProvider: 'other:example.test',
      result: 'accepted',
      code: 250,
      enhanced: '2.0.0',
      reply: '250 2.0.0 Ok: queued',
      durationMs: 3,
    })),
  };
}

async function main(): Promise<void> {
  if (!process.env.DATABASE_URL) throw new Error('set DATABASE_URL: this bench reads the server processes from /proc');
  const total = BATCHES.length * MESSAGES;
  if (!(total <= 100_000)) throw new Error(`--batch sizes x --messages must be at most 100,000 (the queue), not ${total}`);
  const bench = await createBenchDatabase('outcomes');
  const engine = await benchEngine(bench.url);
  // One connection, so one backend does every write and its CPU is read on its own.
  const db = new Sequelize(bench.url, { logging: false, pool: { max: 1, min: 1 } });
  try {
    await seedCampaigns(engine, {
      users: 10,
      campaignsPerUser: 5,
      perCampaign: 2000,
      service: { name: 'sink', port: 2525, sendingRate: 0, dailyQuota: 1e8, maxConnections: 5 },
    });
    const [[svc]] = (await db.query('SELECT id FROM email_services LIMIT 1')) as [{ id: number }[], unknown];
    const serviceId = svc!.id;
    const day = DateTime.utc().toISODate()!;
    const bind = { owner: OWNER, svc: serviceId, day };
    await db.query(`UPDATE subtasks SET status = 'sending', lease_owner = $owner, lease_expires_at = now() + interval '1 hour'`, { bind });
    await db.query(`INSERT INTO quota_holds (instance_id, service_id, day, units) VALUES ($owner, $svc, $day, 100000000)`, { bind });
    await db.query('VACUUM ANALYZE subtasks');
    const [rows] = (await db.query(
      `SELECT task_id, contact_id FROM subtasks ORDER BY row_number() OVER (PARTITION BY task_id ORDER BY contact_id), task_id`,
    )) as [Row[], unknown];
    const [[me]] = (await db.query('SELECT pg_backend_pid() AS pid')) as [{ pid: number }[], unknown];
    const backend = me!.pid;
    const others = await serverPostgresPids(() => [backend])();
    console.log(`outcome writes, ${fmt(MESSAGES)} messages per line, ${bench.label}`);
    console.log(
      '| outcomes a write | writes | backend CPU ms a write | backend CPU ms a message | all postgres CPU ms a message | wall ms a write |',
    );
    console.log('| --- | --- | --- | --- | --- | --- |');
    let next = 0;
    for (const size of BATCHES) {
      const before = await cpuSeconds(backend, others);
      const t0 = performance.now();
      let writes = 0;
      for (let i = 0; i < MESSAGES; i += size) {
        const { outcomes, attempts } = batchOf(rows.slice(next + i, next + Math.min(i + size, MESSAGES)), serviceId);
        await flushOutcomes(db, OWNER, outcomes, [{ serviceId, day, n: outcomes.length }], attempts);
        writes++;
      }
      const wall = performance.now() - t0;
      const after = await cpuSeconds(backend, others);
      const mine = after.mine - before.mine;
      const all = after.all - before.all;
      next += MESSAGES;
      const ms = (s: number, per: number) => fmt((s * 1000) / per, 3);
      console.log(
        `| ${size} | ${writes} | ${ms(mine, writes)} | ${ms(mine, MESSAGES)} | ${ms(all, MESSAGES)} | ${fmt(wall / writes, 3)} |`,
      );
    }
    const [[sent]] = (await db.query(`SELECT count(*)::int AS n FROM subtasks WHERE status = 'sent'`)) as [{ n: number }[], unknown];
    if (sent!.n !== next) throw new Error(`expected ${next} messages sent, found ${sent!.n}: a write was not applied`);
  } finally {
    await db.close();
    await engine.close();
    await bench.drop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
