/**
 * The completion forecast (services/forecast.ts) as a pure function, with an injected luxon clock:
 * the service's rate and fair share, its daily quota and the quota day's reset, a pair's daily and
 * hourly caps, send windows, a warm-up ramp across days (over a DST change), a suspended and a
 * slowed pair recovering, a scheduled start, and what happens when nothing can send.
 */
import { DateTime } from 'luxon';
import { forecastCompletion, waterFill, type ForecastInput, type ForecastService } from '../services/forecast.js';
import { resolveShaping, type ServiceShapingInput } from '../services/deliverability/shaping.js';

function service(over: Partial<ForecastService> & { shaping?: ServiceShapingInput } = {}): ForecastService {
  const { shaping, ...rest } = over;
  const resolved = resolveShaping({}, shaping ?? null);
  return {
    id: 1,
    interval: 1,
    dailyQuota: 1_000_000,
    usedToday: 0,
    quotaZone: 'UTC',
    limits: (p) => resolved.limitsFor(p as never),
    adaptive: resolved.adaptive,
    warmup: (shaping?.warmup ?? []).map((schedule) => ({ schedule, sentToday: 0 })),
    pairs: {},
    others: [],
    ...rest,
  };
}

const utc = (iso: string) => DateTime.fromISO(iso, { zone: 'UTC' });

function run(input: Partial<ForecastInput> & Pick<ForecastInput, 'now' | 'remaining' | 'services'>) {
  return forecastCompletion({ userId: 1, window: null, ...input });
}

/** The forecast completion as an ISO string in `zone` (to compare with wall-clock expectations). */
const at = (f: ReturnType<typeof forecastCompletion>, zone = 'UTC') => f.completesAt?.setZone(zone).toISO({ suppressMilliseconds: true });

describe('forecastCompletion', () => {
  const now = utc('2026-11-30T10:00:00');

  it('one campaign alone: its messages at the service rate', () => {
    const f = run({ now, remaining: [{ provider: 'other:x.test', zone: 'UTC', count: 1000 }], services: [service({ interval: 1 })] });
    expect(at(f)).toBe('2026-11-30T10:16:40Z');
    expect(f.ratePerSecond).toBeCloseTo(1);
    expect(f.reason).toBeNull();
  });

  it('nothing left: now; no usable service: null', () => {
    expect(at(run({ now, remaining: [], services: [service()] }))).toBe('2026-11-30T10:00:00Z');
    expect(run({ now, remaining: [{ provider: null, zone: 'UTC', count: 5 }], services: [] })).toMatchObject({
      completesAt: null,
      reason: 'no_service',
    });
  });

  it('the fair share: half the service while another user has work, all of it once they are done', () => {
    const others = [{ campaignId: 9, userId: 2, remaining: 500 }];
    const f = run({
      now,
      remaining: [{ provider: 'other:x.test', zone: 'UTC', count: 1000 }],
      services: [service({ interval: 1, others })],
    });
    // 1000 s at 0.5/s (500 each), then the last 500 at 1/s.
    expect(at(f)).toBe('2026-11-30T10:25:00Z');
    expect(f.ratePerSecond).toBeCloseTo(0.5);
    // The user's own second campaign shares the user's turns: a quarter of the service, not a third.
    const mixed = [...others, { campaignId: 8, userId: 1, remaining: 10_000 }];
    const g = run({ now, remaining: [{ provider: null, zone: 'UTC', count: 100 }], services: [service({ interval: 1, others: mixed })] });
    expect(g.ratePerSecond).toBeCloseTo(0.25);
    expect(at(g)).toBe('2026-11-30T10:06:40Z');
  });

  it('the daily quota runs out: the rest goes after the quota day resets at midnight in the service zone', () => {
    const berlin = DateTime.fromISO('2026-11-30T23:00:00', { zone: 'Europe/Berlin' });
    const s = service({ interval: 1, dailyQuota: 100, usedToday: 50, quotaZone: 'Europe/Berlin' });
    const f = run({ now: berlin, remaining: [{ provider: null, zone: 'UTC', count: 120 }], services: [s] });
    // 50 by 23:00:50, then 70 from midnight in Berlin.
    expect(at(f, 'Europe/Berlin')).toBe('2026-12-01T00:01:10+01:00');
  });

  it("a pair's daily cap pushes completion to the next day; the other provider is not held", () => {
    const s = service({ interval: 0.1, shaping: { providers: { google: { daily: 100 } } } });
    const late = utc('2026-11-30T22:00:00');
    const google = run({ now: late, remaining: [{ provider: 'google', zone: 'UTC', count: 150 }], services: [s] });
    // 100 at 10/s, then the cap; 50 more from the next quota day.
    expect(at(google)).toBe('2026-12-01T00:00:05Z');
    // With yahoo mail too: yahoo takes what google cannot, and is not pushed to the next day.
    const both = run({
      now: late,
      remaining: [
        { provider: 'google', zone: 'UTC', count: 100 },
        { provider: 'yahoo', zone: 'UTC', count: 100 },
      ],
      services: [s],
    });
    expect(at(both)).toBe('2026-11-30T22:00:20Z');
    // The cap counts what was sent today already (the scheduler's live count).
    const counted = service({
      interval: 0.1,
      shaping: { providers: { google: { daily: 100 } } },
      pairs: { google: { state: 'normal', rate: 10, suspendedUntil: null, quietSince: 0, sentThisHour: 0, sentToday: 100 } },
    });
    expect(at(run({ now: late, remaining: [{ provider: 'google', zone: 'UTC', count: 10 }], services: [counted] }))).toBe(
      '2026-12-01T00:00:01Z',
    );
  });

  it('an hourly cap: one hour after another, in few steps', () => {
    const s = service({ interval: 0.1, shaping: { providers: { google: { hourly: 100 } } } });
    const f = run({ now, remaining: [{ provider: 'google', zone: 'UTC', count: 10_000 }], services: [s] });
    // 100 a clock hour, each in 10 s: the 100th hour starts 99 hours after now.
    expect(at(f)).toBe(now.plus({ hours: 99, seconds: 10 }).toISO({ suppressMilliseconds: true }));
    expect(f.steps).toBeLessThan(500);
  });

  it('a send window in the recipients zone: stops at its close, goes on when it opens again (after the weekend)', () => {
    const paris = DateTime.fromISO('2026-11-27T16:59:00', { zone: 'Europe/Paris' }); // a Friday
    const f = run({
      now: paris,
      window: { start: '09:00', end: '17:00', days: [1, 2, 3, 4, 5] },
      remaining: [{ provider: null, zone: 'Europe/Paris', count: 300 }],
      services: [service({ interval: 1 })],
    });
    // 60 by 17:00 on Friday, the other 240 from 09:00 on Monday.
    expect(at(f, 'Europe/Paris')).toBe('2026-11-30T09:04:00+01:00');
    // Recipients in two zones: New York's window is open later the same day.
    const g = run({
      now: paris,
      window: { start: '09:00', end: '17:00' },
      remaining: [
        { provider: null, zone: 'Europe/Paris', count: 60 },
        { provider: null, zone: 'America/New_York', count: 60 },
      ],
      services: [service({ interval: 1 })],
    });
    // Both open at 16:59 Paris (10:59 New York): 120 at 1/s shared, Paris's 60 cut at 17:00 after 30.
    // Paris: 30 left for Saturday 09:00; New York: done at 11:00:30 New York time.
    expect(at(g, 'Europe/Paris')).toBe('2026-11-28T09:00:30+01:00');
  });

  it('a warm-up ramp across days, over the 25-hour day of a DST change', () => {
    const zone = 'Europe/Berlin';
    const s = service({ interval: 0.1, shaping: { warmup: [{ start: '2026-10-24', zone, caps: [50, 100, 500] }] } });
    const f = run({
      now: DateTime.fromISO('2026-10-24T12:00:00', { zone }),
      remaining: [{ provider: 'google', zone: 'UTC', count: 300 }],
      services: [s],
    });
    // Day 1: 50; day 2 (2026-10-25, 25 hours long): 100; day 3 from midnight in Berlin: the last 150 in 15 s.
    expect(at(f, zone)).toBe('2026-10-26T00:00:15+01:00');
    // A warm-up cap for one provider holds only that provider.
    const g = service({ interval: 0.1, shaping: { warmup: [{ start: '2026-10-24', zone, caps: [50, 100, 500], provider: 'google' }] } });
    const h = run({
      now: DateTime.fromISO('2026-10-24T12:00:00', { zone }),
      remaining: [
        { provider: 'google', zone: 'UTC', count: 50 },
        { provider: 'yahoo', zone: 'UTC', count: 100 },
      ],
      services: [g],
    });
    expect(at(h, zone)).toBe('2026-10-24T12:00:15+02:00');
  });

  it('a suspended pair waits for the end of its suspension, then resumes at the slowed rate', () => {
    const until = now.plus({ minutes: 15 }).toMillis();
    const s = service({
      interval: 0.1,
      pairs: { google: { state: 'suspended', rate: 5, suspendedUntil: until, quietSince: until, sentThisHour: 0, sentToday: 0 } },
    });
    const f = run({ now, remaining: [{ provider: 'google', zone: 'UTC', count: 100 }], services: [s] });
    expect(f.ratePerSecond).toBe(0);
    // 100 at 5/s after the suspension.
    expect(at(f)).toBe('2026-11-30T10:15:20Z');
  });

  it('a slowed pair recovers step by step (10 % of the configured rate a quiet minute)', () => {
    const s = service({
      interval: 0.1,
      pairs: { google: { state: 'slowed', rate: 1, suspendedUntil: null, quietSince: now.toMillis(), sentThisHour: 0, sentToday: 0 } },
    });
    const f = run({ now, remaining: [{ provider: 'google', zone: 'UTC', count: 1000 }], services: [s] });
    // 60 x (1 + 2 + 3 + 4 + 5) = 900 in five minutes, the last 100 at 6/s.
    expect(f.completesAt!.toMillis() - now.toMillis()).toBeCloseTo(300_000 + (100 / 6) * 1000, -1);
    expect(f.ratePerSecond).toBeCloseTo(1);
  });

  it('a campaign scheduled later starts then; one beyond the horizon gets null', () => {
    const f = run({
      now,
      startAt: now.plus({ hours: 2 }),
      remaining: [{ provider: null, zone: 'UTC', count: 60 }],
      services: [service({ interval: 1 })],
    });
    expect(at(f)).toBe('2026-11-30T12:01:00Z');
    expect(f.ratePerSecond).toBe(0);
    const never = run({ now, remaining: [{ provider: null, zone: 'UTC', count: 10 }], services: [service({ dailyQuota: 0 })] });
    expect(never).toMatchObject({ completesAt: null, reason: 'beyond_horizon' });
  });
});

describe('waterFill', () => {
  it('splits by weight, caps each, and gives what a capped one cannot take to the others', () => {
    expect(waterFill([1, 1], [Infinity, Infinity], 10)).toEqual([5, 5]);
    expect(waterFill([3, 1], [2, Infinity], 10)).toEqual([2, 8]);
    expect(waterFill([1, 1], [0, 1], 10)).toEqual([0, 1]);
    expect(waterFill([0, 2], [5, 5], 4)).toEqual([0, 4]);
  });
});
