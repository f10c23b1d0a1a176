/**
 * The pacing rule as the receiving server sees it, at 20 msg/s: at most k + 1 messages of a
 * service in any window of k intervals lasting at least one second (services/scheduler/pacer.ts),
 * judged on the instants a real smtp-server accepted each message. The server runs in a process of
 * its own (bench/sink.ts via test/helpers/sink.ts), so its acceptance instants are not held up by
 * the event loop that runs the engine. With 1, 5 and 20 connections (new SMTP connections open
 * during the run), right after a restart, and across a takeover by a second engine process.
 */
import { paceViolations } from '../services/scheduler/pacer.js';
import { startEngineChild, type EngineChild } from './helpers/child.js';
import { createTestDatabase, createTestEngine } from './helpers/db.js';
import { recordSends, until, userWithContacts } from './helpers/scheduler.js';
import { startSinkProcess, type SinkProcess } from './helpers/sink.js';

const RATE = 0.05; // 20 a second
const T = RATE * 1000;

describe('the pacing rule at a receiving server in its own process (20 msg/s)', () => {
  let sink: SinkProcess;
  beforeAll(async () => {
    sink = await startSinkProcess();
  });
  afterAll(() => sink.stop());

  async function setUp(tag: string, connections: number, recipients: number) {
    const port = await sink.listen(tag);
    const url = await createTestDatabase();
    const engine = await createTestEngine({ databaseUrl: url, schedulerTickMs: 50, concurrencyInitial: connections });
    const u = await userWithContacts(engine, 'S', recipients);
    const campaign = await engine.campaigns.create({
      userId: u.userId,
      name: 's',
      from: 's@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.services.create({
      name: 'paced',
      transport: { host: '127.0.0.1', port },
      sendingRate: RATE,
      dailyQuota: 100_000,
      maxConnections: connections,
    });
    return { url, engine, campaignId: campaign.id };
  }

  /** The receiver's instants: every message accepted once, and the rule over windows of >= 1 s. */
  async function judge(tag: string, expected: number): Promise<void> {
    const times = await sink.times(tag);
    const v = paceViolations(times, T);
    const sorted = [...times].sort((a, b) => a - b);
    const rate = (sorted.length - 1) / ((sorted.at(-1)! - sorted[0]!) / 1000);
    console.log(
      `[pacing-sink] ${tag}: ${times.length} accepted, ${rate.toFixed(2)} msg/s for 20 configured; ` +
        (v ? `${v.excess} over k + 1 in ${v.k} intervals from #${v.from}` : 'rule held'),
    );
    expect(times).toHaveLength(expected);
    // The k + 1 rule, whatever the load: the pacer keeps each send behind the server's answers to
    // the sends before it (pacer.ts), so delays between dispatch and acceptance cannot bunch.
    expect([tag, v]).toEqual([tag, null]);
  }

  for (const connections of [1, 5, 20]) {
    it(`holds with ${connections} connection(s)`, async () => {
      const tag = `c${connections}`;
      const { engine } = await setUp(tag, connections, 60);
      const sent = recordSends(engine);
      let held: number | undefined;
      try {
        await engine.scheduler.start();
        await until(() => sent.length === 60, 30_000, '60 messages');
        held = engine.scheduler.status().services[0]!.heldSends;
      } finally {
        await engine.close();
      }
      await judge(tag, 60);
      // With connections to spare, every send was held before its slot; with one, none was.
      expect(held).toBe(connections > 1 ? 60 : 0);
    }, 60_000);
  }

  it('holds right after a restart of the engine', async () => {
    const { url, engine } = await setUp('restart', 5, 70);
    const first = recordSends(engine);
    await engine.scheduler.start();
    await until(() => first.length >= 30, 30_000, '30 messages');
    await engine.close();
    const again = await createTestEngine({ databaseUrl: url, schedulerTickMs: 50, concurrencyInitial: 5 });
    const next = recordSends(again);
    try {
      await again.scheduler.start();
      await until(() => first.length + next.length >= 70, 30_000, 'the rest after the restart');
    } finally {
      await again.close();
    }
    await judge('restart', 70);
  }, 60_000);

  it('holds across a takeover by a second engine process', async () => {
    const { url, engine, campaignId } = await setUp('takeover', 5, 100);
    await engine.close();
    const env = { SCHEDULER_TICK_MS: '100', HEARTBEAT_MS: '200', LEASE_TTL_MS: '1000', CHILD_LOG_LEVEL: 'silent' };
    const children: EngineChild[] = [startEngineChild(url, env), startEngineChild(url, env)];
    try {
      await Promise.all(children.map((c) => c.ready));
      await until(() => children.some((c) => c.sent.length >= 30), 30_000, '30 messages');
      const owner = children.find((c) => c.sent.length > 0)!;
      owner.proc.kill('SIGKILL');
      await owner.exited;
      const other = children.find((c) => c !== owner)!;
      await until(() => other.sent.length > 0, 30_000, 'the takeover');
      const check = await createTestEngine({ databaseUrl: url });
      try {
        await until(async () => (await check.campaigns.progress(campaignId)).status === 'completed', 60_000, 'completion');
      } finally {
        await check.close();
      }
      other.proc.kill('SIGTERM');
      await other.exited;
      // At-least-once: the victim's sends in flight may arrive twice; the rule counts every arrival.
      const times = await sink.times('takeover');
      const v = paceViolations(times, T);
      console.log(
        `[pacing-sink] takeover: ${times.length} accepted for 100 recipients; ` +
          (v ? `${v.excess} over k + 1 in ${v.k} intervals from #${v.from}` : 'rule held'),
      );
      expect(times.length).toBeGreaterThanOrEqual(100);
      expect(v).toBeNull();
    } finally {
      for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    }
  }, 120_000);
});
