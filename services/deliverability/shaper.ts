/**
 * One sending service's deliverability state: for each mailbox provider it sends to, the adaptive
 * throttle (throttle.ts), its own pacing, the sends under way and the hourly, daily and warm-up
 * counts. The scheduler asks `blocked(provider)` before it picks a message for a provider, calls
 * `begin`/`end` around each send, and hands every failed reply to `onReply`.
 *
 * A pair is paced on its own only when it has a rate of its own or is slowed; otherwise the
 * service's pacer alone sets the pace. The service's rate and quota always bind the sum: a pair
 * can only be held back further, never sped up, by anything here.
 *
 * Caps (hourly, daily, warm-up) are exact across restarts, takeovers and processes when the
 * shaper has a cap ledger (cap-ledger.ts: units reserved from PostgreSQL before the send, as the
 * service's daily quota is); the scheduler always gives it one. Without a ledger (unit tests of
 * the throttle alone) the counts are the process's own, in memory. A pair with no cap counts its
 * sends in memory only, for status (no database work on the send path for it).
 */
import { DateTime } from 'luxon';
import { RuleSet, parseReply, type DeferralRule } from './rules.js';
import { advance, initialThrottle, onDeferral, reconfigure, type ThrottleState, type ThrottleMode } from './throttle.js';
import { warmupDay, type WarmupSchedule } from './warmup.js';
import type { CapKey, CapLedger, CapTaken } from './cap-ledger.js';
import { quotaDayOf } from '../quota-day.js';
import type { FullAdaptive, PairLimits, ResolvedShaping } from './shaping.js';
import type { Provider } from './providers.js';

/** `reserving`: a cap's units are being reserved from the database (the pair's first send of a window; brief). */
export type BlockReason = 'suspended' | 'rate' | 'concurrency' | 'hourly' | 'daily' | 'warmup' | 'reserving';

export interface Block {
  reason: BlockReason;
  /** When the pair may send again (ms since the epoch); null: when a send under way ends. */
  until: number | null;
}

export interface ReplyDecision {
  rule?: DeferralRule;
  /** What happened to the pair. */
  effect: 'none' | 'slowed' | 'held' | 'suspended' | 'retry' | 'fail';
  /** For a suspension: the message should wait until then (ms since the epoch). */
  retryAt?: number;
}

export interface ScopeStatus {
  provider: Provider;
  state: ThrottleMode;
  /** msg/s in force for the pair, null when it has no pace of its own (service pace only). */
  rate: number | null;
  /** msg/s configured for the pair (its own rate, else the service's). */
  configuredRate: number | null;
  suspendedUntil: string | null;
  lastDeferral: { rule: string; reply: string; at: string } | null;
  deferrals: number;
  inFlight: number;
  limits: PairLimits;
  sentThisHour: number;
  sentToday: number;
  warmup: { day: number; cap: number | null; sentToday: number } | null;
  blocked: BlockReason | null;
}

export interface WarmupStatus {
  /** null: the schedule covers the service overall. */
  provider: Provider | null;
  day: number;
  date: string;
  cap: number | null;
  sentToday: number;
}

interface Pair {
  provider: Provider;
  limits: PairLimits;
  throttle: ThrottleState;
  /** The pair's pacing schedule: the next send is due at this instant (ms). */
  nextDue: number;
  inFlight: number;
}

/** Counts per key (`hour:google`) that start again when their window (`482910`, `2026-11-30`) changes. */
class WindowCounts {
  private counts = new Map<string, { window: string; n: number }>();
  get(key: string, window: string): number {
    const c = this.counts.get(key);
    return c && c.window === window ? c.n : 0;
  }
  add(key: string, window: string, n = 1): void {
    const c = this.counts.get(key);
    if (c && c.window === window) c.n = Math.max(0, c.n + n);
    else if (n > 0) this.counts.set(key, { window, n });
  }
}

/** One cap that applies to a pair's send now, with its in-memory count and how it blocks. */
interface Cap {
  reason: 'hourly' | 'daily' | 'warmup';
  key: CapKey;
  /** The in-memory count's key and window. */
  local: [string, string];
}

/** What begin() took: the in-memory counts and the ledger's units, given back by end() when the send did not go. */
export interface Begun {
  local: [string, string][];
  units: CapTaken;
}

export interface ShaperOptions {
  shaping: ResolvedShaping;
  /** The service's own rate in msg/s, or null when it has none. */
  serviceRate: number | null;
  /** The service's quota time zone: "daily" caps count per day there. */
  quotaZone: string;
  /** The clock (luxon), injected in tests. */
  clock: () => DateTime;
  /** The caps' units in PostgreSQL (cap-ledger.ts); without it, caps count in memory. Keep the same one across update(). */
  ledger?: CapLedger;
}

export class ServiceShaper {
  private readonly pairs = new Map<Provider, Pair>();
  private readonly counts = new WindowCounts();
  private rules: RuleSet;
  private opts: ShaperOptions;

  constructor(opts: ShaperOptions) {
    this.opts = opts;
    this.rules = new RuleSet(opts.shaping.rules);
  }

  get adaptive(): FullAdaptive {
    return this.opts.shaping.adaptive;
  }

  /** The service was edited (rate, zone, settings): keeps each pair's state, rescaled. */
  update(opts: ShaperOptions): void {
    this.opts = opts;
    this.rules = new RuleSet(opts.shaping.rules);
    const now = this.nowMs();
    for (const p of this.pairs.values()) {
      p.limits = opts.shaping.limitsFor(p.provider);
      p.throttle = reconfigure(advance(p.throttle, now, this.adaptive), this.configuredRate(p.limits), this.adaptive);
    }
  }

  private nowMs(): number {
    return this.opts.clock().toMillis();
  }

  private configuredRate(limits: PairLimits): number {
    const own = limits.ratePerSecond;
    const svc = this.opts.serviceRate;
    if (own && svc) return Math.min(own, svc);
    return own ?? svc ?? this.adaptive.unlimitedBaseRate;
  }

  private pair(provider: Provider): Pair {
    let p = this.pairs.get(provider);
    if (!p) {
      const limits = this.opts.shaping.limitsFor(provider);
      const now = this.nowMs();
      p = { provider, limits, throttle: initialThrottle(this.configuredRate(limits), now), nextDue: now, inFlight: 0 };
      this.pairs.set(provider, p);
    }
    return p;
  }

  /** Does the provider's pair pace itself now (a rate of its own, or slowed)? */
  pacesOwn(provider: Provider): boolean {
    const p = this.pairs.get(provider);
    return p !== undefined && this.paceOf(p) !== null;
  }

  /** Does the pair pace itself (own rate, or slowed), and at what rate? */
  private paceOf(p: Pair): number | null {
    if (p.throttle.mode !== 'normal') return p.throttle.rate;
    return p.limits.ratePerSecond ?? null;
  }

  private windows(now: DateTime) {
    return { hour: `${Math.floor(now.toMillis() / 3_600_000)}`, day: quotaDayOf(now, this.opts.quotaZone) };
  }

  /** The caps that apply to a send to the pair now (none: no cap configured, nothing to count in the database). */
  private caps(p: Pair, now: DateTime): Cap[] {
    const { limits, provider } = p;
    const schedules = this.warmups(provider);
    if (limits.hourly === null && limits.daily === null && !schedules.length) return [];
    const out: Cap[] = [];
    const ms = now.toMillis();
    const w = this.windows(now);
    if (limits.hourly !== null) {
      const h = Math.floor(ms / 3_600_000);
      const bucket = new Date(h * 3_600_000).toISOString().slice(0, 13);
      out.push({
        reason: 'hourly',
        key: { scope: 'hour', provider, bucket, cap: limits.hourly, endsAt: (h + 1) * 3_600_000 },
        local: [`hour:${provider}`, w.hour],
      });
    }
    if (limits.daily !== null) {
      const key: CapKey = { scope: 'day', provider, bucket: w.day, cap: limits.daily, endsAt: endOfDay(now, this.opts.quotaZone) };
      out.push({ reason: 'daily', key, local: [`day:${provider}`, w.day] });
    }
    for (const schedule of schedules) {
      const d = this.warmupKey(schedule, now);
      if (d.cap === null) continue;
      const key: CapKey = {
        scope: 'warmup',
        provider: schedule.provider ?? '*',
        bucket: d.window,
        cap: d.cap,
        endsAt: endOfDay(now, schedule.zone),
      };
      // Two schedules of one scope and zone share a window: the smaller cap holds.
      const same = out.find((c) => c.key.scope === 'warmup' && c.key.provider === key.provider && c.key.bucket === key.bucket);
      if (same) same.key = { ...same.key, cap: Math.min(same.key.cap, key.cap) };
      else out.push({ reason: 'warmup', key, local: [d.key, d.window] });
    }
    return out;
  }

  /** Units reserved at once for a pair's caps: about one second of its sends. */
  private batchOf(p: Pair): number {
    return this.paceOf(p) ?? this.opts.serviceRate ?? this.adaptive.unlimitedBaseRate;
  }

  private warmups(provider: Provider): WarmupSchedule[] {
    return this.opts.shaping.warmup.filter((w) => w.provider === undefined || w.provider === provider);
  }

  private warmupKey(w: WarmupSchedule, now: DateTime) {
    const d = warmupDay(w, now);
    return { ...d, key: `warmup:${w.provider ?? '*'}`, window: `${w.zone}:${d.date}` };
  }

  /** Why the pair may not send now, or undefined when it may. Evaluates the recovery due first. */
  blocked(provider: Provider): Block | undefined {
    const p = this.pair(provider);
    const now = this.opts.clock();
    const ms = now.toMillis();
    p.throttle = advance(p.throttle, ms, this.adaptive);
    const t = p.throttle;
    if (t.mode === 'suspended') return { reason: 'suspended', until: t.until! };
    const { limits } = p;
    if (limits.concurrency !== null && p.inFlight >= limits.concurrency) return { reason: 'concurrency', until: null };
    const ledger = this.opts.ledger;
    for (const c of this.caps(p, now)) {
      if (!ledger) {
        if (this.counts.get(...c.local) >= c.key.cap) return { reason: c.reason, until: c.key.endsAt };
        continue;
      }
      const state = ledger.check(c.key, this.batchOf(p));
      if (state === 'full') return { reason: c.reason, until: c.key.endsAt };
      if (state === 'wait') return { reason: 'reserving', until: null };
    }
    const pace = this.paceOf(p);
    if (pace !== null && ms < p.nextDue) return { reason: 'rate', until: p.nextDue };
    return undefined;
  }

  /** Every provider this service knows that may not send now. */
  blockedProviders(): Map<Provider, Block> {
    const out = new Map<Provider, Block>();
    for (const provider of this.pairs.keys()) {
      const b = this.blocked(provider);
      if (b) out.set(provider, b);
    }
    return out;
  }

  /**
   * A send to the provider starts (blocked() said it may, in the same turn): counts it, takes
   * its caps' units, and moves the pair's pacing schedule on. Returns what it took, for end().
   */
  begin(provider: Provider): Begun {
    const p = this.pair(provider);
    const now = this.opts.clock();
    const ms = now.toMillis();
    p.inFlight++;
    const w = this.windows(now);
    const local: [string, string][] = [
      [`hour:${provider}`, w.hour],
      [`day:${provider}`, w.day],
    ];
    for (const schedule of this.warmups(provider)) {
      const d = this.warmupKey(schedule, now);
      if (!local.some(([k, win]) => k === d.key && win === d.window)) local.push([d.key, d.window]);
    }
    for (const [k, win] of local) this.counts.add(k, win);
    const caps = this.opts.ledger ? this.caps(p, now) : [];
    const units = caps.length
      ? this.opts.ledger!.take(
          caps.map((c) => c.key),
          this.batchOf(p),
        )
      : [];
    const pace = this.paceOf(p);
    // Virtual scheduling: the k-th send is due at t0 + k x interval; idle time banks no credit.
    if (pace !== null) p.nextDue = Math.max(ms, p.nextDue) + 1000 / pace;
    return { local, units };
  }

  /**
   * The send ended (whatever its outcome). `unsent`: what begin() returned, when the server did
   * not take the message (stopped or decided before the send, never reached, or refused with a
   * reply): its counts and cap units go back, as the quota unit does. A send whose outcome is
   * unknown (it may have reached the server) keeps them.
   */
  end(provider: Provider, unsent?: Begun): void {
    const p = this.pair(provider);
    p.inFlight = Math.max(0, p.inFlight - 1);
    if (!unsent) return;
    for (const [k, win] of unsent.local) this.counts.add(k, win, -1);
    this.opts.ledger?.giveBack(unsent.units);
  }

  /** Sends counted in a cap's window: by every engine (the ledger) when there is one, else this process's. */
  private countOf(p: Pair, local: [string, string], scope: CapKey['scope'], now: DateTime): number {
    const own = this.counts.get(...local);
    if (!this.opts.ledger) return own;
    const cap = this.caps(p, now).find((c) => c.key.scope === scope && c.local[0] === local[0]);
    return (cap && this.opts.ledger.sent(cap.key)) ?? own;
  }

  /** Matches a failed send's reply against the rules and feeds the pair's throttle. */
  onReply(provider: Provider, reply: string, responseCode?: number): ReplyDecision {
    const m = this.rules.match(parseReply(reply, responseCode), provider);
    if (!m) return { effect: 'none' };
    const { rule } = m;
    if (rule.action.type === 'retry' || rule.action.type === 'fail') return { rule, effect: rule.action.type };
    const p = this.pair(provider);
    const ms = this.nowMs();
    const before = advance(p.throttle, ms, this.adaptive);
    p.throttle = onDeferral(before, rule.action, ms, this.adaptive, { rule: rule.name, reply: m.reply.text.slice(0, 300) });
    if (p.throttle.mode === 'suspended') return { rule, effect: 'suspended', retryAt: p.throttle.until! };
    // A pair that just started pacing itself starts its schedule now.
    if (before.mode === 'normal') p.nextDue = Math.max(p.nextDue, ms + 1000 / p.throttle.rate);
    return { rule, effect: p.throttle.rate < before.rate ? 'slowed' : 'held' };
  }

  /** Each warm-up schedule of the service: today's day of the ramp, its cap and the sends counted. */
  warmupStatus(): WarmupStatus[] {
    const now = this.opts.clock();
    return this.opts.shaping.warmup.map((w) => {
      const d = this.warmupKey(w, now);
      const ledger = this.opts.ledger;
      const key: CapKey = { scope: 'warmup', provider: w.provider ?? '*', bucket: d.window, cap: d.cap ?? 0, endsAt: 0 };
      return {
        provider: (w.provider as Provider | undefined) ?? null,
        day: d.day,
        date: d.date,
        cap: d.cap,
        sentToday: (ledger && d.cap !== null ? ledger.sent(key) : undefined) ?? this.counts.get(d.key, d.window),
      };
    });
  }

  status(): ScopeStatus[] {
    const now = this.opts.clock();
    const w = this.windows(now);
    return [...this.pairs.values()].map((p) => {
      const block = this.blocked(p.provider);
      const t = p.throttle;
      const own = this.paceOf(p);
      const overall = this.warmups(p.provider)[0];
      const wd = overall ? this.warmupKey(overall, now) : undefined;
      return {
        provider: p.provider,
        state: t.mode,
        rate: own,
        configuredRate: p.limits.ratePerSecond ?? this.opts.serviceRate,
        suspendedUntil: t.until !== undefined ? DateTime.fromMillis(t.until).toUTC().toISO() : null,
        lastDeferral: t.last ? { rule: t.last.rule, reply: t.last.reply, at: DateTime.fromMillis(t.last.at).toUTC().toISO()! } : null,
        deferrals: t.deferrals,
        inFlight: p.inFlight,
        limits: p.limits,
        sentThisHour: this.countOf(p, [`hour:${p.provider}`, w.hour], 'hour', now),
        sentToday: this.countOf(p, [`day:${p.provider}`, w.day], 'day', now),
        warmup: wd ? { day: wd.day, cap: wd.cap, sentToday: this.countOf(p, [wd.key, wd.window], 'warmup', now) } : null,
        blocked: block?.reason ?? null,
      };
    });
  }
}

/** The next local midnight in `zone` after `now` (ms): where a daily window ends. */
function endOfDay(now: DateTime, zone: string): number {
  return now.setZone(zone).startOf('day').plus({ days: 1 }).toMillis();
}
