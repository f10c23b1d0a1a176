/**
 * The cap ledger as pure code (deliverability/cap-ledger.ts) over an in-memory store that behaves
 * as the upsert in sql/caps.ts does: reservations never pass the cap, whatever the number of
 * ledgers (engines) reserving from one row; units go back when a send did not go and at a stop;
 * a new window starts afresh. The same store behind two shapers stands for two engines on one
 * service. The statements themselves, and a restart and a takeover of real engines, are tested
 * in test/deliverability-caps.test.ts.
 */
import { DateTime } from 'luxon';
import { CapLedger, RECHECK_MS, batchFor, type CapKey, type CapStore } from '../services/deliverability/cap-ledger.js';
import { ServiceShaper } from '../services/deliverability/shaper.js';
import { resolveShaping } from '../services/deliverability/shaping.js';

/** Rows keyed by scope, provider and bucket; answers after a microtask, as a database would. */
function memoryStore() {
  const rows = new Map<string, number>();
  const id = (k: CapKey) => `${k.scope}|${k.provider}|${k.bucket}`;
  const store: CapStore = {
    async reserve(k, want) {
      await Promise.resolve();
      const sent = rows.get(id(k)) ?? 0;
      const granted = Math.max(0, Math.min(want, k.cap - sent));
      rows.set(id(k), sent + granted);
      return { granted, sent: sent + granted };
    },
    async release(items) {
      await Promise.resolve();
      for (const { key, n } of items) rows.set(id(key), Math.max(0, (rows.get(id(key)) ?? 0) - n));
    },
  };
  return { store, rows };
}

const settle = () => new Promise((r) => setImmediate(r));
const key = (bucket: string, cap: number): CapKey => ({ scope: 'day', provider: 'google', bucket, cap, endsAt: 0 });

describe('CapLedger', () => {
  it('two ledgers on one row never take more than the cap between them', async () => {
    const { store, rows } = memoryStore();
    let now = 0;
    const a = new CapLedger({ store, now: () => now });
    const b = new CapLedger({ store, now: () => now });
    const k = key('2026-11-30', 7);
    let sent = 0;
    for (let round = 0; round < 20; round++) {
      for (const l of [a, b]) {
        if (l.check(k, 3) === 'ok') {
          l.take([k], 3);
          sent++;
        }
      }
      await settle();
      now += 100;
    }
    expect(sent).toBe(7);
    expect(rows.get('day|google|2026-11-30')).toBe(7);
    expect(a.check(k, 3)).toBe('full');
    expect(b.check(k, 3)).toBe('full');
  });

  it('reserves ahead, gives back a send that did not go, and returns the unused units at stop', async () => {
    const { store, rows } = memoryStore();
    const ready: number[] = [];
    const l = new CapLedger({ store, now: () => 0, onReady: () => ready.push(1) });
    const k = key('2026-11-30', 1000);
    expect(l.check(k, 10)).toBe('wait');
    await settle();
    expect(ready).toHaveLength(1);
    expect(l.check(k, 10)).toBe('ok');
    const taken = [1, 2, 3, 4, 5, 6].map(() => l.take([k], 10));
    await settle(); // half the batch used: the next batch was reserved ahead
    expect(rows.get('day|google|2026-11-30')).toBe(20);
    l.giveBack(taken[5]!);
    expect(l.sent(k)).toBe(5);
    await l.releaseAll();
    expect(rows.get('day|google|2026-11-30')).toBe(5);
    expect(l.sent(k)).toBe(5);
  });

  it('starts a new window afresh; a full window is asked again after RECHECK_MS or when its cap is raised', async () => {
    const { store, rows } = memoryStore();
    let now = 0;
    const l = new CapLedger({ store, now: () => now });
    const day1 = key('2026-11-30', 1);
    expect(l.check(day1, 1)).toBe('wait');
    await settle();
    l.take([day1], 1);
    await settle();
    expect(l.check(day1, 1)).toBe('full');
    // Another engine gave a unit back: seen once RECHECK_MS have passed.
    rows.set('day|google|2026-11-30', 0);
    now += RECHECK_MS - 1;
    expect(l.check(day1, 1)).toBe('full');
    now += 1;
    l.check(day1, 1);
    await settle();
    expect(l.check(day1, 1)).toBe('ok');
    l.take([day1], 1);
    await settle();
    expect(l.check(day1, 1)).toBe('full');
    expect(l.check({ ...day1, cap: 2 }, 1)).toBe('full'); // asked again at once, answer pending
    await settle();
    expect(l.check({ ...day1, cap: 2 }, 1)).toBe('ok');
    // The next day: a row of its own.
    const day2 = key('2026-12-01', 1);
    expect(l.check(day2, 1)).toBe('wait');
    await settle();
    expect(l.check(day2, 1)).toBe('ok');
    expect(rows.get('day|google|2026-12-01')).toBe(1);
  });

  it('reserves at most a twentieth of the cap at once (what a crash can leave unused), at least one unit', () => {
    expect(batchFor({ cap: 1000 }, 10)).toBe(10);
    expect(batchFor({ cap: 100 }, 10)).toBe(5);
    expect(batchFor({ cap: 8 }, 10)).toBe(1);
    expect(batchFor({ cap: 100_000 }, 500)).toBe(100);
    expect(batchFor({ cap: 1000 }, 0.2)).toBe(1);
  });

  it('a failed reservation is retried after a pause, not in a loop', async () => {
    let calls = 0;
    let now = 0;
    const errors: unknown[] = [];
    const store: CapStore = {
      reserve: async () => {
        calls++;
        throw new Error('database away');
      },
      release: async () => undefined,
    };
    const l = new CapLedger({ store, now: () => now, onError: (e) => errors.push(e) });
    const k = key('2026-11-30', 5);
    l.check(k, 1);
    await settle();
    for (let i = 0; i < 10; i++) l.check(k, 1);
    await settle();
    expect(calls).toBe(1);
    expect(errors).toHaveLength(1);
    now += 1000;
    l.check(k, 1);
    await settle();
    expect(calls).toBe(2);
  });
});

describe('ServiceShaper with a cap ledger (two engines on one service)', () => {
  it('hourly, daily and warm-up caps hold across both; the status counts what both sent', async () => {
    const { store } = memoryStore();
    const t = { now: DateTime.fromISO('2026-11-30T10:30:00Z', { zone: 'UTC' }) };
    const shaping = resolveShaping(
      {},
      { providers: { google: { hourly: 5, daily: 8 } }, warmup: [{ start: '2026-11-30', zone: 'UTC', caps: [12] }] },
    );
    const engine = () =>
      new ServiceShaper({
        shaping,
        serviceRate: 2,
        quotaZone: 'UTC',
        clock: () => t.now,
        ledger: new CapLedger({ store, now: () => t.now.toMillis() }),
      });
    const a = engine();
    const b = engine();
    const sent = { google: 0, yahoo: 0 };
    const run = async (rounds: number) => {
      for (let i = 0; i < rounds; i++) {
        for (const s of [a, b]) {
          for (const p of ['google', 'yahoo'] as const) {
            if (!s.blocked(p)) {
              const begun = s.begin(p);
              s.end(p, i % 7 === 3 ? begun : undefined); // now and then a send that did not go
              if (i % 7 !== 3) sent[p]++;
            }
          }
        }
        await settle();
      }
    };
    await run(40);
    expect(sent.google).toBe(5); // the hourly cap, across both
    expect(a.blocked('google')).toMatchObject({ reason: 'hourly', until: Date.parse('2026-11-30T11:00:00Z') });
    expect(sent.google + sent.yahoo).toBe(12); // the overall warm-up cap of the day
    expect(b.blocked('yahoo')).toMatchObject({ reason: 'warmup' });
    expect(a.status().find((s) => s.provider === 'google')).toMatchObject({ sentThisHour: 5, blocked: 'hourly' });
    expect(b.warmupStatus()[0]).toMatchObject({ cap: 12, sentToday: 12 });
    // The next day (the warm-up is over): the daily cap of 8 binds google, the hourly one first.
    t.now = t.now.plus({ days: 1 });
    sent.google = 0;
    await run(40);
    expect(sent.google).toBe(5);
    t.now = t.now.plus({ hours: 1 });
    await run(40);
    expect(sent.google).toBe(8);
    expect(a.blocked('google')).toMatchObject({ reason: 'daily' });
  });
});
