/**
 * Warm-up: a new sending service (a new IP or domain) builds reputation by sending a little more
 * each day. A schedule is a daily cap ramp from a start date, for the service overall or for one
 * mailbox provider:
 *
 *   { start: '2026-12-01', zone: 'Europe/Berlin', caps: [50, 100, 500, 1000, 5000], provider: 'google' }
 *
 * Day 1 is the start date in `zone`; day n has cap caps[n-1]; after the last day the ramp is over
 * and no warm-up cap applies. Before the start date, day 1's cap applies (a schedule is set up
 * ahead of sending, and the safe reading of "not started yet" is the smallest cap). Days are
 * calendar days in the zone (luxon), so a day with a DST change (23 or 25 hours) is still one day.
 */
import { DateTime } from 'luxon';
import { z } from 'zod';

export const warmupScheduleSchema = z
  .object({
    start: z.string().refine((s) => /^\d{4}-\d{2}-\d{2}$/.test(s) && DateTime.fromISO(s).isValid, 'must be a date like 2026-12-01'),
    zone: z
      .string()
      .refine((z) => DateTime.now().setZone(z).isValid, 'must be an IANA time zone')
      .default('UTC'),
    caps: z.array(z.number().int().positive()).min(1).max(366),
    /** One provider (`google`, `other:acme.com`), or omitted: the service overall. */
    provider: z
      .string()
      .regex(/^(google|microsoft|yahoo|apple|other:[^\s@]+)$/, 'must be google, microsoft, yahoo, apple or other:<domain>')
      .optional(),
  })
  .strict();
export type WarmupSchedule = z.infer<typeof warmupScheduleSchema>;

export interface WarmupDay {
  /** 1 on the start date; 0 or less before it. */
  day: number;
  /** The cap of the day, or null once the ramp is over. */
  cap: number | null;
  /** The calendar day in the schedule's zone, `2026-12-03`. */
  date: string;
}

export function warmupDay(s: Pick<WarmupSchedule, 'start' | 'zone' | 'caps'>, now: DateTime): WarmupDay {
  const zone = s.zone ?? 'UTC';
  const today = now.setZone(zone).startOf('day');
  const start = DateTime.fromISO(s.start, { zone }).startOf('day');
  // Calendar days, not 24-hour periods: rounded because a DST day is 23 or 25 hours long.
  const day = Math.round(today.diff(start, 'days').days) + 1;
  const cap = day > s.caps.length ? null : s.caps[Math.max(0, day - 1)]!;
  return { day, cap, date: today.toISODate()! };
}
