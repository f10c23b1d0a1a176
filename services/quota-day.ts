/**
 * Quota days are LOCAL: a service's daily quota resets at midnight in the service's own IANA time zone
 * (`quotaTimezone`), not at UTC midnight. A local day is not always 24 hours long (23 h on a
 * spring-forward day, 25 h on a fall-back day), and in some zones midnight itself does not exist on
 * the DST day (America/Santiago, America/Havana, Asia/Beirut jump from 00:00 to 01:00): the day then
 * starts at its first valid instant (01:00). So nothing here adds 24 hours or reads the real clock:
 * every function takes the current instant as a parameter, and local wall-clock times are turned into
 * instants by `resolveLocalTime`, which is deterministic (luxon's own resolution of an ambiguous local
 * time depends on the offset of the real current date, and shifts a skipped time by the size of the gap
 * rather than returning the first valid instant).
 */
import { DateTime, IANAZone } from 'luxon';

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;
const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** Zones already validated (luxon's IANAZone.isValidZone builds an Intl.DateTimeFormat on every call). */
const validZones = new Map<string, IANAZone>();

export function isValidZone(zone: string): boolean {
  if (validZones.has(zone)) return true;
  if (typeof zone !== 'string' || zone.length === 0 || !IANAZone.isValidZone(zone)) return false;
  validZones.set(zone, IANAZone.create(zone));
  return true;
}

/** The IANA zone named `zone`, or a clear error naming it. */
export function zoneOf(zone: string): IANAZone {
  const known = validZones.get(zone);
  if (known) return known;
  if (!isValidZone(zone)) throw new Error(`invalid IANA time zone: ${JSON.stringify(zone)}`);
  return IANAZone.create(zone);
}

/** `now` as epoch milliseconds (a luxon DateTime or a JS Date), or an error when it is not a valid instant. */
export function instantOf(now: DateTime | Date): number {
  const ms = now instanceof Date ? now.getTime() : DateTime.isDateTime(now) && now.isValid ? now.toMillis() : NaN;
  if (!Number.isFinite(ms)) throw new Error(`invalid instant: ${String(now)}`);
  return ms;
}

/**
 * The instant at which the wall clock of `zone` first shows the local time `localMs` (a wall-clock time
 * encoded as if it were UTC epoch milliseconds, e.g. `Date.UTC(2026, 2, 29, 2, 30)` for 2026-03-29 02:30).
 * - normal time: the one instant showing it;
 * - ambiguous time (fall back, shown twice): the EARLIER instant;
 * - skipped time (spring forward gap): the first valid instant after the gap, i.e. the transition itself
 *   (02:30 in Europe/Paris on 2026-03-29 resolves to 03:00 CEST, the moment the clocks jump).
 */
export function resolveLocalTime(zone: IANAZone, localMs: number): number {
  // Pure in (zone, localMs), and Intl-backed offsets are slow (~25 µs each): many recipients of one zone
  // share the same window openings, so remember the latest answers.
  const key = `${zone.name}|${localMs}`;
  const cached = resolved.get(key);
  if (cached !== undefined) return cached;
  const ts = computeLocalTime(zone, localMs);
  if (resolved.size >= RESOLVED_MAX) resolved.delete(resolved.keys().next().value as string);
  resolved.set(key, ts);
  return ts;
}

const RESOLVED_MAX = 10_000;
const resolved = new Map<string, number>();

function computeLocalTime(zone: IANAZone, localMs: number): number {
  // Every candidate instant localMs - offset lies within 15 h of localMs (offsets span -12 h..+14 h).
  const before = zone.offset(localMs - 15 * HOUR_MS);
  const after = zone.offset(localMs + 15 * HOUR_MS);
  if (before === after) {
    // Fast path (nearly always): no transition around, one offset, one instant.
    const ts = localMs - before * MINUTE_MS;
    if (zone.offset(ts) === before) return ts;
  }
  const offsets = new Set<number>([before, after, zone.offset(localMs)]);
  // The offsets actually in force at the candidate instants (catches a second transition in between).
  for (const o of [...offsets]) offsets.add(zone.offset(localMs - o * MINUTE_MS));
  let earliest: number | undefined;
  for (const o of offsets) {
    const ts = localMs - o * MINUTE_MS;
    if (zone.offset(ts) === o && (earliest === undefined || ts < earliest)) earliest = ts;
  }
  if (earliest !== undefined) return earliest;
  // A gap: the clock shows less than localMs before the transition and more after it. Binary search the
  // transition between the instant read with the later (larger) offset and the one read with the earlier.
  const wall = (ts: number): number => ts + zone.offset(ts) * MINUTE_MS;
  let lo = localMs - Math.max(...offsets) * MINUTE_MS;
  let hi = localMs - Math.min(...offsets) * MINUTE_MS;
  if (!(wall(lo) < localMs && wall(hi) >= localMs)) {
    throw new Error(`cannot resolve local time ${new Date(localMs).toISOString().slice(0, 16)} in ${zone.name}`);
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (wall(mid) >= localMs) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** The local calendar date of `ms` in `zone`, as the epoch ms of that date's UTC midnight (for calendar arithmetic). */
export function localDayOf(ms: number, zone: IANAZone): number {
  const wall = ms + zone.offset(ms) * MINUTE_MS;
  return Math.floor(wall / DAY_MS) * DAY_MS;
}

/** The ISO weekday (1 = Monday .. 7 = Sunday) of a date given as its UTC midnight. */
export function isoWeekdayOfDay(dayMs: number): number {
  return new Date(dayMs).getUTCDay() || 7;
}

/**
 * Per zone, the last answer of quotaDayOf and the instants it holds for: from the instant it was
 * computed at until the next local midnight, at most an hour on, and only when the offset is the
 * same at that hour's end (transitions in the tz database are never less than an hour apart, so
 * the offset is the same throughout). Every slot of every service asks for its quota day, and a
 * zone's offset costs an Intl lookup (~25 µs); with this, one lookup an hour.
 */
const dayCache = new Map<string, { from: number; to: number; day: string }>();
const DAY_CACHE_MAX = 1000;

/** The service-local calendar date (ISO 'yyyy-MM-dd') that `now` falls on in `zone`. */
export function quotaDayOf(now: DateTime | Date, zone: string): string {
  const ms = instantOf(now);
  const c = dayCache.get(zone);
  if (c && ms >= c.from && ms < c.to) return c.day;
  const iana = zoneOf(zone);
  const offset = iana.offset(ms);
  const dayMs = Math.floor((ms + offset * MINUTE_MS) / DAY_MS) * DAY_MS;
  const day = new Date(dayMs).toISOString().slice(0, 10);
  const to = Math.min(dayMs + DAY_MS - offset * MINUTE_MS, ms + HOUR_MS);
  if (dayCache.size >= DAY_CACHE_MAX) dayCache.clear();
  dayCache.set(zone, { from: ms, to: iana.offset(to - 1) === offset ? to : ms + 1, day });
  return day;
}

/**
 * The instant of the next local midnight after `now` in `zone` (when the quota resets), as a luxon
 * DateTime in `zone`. When midnight is skipped (the DST jump is at 00:00), it is the first valid instant
 * of the day (01:00); when midnight is shown twice, the earlier one.
 */
export function nextQuotaReset(now: DateTime | Date, zone: string): DateTime {
  const iana = zoneOf(zone);
  const ms = instantOf(now);
  const today = localDayOf(ms, iana);
  // One step is enough in every real zone; the bound only guards against a zone whose clock steps back
  // over midnight (the next midnight would then be the one after).
  for (let i = 1; i <= 3; i++) {
    const reset = resolveLocalTime(iana, today + i * DAY_MS);
    if (reset > ms) return DateTime.fromMillis(reset, { zone });
  }
  throw new Error(`no local midnight after ${new Date(ms).toISOString()} in ${zone}`);
}

/** True when `storedDay` (ISO date) is before the quota day of `now` in `zone`, i.e. used_quota must be reset before use. */
export function quotaDayExpired(storedDay: string, now: DateTime | Date, zone: string): boolean {
  const m = typeof storedDay === 'string' ? ISO_DATE.exec(storedDay) : null;
  const [y, mo, d] = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [NaN, NaN, NaN];
  const date = new Date(Date.UTC(y, mo - 1, d));
  if (!m || date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) {
    throw new Error(`invalid quota day ${JSON.stringify(storedDay)}: expected an ISO date yyyy-MM-dd`);
  }
  // ISO dates with four-digit years compare correctly as strings.
  return storedDay < quotaDayOf(now, zone);
}

/** Milliseconds from `now` until the next reset (>0). */
export function msUntilReset(now: DateTime | Date, zone: string): number {
  return nextQuotaReset(now, zone).toMillis() - instantOf(now);
}
