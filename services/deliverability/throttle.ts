/**
 * The adaptive throttle of one (service, provider) pair, as pure functions over a small value.
 *
 * State machine (times in ms since the epoch; `configured` is the pair's full rate in msg/s):
 *
 *   normal --slow reply--------------> slowed     rate = max(floor, rate x factor)
 *   normal --suspend reply-----------> suspended  until = now + seconds; rate = max(floor, rate x resumeFactor)
 *   slowed --slow reply (after hold)-> slowed     rate = max(floor, rate x factor)
 *   slowed --slow reply (within hold)> slowed     unchanged: replies to sends made at the old rate
 *                                                 arrive for a while and must not halve it again
 *   slowed --suspend reply-----------> suspended
 *   suspended --reply----------------> suspended  until = max(until, now + seconds) for a suspend
 *   suspended --now >= until---------> slowed     quiet period counted from `until`
 *   slowed --each quietMs without a deferral--> rate + step (step = configured x recoveryStep)
 *   slowed --rate reaches configured-> normal
 *
 * Multiplicative decrease, additive increase (as TCP's congestion control, and as Google asks of
 * bulk senders: "cut volume until the errors stop, then ramp up slowly"). Nothing here reads a
 * clock: `advance(state, now)` applies the recovery steps due by `now`, so a caller evaluates the
 * state whenever it needs it and no timer is involved. `checkThrottle` asserts the invariants
 * after every transition (floor <= rate <= configured; a suspended state has an end).
 */
export type ThrottleMode = 'normal' | 'slowed' | 'suspended';

export interface AdaptiveSettings {
  /** The slowest rate a slow-down may reach, as a fraction of the configured rate (0.1). */
  floorFraction: number;
  /** Quiet time (no deferral) before each recovery step, ms (60,000). */
  quietMs: number;
  /** Each recovery step adds this fraction of the configured rate (0.1: full rate in 10 steps). */
  recoveryStep: number;
  /** After one decrease, further slow replies within this time change nothing, ms (5,000). */
  holdMs: number;
  /** The rate a suspension resumes at, as a factor of the rate before it (0.5). */
  resumeFactor: number;
}

export const DEFAULT_ADAPTIVE: AdaptiveSettings = {
  floorFraction: 0.1,
  quietMs: 60_000,
  recoveryStep: 0.1,
  holdMs: 5_000,
  resumeFactor: 0.5,
} satisfies AdaptiveSettings;

export interface LastDeferral {
  rule: string;
  reply: string;
  at: number;
}

export interface ThrottleState {
  mode: ThrottleMode;
  /** The pair's full rate, msg/s. */
  configured: number;
  /** The rate in force, msg/s. */
  rate: number;
  /** End of a suspension. */
  until?: number;
  /** When the last decrease happened (the hold window starts there). */
  decreasedAt?: number;
  /** Recovery steps are counted from here: the last deferral, or the end of a suspension. */
  quietSince: number;
  last?: LastDeferral;
  /** Deferral replies counted for the pair since the engine started. */
  deferrals: number;
}

export type ThrottleAction = { type: 'slow'; factor: number } | { type: 'suspend'; seconds: number };

export function floorOf(s: Pick<ThrottleState, 'configured'>, a: AdaptiveSettings): number {
  return s.configured * a.floorFraction;
}

export function initialThrottle(configured: number, now: number): ThrottleState {
  if (!(configured > 0)) throw new RangeError(`configured rate must be positive, got ${configured}`);
  return { mode: 'normal', configured, rate: configured, quietSince: now, deferrals: 0 };
}

/** Throws when a state breaks the machine's invariants (a bug, never bad input). */
export function checkThrottle(s: ThrottleState, a: AdaptiveSettings): ThrottleState {
  const eps = 1e-9 * s.configured;
  if (s.rate < floorOf(s, a) - eps || s.rate > s.configured + eps) {
    throw new Error(`throttle invariant: rate ${s.rate} outside [${floorOf(s, a)}, ${s.configured}]`);
  }
  if (s.mode === 'suspended' && s.until === undefined) throw new Error('throttle invariant: suspended without an end');
  if (s.mode === 'normal' && Math.abs(s.rate - s.configured) > eps) throw new Error('throttle invariant: normal below full rate');
  return s;
}

/** Applies the recovery due by `now`: the end of a suspension, then one step per quiet period. */
export function advance(s: ThrottleState, now: number, a: AdaptiveSettings): ThrottleState {
  let next = s;
  if (next.mode === 'suspended') {
    if (now < next.until!) return next;
    next = { ...next, mode: 'slowed', quietSince: next.until! };
    delete next.until;
  }
  if (next.mode === 'slowed') {
    const step = next.configured * a.recoveryStep;
    // Steps due by now, but no more than full rate needs: the result is the same however often
    // advance is called (checked by a property test).
    const needed = Math.ceil((next.configured - next.rate) / step - 1e-9);
    const steps = Math.min(needed, Math.floor((now - next.quietSince) / a.quietMs));
    if (steps > 0) {
      const rate = Math.min(next.configured, next.rate + steps * step);
      next = { ...next, rate, quietSince: next.quietSince + steps * a.quietMs };
      if (rate >= next.configured * (1 - 1e-9)) next = { ...next, mode: 'normal', rate: next.configured };
    } else if (needed <= 0) {
      next = { ...next, mode: 'normal', rate: next.configured };
    }
  }
  return checkThrottle(next, a);
}

/** A throttling reply for the pair: slow down or suspend, as the rule says. */
export function onDeferral(
  prev: ThrottleState,
  action: ThrottleAction,
  now: number,
  a: AdaptiveSettings,
  last?: Omit<LastDeferral, 'at'>,
): ThrottleState {
  const s = advance(prev, now, a);
  const floor = floorOf(s, a);
  const noted = { ...s, deferrals: s.deferrals + 1, ...(last ? { last: { ...last, at: now } } : {}) };
  if (action.type === 'suspend') {
    const until = now + action.seconds * 1000;
    if (s.mode === 'suspended') return checkThrottle({ ...noted, until: Math.max(s.until!, until) }, a);
    const rate = Math.max(floor, s.rate * a.resumeFactor);
    return checkThrottle({ ...noted, mode: 'suspended', until, rate, decreasedAt: now, quietSince: until }, a);
  }
  if (s.mode === 'suspended') return checkThrottle(noted, a);
  const held = s.decreasedAt !== undefined && now - s.decreasedAt < a.holdMs;
  if (held) return checkThrottle({ ...noted, quietSince: now }, a);
  const rate = Math.max(floor, s.rate * action.factor);
  return checkThrottle({ ...noted, mode: 'slowed', rate, decreasedAt: now, quietSince: now }, a);
}

/** The configured rate changed (service edited, table reloaded): keep the same fraction of it. */
export function reconfigure(s: ThrottleState, configured: number, a: AdaptiveSettings): ThrottleState {
  if (configured === s.configured) return s;
  const fraction = s.rate / s.configured;
  const rate = s.mode === 'normal' ? configured : Math.min(configured, Math.max(configured * a.floorFraction, configured * fraction));
  return checkThrottle({ ...s, configured, rate }, a);
}
