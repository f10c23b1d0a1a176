/**
 * The completion forecast of a campaign: when its remaining messages are expected to be sent, from
 * the rates, caps, windows and warm-up in force. A pure function of its input (the clock is `now`):
 * services/campaigns.ts gathers the input, the unit tests drive it with hand-made inputs.
 *
 * The model is a fluid simulation, event to event. Between two events every rate is constant:
 *
 *   - each usable service sends at its rate (1 / sendingRate a second; `unlimitedBaseRate`, 50/s by
 *     default, for a service with no wait between sends) while its daily quota and any overall
 *     warm-up cap of the day last;
 *   - the service's ring shares that rate equally between the users with work on it, then equally
 *     between each user's campaigns: the campaign's fair share;
 *   - the campaign's share goes to its remaining messages whose send window is open (per recipient
 *     zone) and whose (service, provider) pair may send (not suspended, under its hourly, daily and
 *     warm-up caps), in proportion to what each provider has left, each provider at most at its
 *     pair's pace (its own rate, or the slowed rate of its throttle); what a provider cannot take
 *     goes to the others (as the pick sends another provider's message), and what the campaign
 *     cannot use goes to the other users;
 *   - a slowed pair recovers step by step as the throttle does when no more deferrals come
 *     (throttle.ts `advance`), a suspended one resumes at its end.
 *
 * Events: a bucket of messages runs out, another campaign finishes, a quota or cap runs out or
 * resets (the quota day in the service's zone, the clock hour, the warm-up day in its zone), a send
 * window opens or closes, a suspension ends, a slowed pair steps up. The result is an estimate,
 * not a promise; its assumptions are listed in docs/deliverability.md ("Completion forecast").
 */
import { DateTime } from 'luxon';
import { advance, type AdaptiveSettings, type ThrottleMode, type ThrottleState } from './deliverability/throttle.js';
import { warmupDay, type WarmupDay, type WarmupSchedule } from './deliverability/warmup.js';
import type { PairLimits } from './deliverability/shaping.js';
import { nextQuotaReset, quotaDayOf } from './quota-day.js';
import { nextSendTime, windowEnd, type SendWindow } from './send-window.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** Quantities below this (messages) count as none: the simulation is in floating point. */
const EPS = 1e-6;

/** A (service, provider) pair's live throttle and counts (the scheduler's status), when known. */
export interface ForecastPair {
  state: ThrottleMode;
  /** msg/s in force (the slowed rate; the configured one when normal). */
  rate: number;
  /** End of a suspension (ms since the epoch). */
  suspendedUntil: number | null;
  /** Recovery steps count from here (the last deferral, or the end of a suspension), ms. */
  quietSince: number;
  sentThisHour: number;
  sentToday: number;
}

export interface ForecastService {
  id: number;
  /** Seconds between sends (the service's `sendingRate`); 0: no wait. */
  interval: number;
  dailyQuota: number;
  /** Used of today's quota (0 when the stored quota day is over). */
  usedToday: number;
  quotaZone: string;
  /** The pair limits for a provider (resolved shaping: defaults, install file, service). */
  limits: (provider: string) => PairLimits;
  adaptive: AdaptiveSettings & { unlimitedBaseRate: number };
  /** Warm-up schedules with the sends counted today under each. */
  warmup: { schedule: WarmupSchedule; sentToday: number }[];
  /** Live pair states by provider; a provider not here is normal with nothing counted. */
  pairs: Record<string, ForecastPair>;
  /** Other sending campaigns whose user may use this service, with the messages they have left. */
  others: { campaignId: number; userId: number; remaining: number }[];
}

export interface ForecastInput {
  now: DateTime;
  /** The campaign does not send before then (a scheduled campaign); default now. */
  startAt?: DateTime;
  /** The campaign's user (their other campaigns share their turns). */
  userId: number;
  /** Messages left, by provider (null: not known yet, before generation) and recipient zone. */
  remaining: { provider: string | null; zone: string; count: number }[];
  /** The campaign's send window; each bucket's `zone` is where it is read. */
  window: SendWindow | null;
  services: ForecastService[];
  /** Give up (completesAt null) past this many days. Default 60. */
  horizonDays?: number;
  /** Give up past this many events. Default 20,000. */
  maxSteps?: number;
}

export type ForecastReason = 'no_service' | 'blocked' | 'beyond_horizon';

export interface Forecast {
  /** The expected completion, or null when nothing can send the rest (`reason`). */
  completesAt: DateTime | null;
  reason: ForecastReason | null;
  /** The campaign's rate at the start of the forecast, msg/s (0 while it waits). */
  ratePerSecond: number;
  /** Events simulated (the cost of the forecast). */
  steps: number;
}

interface Bucket {
  provider: string | null;
  zone: string;
  n: number;
}

/** Counts per key that start again when their window (an hour, a date) changes, as the shaper's. */
class WindowCounts {
  private readonly counts = new Map<string, { window: string; n: number }>();
  get(key: string, window: string): number {
    const c = this.counts.get(key);
    return c && c.window === window ? c.n : 0;
  }
  add(key: string, window: string, x: number): void {
    const c = this.counts.get(key);
    if (c && c.window === window) c.n += x;
    else this.counts.set(key, { window, n: x });
  }
}

interface ServiceSim {
  s: ForecastService;
  quotaDay: string;
  used: number;
  counts: WindowCounts;
  throttles: Map<string, ThrottleState>;
  others: { userId: number; n: number }[];
}

function configuredRate(s: ForecastService, limits: PairLimits): number {
  const own = limits.ratePerSecond;
  const svc = s.interval > 0 ? 1 / s.interval : null;
  if (own && svc) return Math.min(own, svc);
  return own ?? svc ?? s.adaptive.unlimitedBaseRate;
}

function seedThrottle(s: ForecastService, provider: string, pair: ForecastPair | undefined, now: number): ThrottleState {
  const configured = configuredRate(s, s.limits(provider));
  if (!pair || pair.state === 'normal') return { mode: 'normal', configured, rate: configured, quietSince: now, deferrals: 0 };
  const floor = configured * s.adaptive.floorFraction;
  const rate = Math.min(configured, Math.max(floor, pair.rate));
  if (pair.state === 'suspended' && pair.suspendedUntil !== null) {
    return { mode: 'suspended', configured, rate, until: pair.suspendedUntil, quietSince: pair.suspendedUntil, deferrals: 0 };
  }
  return { mode: 'slowed', configured, rate, quietSince: pair.quietSince, deferrals: 0 };
}

/** Splits `total` between weights, each at most its cap; what a capped one cannot take goes to the rest. */
export function waterFill(weights: number[], caps: number[], total: number): number[] {
  const out = weights.map(() => 0);
  let open = weights.map((w, i) => (w > 0 && caps[i]! > 0 ? i : -1)).filter((i) => i >= 0);
  let left = total;
  while (open.length && left > EPS) {
    const sum = open.reduce((a, i) => a + weights[i]!, 0);
    const capped = open.filter((i) => out[i]! + (left * weights[i]!) / sum >= caps[i]! - 1e-12);
    if (!capped.length) {
      for (const i of open) out[i] = out[i]! + (left * weights[i]!) / sum;
      break;
    }
    for (const i of capped) {
      left -= caps[i]! - out[i]!;
      out[i] = caps[i]!;
    }
    open = open.filter((i) => !capped.includes(i));
  }
  return out;
}

/**
 * The remaining messages as buckets, with every provider that nothing limits on any service (no
 * rate, hourly or daily cap or warm-up of its own, not slowed or suspended now) merged into one
 * provider-less group per zone: they behave alike in the model, and a list to many custom domains
 * (one `other:<domain>` each) would otherwise cost a bucket per domain at every event.
 */
function mergeUnlimited(input: ForecastInput): Bucket[] {
  const free = (provider: string) =>
    input.services.every((s) => {
      const l = s.limits(provider);
      const pair = s.pairs[provider];
      return (
        l.ratePerSecond === null &&
        l.hourly === null &&
        l.daily === null &&
        (!pair || pair.state === 'normal') &&
        !s.warmup.some((w) => w.schedule.provider === provider)
      );
    });
  const merged = new Map<string, Bucket>();
  for (const b of input.remaining) {
    if (!(b.count > 0)) continue;
    const provider = b.provider !== null && free(b.provider) ? null : b.provider;
    const key = `${provider ?? ''}|${b.zone}`;
    const m = merged.get(key);
    if (m) m.n += b.count;
    else merged.set(key, { provider, zone: b.zone, n: b.count });
  }
  return [...merged.values()];
}

const hourOf = (t: number) => `${Math.floor(t / HOUR_MS)}`;

/**
 * Calendar days, send windows and warm-up days per zone, remembered until they change: time only
 * moves forward in the simulation, and a zone offset costs an Intl call (luxon's partsOffset was
 * three quarters of the time before these caches, for 100 buckets over 280 events).
 */
class Calendar {
  private readonly days = new Map<string, { date: string; end: number }>();
  private readonly windows = new Map<string, { open: boolean; until: number }>();
  private readonly warmups = new Map<string, WarmupDay>();

  /** The local date of `t` in `zone` and the instant the next one starts (its midnight, or the first valid instant). */
  day(zone: string, t: number): { date: string; end: number } {
    let d = this.days.get(zone);
    if (!d || t >= d.end) {
      d = { date: quotaDayOf(new Date(t), zone), end: nextQuotaReset(new Date(t), zone).toMillis() };
      this.days.set(zone, d);
    }
    return d;
  }

  /** Is the window open at `t` in `zone`, and until when does that hold. */
  window(w: SendWindow, zone: string, t: number): { open: boolean; until: number } {
    let c = this.windows.get(zone);
    if (!c || t >= c.until) {
      const closes = windowEnd(w, zone, new Date(t));
      c = closes ? { open: true, until: closes.toMillis() } : { open: false, until: nextSendTime(w, zone, new Date(t)).toMillis() };
      this.windows.set(zone, c);
    }
    return c;
  }

  warmup(i: number, schedule: WarmupSchedule, t: number): WarmupDay & { end: number } {
    const day = this.day(schedule.zone ?? 'UTC', t);
    const key = `${i}:${day.date}`;
    let d = this.warmups.get(key);
    if (!d) {
      d = warmupDay(schedule, DateTime.fromMillis(t));
      this.warmups.set(key, d);
    }
    return { ...d, end: day.end };
  }
}

export function forecastCompletion(input: ForecastInput): Forecast {
  const now = input.now.toMillis();
  let t = Math.max(now, input.startAt?.toMillis() ?? now);
  const end = now + (input.horizonDays ?? 60) * DAY_MS;
  const maxSteps = input.maxSteps ?? 20_000;
  const buckets = mergeUnlimited(input);
  const done = (steps: number, rate: number): Forecast => ({
    completesAt: DateTime.fromMillis(t, { zone: input.now.zone }),
    reason: null,
    ratePerSecond: rate,
    steps,
  });
  const none = (reason: ForecastReason, steps: number, rate = 0): Forecast => ({ completesAt: null, reason, ratePerSecond: rate, steps });
  if (!buckets.length) return done(0, 0);
  if (!input.services.length) return none('no_service', 0);

  const cal = new Calendar();
  const byProvider = new Map<string | null, number[]>();
  buckets.forEach((b, j) => byProvider.set(b.provider, [...(byProvider.get(b.provider) ?? []), j]));
  const sims: ServiceSim[] = input.services.map((s) => {
    const counts = new WindowCounts();
    const throttles = new Map<string, ThrottleState>();
    for (const [provider, pair] of Object.entries(s.pairs)) {
      counts.add(`h:${provider}`, hourOf(now), pair.sentThisHour);
      counts.add(`d:${provider}`, cal.day(s.quotaZone, now).date, pair.sentToday);
    }
    for (const b of buckets) if (b.provider !== null) throttles.set(b.provider, seedThrottle(s, b.provider, s.pairs[b.provider], now));
    s.warmup.forEach((w, i) => counts.add(`w:${i}`, cal.warmup(i, w.schedule, now).date, w.sentToday));
    return {
      s,
      quotaDay: cal.day(s.quotaZone, now).date,
      used: s.usedToday,
      counts,
      throttles,
      others: s.others.filter((o) => o.remaining > 0).map((o) => ({ userId: o.userId, n: o.remaining })),
    };
  });

  let firstRate: number | undefined;
  for (let step = 1; step <= maxSteps; step++) {
    const events: number[] = [];
    // Send windows, per zone: open now or not, and when that changes.
    const open = new Map<string, boolean>();
    for (const b of buckets) {
      if (b.n <= 0 || open.has(b.zone)) continue;
      if (!input.window) {
        open.set(b.zone, true);
        continue;
      }
      const w = cal.window(input.window, b.zone, t);
      open.set(b.zone, w.open);
      events.push(w.until);
    }
    const rates = buckets.map(() => 0);
    const drains: { sim: ServiceSim; total: number; perProvider: Map<string | null, number>; othersRates: number[] }[] = [];
    for (const sim of sims) {
      const { s } = sim;
      const { date: day, end: dayEnd } = cal.day(s.quotaZone, t);
      if (day !== sim.quotaDay) {
        sim.quotaDay = day;
        sim.used = 0;
      }
      events.push(dayEnd);
      let rate = s.interval > 0 ? 1 / s.interval : s.adaptive.unlimitedBaseRate;
      const quotaLeft = s.dailyQuota - sim.used;
      if (quotaLeft <= EPS) rate = 0;
      // Warm-up caps: an overall one holds the whole service, a provider's one its pair.
      const warmLeft = s.warmup.map((w, i) => {
        const d = cal.warmup(i, w.schedule, t);
        if (d.cap !== null || d.day < 1) events.push(d.end);
        return d.cap === null ? Infinity : d.cap - sim.counts.get(`w:${i}`, d.date);
      });
      s.warmup.forEach((w, i) => {
        if (w.schedule.provider === undefined && warmLeft[i]! <= EPS) rate = 0;
      });
      // Campaigns with work per user (this campaign's user counts it too).
      const perUser = new Map<number, number>([[input.userId, 1]]);
      let active = 0;
      for (const o of sim.others) {
        if (o.n <= EPS) continue;
        active++;
        perUser.set(o.userId, (perUser.get(o.userId) ?? 0) + 1);
      }
      const share = rate / perUser.size / perUser.get(input.userId)!;
      // The campaign's share among its open providers, each at most at its pair's pace.
      const providers = new Map<string | null, { weight: number; cap: number }>();
      buckets.forEach((b) => {
        if (b.n <= EPS || !open.get(b.zone)) return;
        const p = providers.get(b.provider) ?? { weight: 0, cap: Infinity };
        p.weight += b.n;
        providers.set(b.provider, p);
      });
      for (const [provider, p] of providers) {
        if (provider === null) continue;
        const limits = s.limits(provider);
        let th = sim.throttles.get(provider)!;
        th = advance(th, t, s.adaptive);
        sim.throttles.set(provider, th);
        if (th.mode === 'suspended') events.push(th.until!);
        else if (th.mode === 'slowed') events.push(th.quietSince + s.adaptive.quietMs);
        const blocked =
          th.mode === 'suspended' ||
          (limits.hourly !== null && limits.hourly - sim.counts.get(`h:${provider}`, hourOf(t)) <= EPS) ||
          (limits.daily !== null && limits.daily - sim.counts.get(`d:${provider}`, day) <= EPS) ||
          s.warmup.some((w, i) => w.schedule.provider === provider && warmLeft[i]! <= EPS);
        if (limits.hourly !== null) events.push((Math.floor(t / HOUR_MS) + 1) * HOUR_MS);
        p.cap = blocked ? 0 : th.mode !== 'normal' ? th.rate : (limits.ratePerSecond ?? Infinity);
      }
      const list = [...providers.entries()];
      const alloc = waterFill(
        list.map(([, p]) => p.weight),
        list.map(([, p]) => p.cap),
        share,
      );
      const perProvider = new Map<string | null, number>();
      list.forEach(([provider, p], i) => {
        const a = alloc[i]!;
        if (a <= 0) return;
        perProvider.set(provider, a);
        for (const j of byProvider.get(provider)!) {
          const b = buckets[j]!;
          if (b.n > EPS && open.get(b.zone)) rates[j]! += (a * b.n) / p.weight;
        }
      });
      const mineRate = alloc.reduce((x, y) => x + y, 0);
      // The other campaigns: each its ring share (the service split between users, then between
      // the user's campaigns), plus an equal part of what this campaign could not use.
      const leftover = active ? (share - mineRate) / active : 0;
      const otherRate = (userId: number) => rate / perUser.size / perUser.get(userId)! + leftover;
      const othersRate = active ? rate - mineRate : 0;
      const total = mineRate + othersRate;
      // When something runs out at these rates.
      if (total > 0) events.push(t + (quotaLeft / total) * 1000);
      s.warmup.forEach((w, i) => {
        const drain = w.schedule.provider === undefined ? total : (perProvider.get(w.schedule.provider) ?? 0);
        if (drain > 0 && Number.isFinite(warmLeft[i])) events.push(t + (warmLeft[i]! / drain) * 1000);
      });
      for (const [provider, a] of perProvider) {
        if (provider === null) continue;
        const limits = s.limits(provider);
        if (limits.hourly !== null) events.push(t + ((limits.hourly - sim.counts.get(`h:${provider}`, hourOf(t))) / a) * 1000);
        if (limits.daily !== null) events.push(t + ((limits.daily - sim.counts.get(`d:${provider}`, day)) / a) * 1000);
      }
      const othersRates = sim.others.map((o) => (o.n > EPS ? otherRate(o.userId) : 0));
      sim.others.forEach((o, i) => {
        if (othersRates[i]! > 0) events.push(t + (o.n / othersRates[i]!) * 1000);
      });
      drains.push({ sim, total, perProvider, othersRates });
    }
    buckets.forEach((b, j) => {
      if (rates[j]! > 0) events.push(t + (b.n / rates[j]!) * 1000);
    });
    const rateNow = rates.reduce((a, b) => a + b, 0);
    firstRate ??= t === now ? rateNow : 0;
    const next = Math.min(...events.filter((e) => e > t + 1e-3));
    if (!Number.isFinite(next)) return none('blocked', step, firstRate);
    if (next > end) return none('beyond_horizon', step, firstRate);
    const dt = (next - t) / 1000;
    buckets.forEach((b, j) => {
      b.n -= rates[j]! * dt;
      if (b.n < EPS) b.n = 0;
    });
    for (const { sim, total, perProvider, othersRates } of drains) {
      const { s } = sim;
      sim.used += total * dt;
      for (const [provider, a] of perProvider) {
        if (provider === null) continue;
        sim.counts.add(`h:${provider}`, hourOf(t), a * dt);
        sim.counts.add(`d:${provider}`, sim.quotaDay, a * dt);
      }
      s.warmup.forEach((w, i) => {
        const drain = w.schedule.provider === undefined ? total : (perProvider.get(w.schedule.provider) ?? 0);
        if (drain > 0) sim.counts.add(`w:${i}`, cal.warmup(i, w.schedule, t).date, drain * dt);
      });
      sim.others.forEach((o, i) => {
        o.n -= othersRates[i]! * dt;
        if (o.n < EPS) o.n = 0;
      });
    }
    t = next;
    if (buckets.every((b) => b.n <= EPS)) return done(step, firstRate);
  }
  return none('beyond_horizon', maxSteps, firstRate);
}
