/**
 * Send windows are evaluated in the RECIPIENT's local time, so "09:00-18:00 on weekdays" means office
 * hours wherever the recipient lives. Each listed day the window opens at `start` and closes at `end`
 * (the next day when start > end: 22:00-06:00 crosses midnight, and `days` names the day it opens).
 * Local times become instants through `resolveLocalTime`, which handles DST deterministically: a start
 * skipped by a spring-forward gap opens the window at the first valid instant after the gap (the
 * transition), an ambiguous fall-back time means its earlier occurrence. The window of one day is then
 * the half-open interval of instants [open, close): once open it stays open until it closes, even if the
 * clock is set back meanwhile. Every function takes the current instant as a parameter.
 */
import { DateTime } from 'luxon';
import { instantOf, isoWeekdayOfDay, localDayOf, resolveLocalTime, zoneOf } from './quota-day.js';

export interface SendWindow {
  start: string;
  end: string;
  days?: number[];
}

export interface WindowIssue {
  path: string;
  message: string;
}

const HH_MM = /^([01]\d|2[0-3]):([0-5]\d)$/;
const MINUTE_MS = 60_000;
const DAY_MS = 24 * 60 * MINUTE_MS;
/**
 * Window openings examined, from the day before `now` (a window crossing midnight) to DAYS_AHEAD days
 * ahead. A window on one weekday that lies inside a DST gap that week (Sundays 02:00-02:30 in New York
 * on the day clocks spring forward) next opens two weeks after its last opening, so one week plus a day
 * is not enough. Three weeks plus a day covers a gap two weeks running, which no zone has.
 */
const DAYS_BEHIND = 1;
const DAYS_AHEAD = 22;

function minutesOf(hhmm: string): number {
  const m = HH_MM.exec(hhmm);
  if (!m) throw new Error(`invalid time ${JSON.stringify(hhmm)}: expected HH:mm`);
  return Number(m[1]) * 60 + Number(m[2]);
}

/** Validates a window; returns a list of {path, message} issues (empty when valid): bad HH:mm, start === end, days out of 1..7 or duplicated or empty. */
export function validateSendWindow(w: unknown): WindowIssue[] {
  if (typeof w !== 'object' || w === null || Array.isArray(w)) return [{ path: '', message: 'must be an object' }];
  const issues: WindowIssue[] = [];
  const obj = w as Record<string, unknown>;
  for (const key of ['start', 'end'] as const) {
    const v = obj[key];
    if (v === undefined) issues.push({ path: key, message: 'is required' });
    else if (typeof v !== 'string' || !HH_MM.test(v))
      issues.push({ path: key, message: `must be a time HH:mm (00:00 to 23:59), got ${JSON.stringify(v)}` });
  }
  if (typeof obj.start === 'string' && obj.start === obj.end && HH_MM.test(obj.start)) {
    issues.push({ path: 'end', message: 'must differ from start' });
  }
  if (obj.days !== undefined) {
    if (!Array.isArray(obj.days)) {
      issues.push({ path: 'days', message: 'must be an array of ISO weekdays (1 = Monday .. 7 = Sunday)' });
    } else if (obj.days.length === 0) {
      issues.push({ path: 'days', message: 'must not be empty (omit it for every day)' });
    } else {
      const seen = new Set<unknown>();
      obj.days.forEach((d: unknown, i) => {
        if (typeof d !== 'number' || !Number.isInteger(d) || d < 1 || d > 7) {
          issues.push({ path: `days.${i}`, message: `must be an ISO weekday from 1 (Monday) to 7 (Sunday), got ${JSON.stringify(d)}` });
        } else if (seen.has(d)) {
          issues.push({ path: `days.${i}`, message: `duplicate weekday ${d}` });
        }
        seen.add(d);
      });
    }
  }
  for (const key of Object.keys(obj)) {
    if (key !== 'start' && key !== 'end' && key !== 'days') issues.push({ path: key, message: 'unknown property' });
  }
  return issues;
}

interface Interval {
  open: number;
  close: number;
}

/**
 * The first interval [open, close) (epoch ms) of the window that has not closed yet at `nowMs`, among
 * the openings from the local day before `nowMs` (a window crossing midnight may still be open) to
 * DAYS_AHEAD days after it; undefined when there is none. Openings are in chronological order and
 * disjoint. A day where the window lies entirely inside a DST gap (it never shows on the clock) has no
 * interval.
 */
function currentOrNext(window: SendWindow, zone: string, nowMs: number): Interval | undefined {
  const issues = validateSendWindow(window);
  if (issues.length > 0) {
    throw new Error(`invalid send window: ${issues.map((i) => `${i.path || '(window)'} ${i.message}`).join('; ')}`);
  }
  const iana = zoneOf(zone);
  const start = minutesOf(window.start);
  const end = minutesOf(window.end);
  const crossesMidnight = start > end;
  const days = window.days === undefined ? undefined : new Set(window.days);
  const today = localDayOf(nowMs, iana);
  for (let i = -DAYS_BEHIND; i <= DAYS_AHEAD; i++) {
    const dayMs = today + i * DAY_MS;
    if (days && !days.has(isoWeekdayOfDay(dayMs))) continue;
    const closeDayMs = crossesMidnight ? dayMs + DAY_MS : dayMs;
    const close = resolveLocalTime(iana, closeDayMs + end * MINUTE_MS);
    if (close <= nowMs) continue;
    const open = resolveLocalTime(iana, dayMs + start * MINUTE_MS);
    if (open < close) return { open, close };
  }
  return undefined;
}

/** The earliest instant >= now at which a message may be sent: `now` itself when now is inside the window, else the start of the next window. Returned as a DateTime in `zone`. */
export function nextSendTime(window: SendWindow, zone: string, now: DateTime | Date): DateTime {
  const nowMs = instantOf(now);
  const iv = currentOrNext(window, zone, nowMs);
  if (!iv) throw new Error(`send window ${window.start}-${window.end} does not open within ${DAYS_AHEAD} days in ${zone}`);
  return DateTime.fromMillis(Math.max(nowMs, iv.open), { zone });
}

/** True when `now` is inside the window in `zone`. */
export function isInsideWindow(window: SendWindow, zone: string, now: DateTime | Date): boolean {
  return windowEnd(window, zone, now) !== undefined;
}

/** The instant the window containing `now` closes (undefined when now is outside). */
export function windowEnd(window: SendWindow, zone: string, now: DateTime | Date): DateTime | undefined {
  const nowMs = instantOf(now);
  const iv = currentOrNext(window, zone, nowMs);
  return iv && iv.open <= nowMs ? DateTime.fromMillis(iv.close, { zone }) : undefined;
}
