import { paceViolations } from '../services/scheduler/pacer.js';
import { UNCOMMITTED_PER_CONNECTION } from '../services/scheduler/service-runner.js';
import { createTestDatabase, createTestEngine, rows } from './helpers/db.js';
import { startEngineChild, type EngineChild } from './helpers/child.js';
import { until, userWithContacts } from './helpers/scheduler.js';
import { startSinkProcess, type SinkProcess } from './helpers/sink.js';

const FAST = {
  SCHEDULER_TICK_MS: '100',
  HEARTBEAT_MS: '200',
  LEASE_TTL_MS: '1000',
  CHILD_LOG_LEVEL: process.env.CHILD_LOG_LEVEL ?? 'silent',
};
const RATE = 0.01; // 100 a second per service

describe('several engine processes on one PostgreSQL', () => {
  // The receiving servers run in a process of their own (bench/sink.ts), one listener per service:
  // they note the instant each message is accepted, and its Message-ID.
  let sink: SinkProcess;
  beforeAll(async () => {
    sink = await startSinkProcess();
  });
  afterAll(() => sink.stop());

  it('spreads services over processes, takes over a killed one, and keeps every service on one clock', async () => {
    const url = await createTestDatabase();
    const setup = await createTestEngine({ databaseUrl: url });
    const serviceIds: number[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await sink.listen(`svc${i}`, { ids: true });
      const s = await setup.services.create({
        name: `svc${i}`,
        transport: { host: '127.0.0.1', port },
        sendingRate: RATE,
        dailyQuota: 1200,
        maxConnections: 3,
      });
      serviceIds.push(s.id);
    }
    const campaigns: number[] = [];
    for (const name of ['U1', 'U2', 'U3']) {
      const u = await userWithContacts(setup, name, 700);
      campaigns.push(
        (
          await setup.campaigns.create({
            userId: u.userId,
            name,
            from: 'x@example.test',
            templates: [u.templateId],
            recipientRule: { type: 'all' },
          })
        ).id,
      );
    }
    await setup.close();

    const children: EngineChild[] = [0, 1, 2].map(() => startEngineChild(url, FAST));
    await Promise.all(children.map((c) => c.ready));
    await until(() => children.reduce((n, c) => n + c.sent.length, 0) >= 600, 30000, '600 sends');
    // Each service has exactly one owner at a time.
    const owners = new Map<number, Set<number>>();
    children.forEach((c, i) => c.sent.forEach((e) => owners.set(e.serviceId, (owners.get(e.serviceId) ?? new Set()).add(i))));
    for (const id of serviceIds) expect(owners.get(id)?.size).toBe(1);
    // Kill a process that owns a service.
    const victimIndex = [...owners.values()][0]!.values().next().value!;
    const victim = children[victimIndex]!;
    const victimServices = new Set(victim.sent.map((e) => e.serviceId));
    const killedAt = Date.now();
    victim.proc.kill('SIGKILL');
    await victim.exited;
    const survivors = children.filter((c) => c !== victim);
    // Its services are taken over well within the 30 s lock timeout.
    await until(() => survivors.some((c) => c.sent.some((e) => victimServices.has(e.serviceId) && e.at > killedAt)), 30000, 'takeover');
    const takeoverMs =
      Math.min(...survivors.flatMap((c) => c.sent.filter((e) => victimServices.has(e.serviceId) && e.at > killedAt).map((e) => e.at))) -
      killedAt;

    const check = await createTestEngine({ databaseUrl: url });
    try {
      await until(
        async () => {
          const ps = await Promise.all(campaigns.map((id) => check.campaigns.progress(id)));
          return ps.every((p) => p.status === 'completed');
        },
        60000,
        'all campaigns completed',
      );
      for (const c of survivors) c.proc.kill('SIGTERM');
      await Promise.all(survivors.map((c) => c.exited));
      const states = await rows<{ status: string; n: number }>(
        check.apiDb,
        'SELECT status, count(*)::int AS n FROM subtasks GROUP BY status',
      );
      expect(states).toEqual([{ status: 'sent', n: 2100 }]);
      /** What each service's server accepted: the instants and Message-IDs. */
      const received = await Promise.all([0, 1, 2].map((i) => sink.received(`svc${i}`)));
      const ids = received.flatMap((r) => r.ids);
      const distinct = new Set(ids).size;
      console.log(
        `[scale-out] takeover after ${takeoverMs} ms; received ${ids.length}, distinct ${distinct}, duplicates ${ids.length - distinct}`,
      );
      expect(distinct).toBe(2100);
      // The crash bound (docs/delivery.md): each of the victim's services resends at most its
      // commit window, the messages sent or being sent whose outcome was not committed.
      const bound = victimServices.size * UNCOMMITTED_PER_CONNECTION * 3;
      expect(ids.length - distinct).toBeLessThanOrEqual(bound);
      for (const q of await check.services.quota()) expect(q.usedQuota).toBeLessThanOrEqual(1200);
      // One schedule per service, across all processes and the takeover: at the dispatch and at
      // the receiving server, at most k + 1 messages in any window of k intervals lasting >= 1 s.
      // At the server this holds through stalls of any process (the kill, a GC, a busy machine):
      // each engine keeps its sends behind the server's answers (pacer.ts).
      const all = children.flatMap((c) => c.sent);
      serviceIds.forEach((id, i) => {
        const dispatched = all.filter((e) => e.serviceId === id).map((e) => e.at);
        for (const [what, times] of [
          ['dispatched', dispatched],
          ['received', received[i]!.times],
        ] as const) {
          const v = paceViolations(times, RATE * 1000);
          if (v) console.log(`[scale-out] service ${id} ${what}: ${v.excess} over k + 1 in ${v.k} intervals from #${v.from}`);
          expect([what, v]).toEqual([what, null]);
        }
      });
      expect(takeoverMs).toBeLessThan(30000);
    } finally {
      await check.close();
    }
  }, 120000);
});
