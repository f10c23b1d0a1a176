/**
 * W4's measurement, in a fresh process (run with --expose-gc) per scale and run: the scheduling
 * decision itself, in memory. `users` users x 3 campaigns in a FairRing; each campaign a
 * CampaignState (the scheduler's buffer) holding as many claimed messages as the real pool would
 * give it (its 20,000-message budget shared among campaigns, 2 to 100 each, as CampaignPool.claimSize). One decision is what
 * the scheduler's pick does: ring.next(), the campaign lookup, buffer.take(); an empty buffer gets
 * its messages back (in the engine, a refill from PostgreSQL, out of this measurement).
 * Replies { type: 'result', usPerDecision, heapMb, bytesPerUser }.
 */
import { CampaignState, type Claimed } from '../services/scheduler/campaign-pool.js';
import { FairRing } from '../services/scheduler/fair-ring.js';

const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);

process.once('message', (m: { users: number; decisions: number }) => {
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  const campaigns = m.users * 3;
  const perCampaign = Math.max(2, Math.min(100, Math.floor(20_000 / campaigns)));
  const ring = new FairRing();
  const states = new Map<number, CampaignState>();
  const taken = new Map<number, Claimed[]>();
  for (let id = 1; id <= campaigns; id++) {
    const userId = Math.ceil(id / 3);
    const c = new CampaignState({
      id,
      name: `c${id}`,
      userId,
      priority: 0,
      status: 'sending',
      fromAddress: 'news@bench.example',
      fromName: null,
      sendWindow: null,
      waitReason: null,
    });
    const items: Claimed[] = [];
    for (let k = 0; k < perCampaign; k++) {
      items.push({
        taskId: id,
        contactId: k + 1,
        email: `u${userId}r${k}@example.test`,
        templateId: 1,
        attempts: 0,
        timezone: null,
        name: `Reader ${k}`,
        attributes: {},
        contactActive: true,
        suppressed: null,
        lastServiceId: null,
        provider: 'other:example.test',
      });
    }
    c.add(items);
    states.set(id, c);
    taken.set(id, []);
    ring.upsert({ campaignId: id, userId, priority: 0 });
  }
  gc();
  const heapMb = (process.memoryUsage().heapUsed - heap0) / 2 ** 20;
  // Warm up the JIT, then measure.
  const decide = (n: number) => {
    let sink = 0;
    for (let i = 0; i < n; i++) {
      const id = ring.next()!;
      const c = states.get(id)!;
      const item = c.take()!;
      sink += item.contactId;
      const t = taken.get(id)!;
      t.push(item);
      if (c.size === 0) {
        c.add(t);
        taken.set(id, []);
      }
    }
    return sink;
  };
  decide(Math.min(m.decisions, 500_000));
  const cpu0 = process.cpuUsage();
  decide(m.decisions);
  const cpu = process.cpuUsage(cpu0);
  const us = (cpu.user + cpu.system) / m.decisions;
  process.send?.({ type: 'result', usPerDecision: us, heapMb, bytesPerUser: (heapMb * 2 ** 20) / m.users, perCampaign });
  setTimeout(() => process.exit(0), 20);
});
