/**
 * Warm-up ramps with an injected clock, across days and a DST change (Europe/Berlin went from
 * summer to winter time on 2026-10-25, a 25-hour day; America/New_York on 2026-11-01).
 */
import { DateTime } from 'luxon';
import { warmupDay, warmupScheduleSchema } from '../services/deliverability/warmup.js';

const caps = [50, 100, 500, 1000];

describe('warmupDay', () => {
  it('counts calendar days in the zone, across the DST change', () => {
    const s = { start: '2026-10-23', zone: 'Europe/Berlin', caps };
    const at = (iso: string) => warmupDay(s, DateTime.fromISO(iso, { zone: 'Europe/Berlin' }));
    expect(at('2026-10-22T23:59:59')).toMatchObject({ day: 0, cap: 50 }); // before the start: day 1's cap
    expect(at('2026-10-23T00:00:00')).toMatchObject({ day: 1, cap: 50, date: '2026-10-23' });
    expect(at('2026-10-24T23:59:59')).toMatchObject({ day: 2, cap: 100 });
    expect(at('2026-10-25T00:00:00')).toMatchObject({ day: 3, cap: 500 }); // the 25-hour day
    expect(at('2026-10-25T23:30:00')).toMatchObject({ day: 3, cap: 500 });
    expect(at('2026-10-26T00:00:00')).toMatchObject({ day: 4, cap: 1000 });
    expect(at('2026-10-27T00:00:00')).toMatchObject({ day: 5, cap: null }); // the ramp is over
  });

  it('reads the instant in the schedule zone, wherever the clock is', () => {
    const s = { start: '2026-11-01', zone: 'America/New_York', caps };
    // 2026-11-02T04:30Z is still 23:30 on Nov 1 in New York (EST after the change that day)
    expect(warmupDay(s, DateTime.fromISO('2026-11-02T04:30:00Z'))).toMatchObject({ day: 1, date: '2026-11-01' });
    expect(warmupDay(s, DateTime.fromISO('2026-11-02T05:00:00Z'))).toMatchObject({ day: 2, date: '2026-11-02' });
    // the spring change (a 23-hour day) in the same zone
    const spring = { start: '2026-03-07', zone: 'America/New_York', caps };
    expect(warmupDay(spring, DateTime.fromISO('2026-03-08T23:59:00', { zone: 'America/New_York' }))).toMatchObject({ day: 2 });
    expect(warmupDay(spring, DateTime.fromISO('2026-03-09T00:00:00', { zone: 'America/New_York' }))).toMatchObject({ day: 3 });
  });

  it('validates schedules with the field named', () => {
    const r = warmupScheduleSchema.safeParse({ start: '2026-13-01', zone: 'Mars/Base', caps: [0] });
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => i.path.join('.')).sort()).toEqual(['caps.0', 'start', 'zone']);
    expect(warmupScheduleSchema.parse({ start: '2026-12-01', caps: [10] })).toEqual({ start: '2026-12-01', zone: 'UTC', caps: [10] });
  });
});
