/**
 * Job schedules: an interval (`{ every: '3m' }` or milliseconds) or a local wall-clock time, daily
 * (`{ at: '02:00' }`) or weekly (`{ at: '03:00', weekday: 7 }`, ISO weekday 1 = Monday .. 7 = Sunday),
 * read in one IANA time zone. Pure functions of (schedule, instant): nothing here reads the clock.
 *
 * Local times go through `resolveLocalTime` (services/quota-day.ts), which settles DST the same way the
 * quota day and the send windows do: a time skipped by a spring-forward gap runs at the end of the gap
 * (02:30 in Europe/Paris on 2026-03-29 runs at 03:00 CEST), an ambiguous fall-back time runs once, at
 * its earlier occurrence (02:30 on 2026-10-25 runs at 02:30 CEST, not again at 02:30 CET), because the
 * next run is always searched strictly after the previous one, from the next calendar day on.
 */
import { isoWeekdayOfDay, localDayOf, resolveLocalTime, zoneOf } from '../quota-day.js';
import type { FieldIssue } from '../kernel/errors.js';

export type Schedule = { every: string | number } | { at: string; weekday?: number };

/** A validated schedule. */
export type ParsedSchedule =
  { kind: 'interval'; everyMs: number } | { kind: 'daily'; atMinutes: number } | { kind: 'weekly'; atMinutes: number; weekday: number };

const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;
const HH_MM = /^([01]\d|2[0-3]):([0-5]\d)$/;
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: MINUTE_MS, h: 60 * MINUTE_MS, d: DAY_MS };
const WEEKDAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
/** Intervals shorter than this would turn the single timer into a busy loop. */
export const MIN_INTERVAL_MS = 1000;

/** Milliseconds of a duration given as a number of ms or a string such as '90s', '3m', '1.5h', '2d'; NaN when invalid. */
export function durationMs(value: string | number): number {
  if (typeof value === 'number') return Number.isFinite(value) ? value : NaN;
  const m = typeof value === 'string' ? DURATION.exec(value.trim()) : null;
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : NaN;
}

/** Validates a schedule; returns the parsed form or the issues found (paths relative to the schedule). */
export function parseSchedule(s: unknown): { schedule: ParsedSchedule } | { issues: FieldIssue[] } {
  if (typeof s !== 'object' || s === null || Array.isArray(s)) {
    return { issues: [{ path: '', message: "must be { every: '3m' | ms } or { at: 'HH:mm', weekday?: 1..7 }" }] };
  }
  const o = s as Record<string, unknown>;
  const issues: FieldIssue[] = [];
  for (const key of Object.keys(o)) {
    if (!['every', 'at', 'weekday'].includes(key)) issues.push({ path: key, message: 'unknown property' });
  }
  if ('every' in o) {
    if ('at' in o || 'weekday' in o) issues.push({ path: 'every', message: 'cannot be combined with at/weekday' });
    const ms = durationMs(o.every as string | number);
    if (!(ms >= MIN_INTERVAL_MS)) {
      issues.push({
        path: 'every',
        message: `must be a duration of at least 1s ('90s', '3m', '2h', '1d' or milliseconds), got ${JSON.stringify(o.every)}`,
      });
    }
    return issues.length ? { issues } : { schedule: { kind: 'interval', everyMs: ms } };
  }
  const at = o.at;
  const hm = typeof at === 'string' ? HH_MM.exec(at) : null;
  if (!hm) issues.push({ path: 'at', message: `must be a local time HH:mm (00:00 to 23:59), got ${JSON.stringify(at)}` });
  const wd = o.weekday;
  if (wd !== undefined && !(typeof wd === 'number' && Number.isInteger(wd) && wd >= 1 && wd <= 7)) {
    issues.push({ path: 'weekday', message: `must be an ISO weekday from 1 (Monday) to 7 (Sunday), got ${JSON.stringify(wd)}` });
  }
  if (issues.length || !hm) return { issues };
  const atMinutes = Number(hm[1]) * 60 + Number(hm[2]);
  return { schedule: wd === undefined ? { kind: 'daily', atMinutes } : { kind: 'weekly', atMinutes, weekday: wd as number } };
}

/**
 * The first run strictly after `afterMs`. For an interval, runs keep the cadence of `anchorMs` (the
 * previous planned run, or the start): anchor + k * every for the smallest k giving an instant after
 * `afterMs`, so a late tick does not shift every later run.
 */
export function nextRun(s: ParsedSchedule, zone: string, afterMs: number, anchorMs: number = afterMs): number {
  if (s.kind === 'interval') {
    if (anchorMs > afterMs) return anchorMs;
    return anchorMs + (Math.floor((afterMs - anchorMs) / s.everyMs) + 1) * s.everyMs;
  }
  const iana = zoneOf(zone);
  // From the day before (a run late on the previous local day may still be ahead in another offset)
  // to two weeks ahead: a weekly time exists at least once in any 8 consecutive days.
  const first = localDayOf(afterMs, iana) - DAY_MS;
  for (let i = 0; i <= 15; i++) {
    const day = first + i * DAY_MS;
    if (s.kind === 'weekly' && isoWeekdayOfDay(day) !== s.weekday) continue;
    const at = resolveLocalTime(iana, day + s.atMinutes * MINUTE_MS);
    if (at > afterMs) return at;
  }
  throw new Error(`no run of ${describeSchedule(s, zone)} after ${new Date(afterMs).toISOString()}`);
}

/** A person's description: 'every 3m', 'daily at 02:00 (Europe/Paris)', 'weekly on Sunday at 03:00 (UTC)'. */
export function describeSchedule(s: ParsedSchedule, zone: string): string {
  if (s.kind === 'interval') return `every ${formatDuration(s.everyMs)}`;
  const hhmm = `${String(Math.floor(s.atMinutes / 60)).padStart(2, '0')}:${String(s.atMinutes % 60).padStart(2, '0')}`;
  return s.kind === 'daily' ? `daily at ${hhmm} (${zone})` : `weekly on ${WEEKDAYS[s.weekday - 1]} at ${hhmm} (${zone})`;
}

function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', DAY_MS],
    ['h', 60 * MINUTE_MS],
    ['m', MINUTE_MS],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
