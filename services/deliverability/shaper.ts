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
 * The counts are the process's own (kept in memory): with several engine processes on one
 * service each holds its own hourly and daily counts, and a restart starts them afresh. The
 * service's own daily quota, kept in PostgreSQL, is exact regardless.
 */
import { DateTime } from 'luxon';
import { RuleSet, parseReply, type DeferralRule } from './rules.js';
import { advance, initialThrottle, onDeferral, reconfigure, type ThrottleState, type ThrottleMode } from './throttle.js';
import { warmupDay, type WarmupSchedule } from './warmup.js';
import type { FullAdaptive, PairLimits, ResolvedShaping } from './shaping.js';
import type { Provider } from './providers.js';

export type BlockReason = 'suspended' | 'rate' | 'concurrency' | 'hourly' | 'daily' | 'warmup';

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
  add(key: string, window: string): void {
    const c = this.counts.get(key);
    if (c && c.window === window) c.n++;
    else this.counts.set(key, { window, n: 1 });
  }
}

export interface ShaperOptions {
  shaping: ResolvedShaping;
  /** The service's own rate in msg/s, or null when it has none. */
  serviceRate: number | null;
  /** The service's quota time zone: "daily" caps count per day there. */
  quotaZone: string;
  /** The clock (luxon), injected in tests. */
  clock: () => DateTime;
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

  /** Does the pair pace itself (own rate, or slowed), and at what rate? */
  private paceOf(p: Pair): number | null {
    if (p.throttle.mode !== 'normal') return p.throttle.rate;
    return p.limits.ratePerSecond ?? null;
  }

  private windows(now: DateTime) {
    return { hour: `${Math.floor(now.toMillis() / 3_600_000)}`, day: `${now.setZone(this.opts.quotaZone).toISODate()}` };
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
    const w = this.windows(now);
    if (limits.hourly !== null && this.counts.get(`hour:${provider}`, w.hour) >= limits.hourly) {
      return { reason: 'hourly', until: (Math.floor(ms / 3_600_000) + 1) * 3_600_000 };
    }
    const endOfDay = (zone: string) => now.setZone(zone).startOf('day').plus({ days: 1 }).toMillis();
    if (limits.daily !== null && this.counts.get(`day:${provider}`, w.day) >= limits.daily) {
      return { reason: 'daily', until: endOfDay(this.opts.quotaZone) };
    }
    for (const schedule of this.warmups(provider)) {
      const d = this.warmupKey(schedule, now);
      if (d.cap !== null && this.counts.get(d.key, d.window) >= d.cap) return { reason: 'warmup', until: endOfDay(schedule.zone) };
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

  /** A send to the provider starts: counts it and moves the pair's pacing schedule on. */
  begin(provider: Provider): void {
    const p = this.pair(provider);
    const now = this.opts.clock();
    const ms = now.toMillis();
    p.inFlight++;
    const w = this.windows(now);
    this.counts.add(`hour:${provider}`, w.hour);
    this.counts.add(`day:${provider}`, w.day);
    for (const schedule of this.warmups(provider)) {
      const d = this.warmupKey(schedule, now);
      this.counts.add(d.key, d.window);
    }
    const pace = this.paceOf(p);
    // Virtual scheduling: the k-th send is due at t0 + k x interval; idle time banks no credit.
    if (pace !== null) p.nextDue = Math.max(ms, p.nextDue) + 1000 / pace;
  }

  /** The send ended (whatever its outcome). */
  end(provider: Provider): void {
    const p = this.pair(provider);
    p.inFlight = Math.max(0, p.inFlight - 1);
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
      return {
        provider: (w.provider as Provider | undefined) ?? null,
        day: d.day,
        date: d.date,
        cap: d.cap,
        sentToday: this.counts.get(d.key, d.window),
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
        sentThisHour: this.counts.get(`hour:${p.provider}`, w.hour),
        sentToday: this.counts.get(`day:${p.provider}`, w.day),
        warmup: wd ? { day: wd.day, cap: wd.cap, sentToday: this.counts.get(wd.key, wd.window) } : null,
        blocked: block?.reason ?? null,
      };
    });
  }
}
