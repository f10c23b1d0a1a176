/**
 * The adaptive throttle as pure code: multiplicative decrease to the floor, suspension for the
 * rule's time, additive recovery after quiet periods, and the invariants over random event
 * sequences (fast-check, fixed seed).
 */
import fc from 'fast-check';
import {
  DEFAULT_ADAPTIVE,
  advance,
  checkThrottle,
  initialThrottle,
  onDeferral,
  reconfigure,
  type ThrottleAction,
  type ThrottleState,
} from '../services/deliverability/throttle.js';

const A = DEFAULT_ADAPTIVE; // floor 10 %, quiet 60 s, step 10 %, hold 5 s, resume 50 %
const slow: ThrottleAction = { type: 'slow', factor: 0.5 };

describe('slowing down', () => {
  it('halves the rate once per hold window, down to the floor', () => {
    let s = initialThrottle(100, 0);
    s = onDeferral(s, slow, 1_000, A);
    expect(s).toMatchObject({ mode: 'slowed', rate: 50, deferrals: 1 });
    s = onDeferral(s, slow, 2_000, A); // within 5 s: replies to sends made at the old rate
    expect(s).toMatchObject({ rate: 50, deferrals: 2 });
    s = onDeferral(s, slow, 6_000, A);
    expect(s.rate).toBe(25);
    for (let t = 12_000; t < 60_000; t += 6_000) s = onDeferral(s, slow, t, A);
    expect(s.rate).toBe(10); // the floor: 10 % of 100
  });

  it('records the last deferral reply', () => {
    const s = onDeferral(initialThrottle(10, 0), slow, 500, A, { rule: 'r', reply: '421 4.7.0 Try later' });
    expect(s.last).toEqual({ rule: 'r', reply: '421 4.7.0 Try later', at: 500 });
  });
});

describe('suspension', () => {
  it('holds the pair for the rule time, then resumes at half rate and recovers additively', () => {
    let s = initialThrottle(20, 0);
    s = onDeferral(s, { type: 'suspend', seconds: 900 }, 1_000, A);
    expect(s).toMatchObject({ mode: 'suspended', until: 901_000, rate: 10 });
    expect(advance(s, 900_999, A).mode).toBe('suspended');
    // a slow reply arriving during the suspension changes nothing but the count
    s = onDeferral(s, slow, 10_000, A);
    expect(s).toMatchObject({ mode: 'suspended', rate: 10, deferrals: 2 });
    // a second suspend extends it
    s = onDeferral(s, { type: 'suspend', seconds: 1000 }, 20_000, A);
    expect(s.until).toBe(1_020_000);
    let r = advance(s, 1_020_000, A);
    expect(r).toMatchObject({ mode: 'slowed', rate: 10 });
    r = advance(r, 1_020_000 + 59_999, A);
    expect(r.rate).toBe(10); // one quiet period not yet over
    r = advance(r, 1_020_000 + 60_000, A);
    expect(r.rate).toBe(12); // + 10 % of 20
    r = advance(r, 1_020_000 + 5 * 60_000, A);
    expect(r).toMatchObject({ mode: 'normal', rate: 20 });
  });
});

describe('recovery', () => {
  it('steps up once per quiet period, and a new deferral restarts the quiet time', () => {
    let s = onDeferral(initialThrottle(100, 0), slow, 0, A);
    expect(s.rate).toBe(50);
    s = advance(s, 120_000, A);
    expect(s.rate).toBe(70);
    s = onDeferral(s, slow, 150_000, A);
    expect(s.rate).toBe(35);
    expect(advance(s, 150_000 + 59_000, A).rate).toBe(35);
    expect(advance(s, 150_000 + 60_000, A).rate).toBe(45);
    expect(advance(s, 150_000 + 10 * 60_000, A)).toMatchObject({ mode: 'normal', rate: 100 });
  });

  it('keeps the same fraction when the configured rate changes', () => {
    const s = onDeferral(initialThrottle(100, 0), slow, 0, A);
    expect(reconfigure(s, 20, A).rate).toBe(10);
    expect(reconfigure(initialThrottle(100, 0), 20, A)).toMatchObject({ mode: 'normal', rate: 20 });
  });

  it('refuses a state that breaks the invariants', () => {
    expect(() => checkThrottle({ mode: 'normal', configured: 10, rate: 5, quietSince: 0, deferrals: 0 }, A)).toThrow(/normal below/);
    expect(() => checkThrottle({ mode: 'slowed', configured: 10, rate: 0.5, quietSince: 0, deferrals: 0 }, A)).toThrow(/outside/);
    expect(() => initialThrottle(0, 0)).toThrow(RangeError);
  });
});

describe('properties', () => {
  const event = fc.record({
    gap: fc.integer({ min: 0, max: 400_000 }),
    action: fc.oneof(
      fc.constant<ThrottleAction | null>(null),
      fc.double({ min: 0.05, max: 0.95, noNaN: true }).map((factor): ThrottleAction => ({ type: 'slow', factor })),
      fc.integer({ min: 1, max: 3600 }).map((seconds): ThrottleAction => ({ type: 'suspend', seconds })),
    ),
  });

  it('rate stays within [floor, configured]; a decrease never happens twice within the hold; quiet time brings full rate back', () => {
    fc.assert(
      fc.property(fc.double({ min: 0.01, max: 1000, noNaN: true }), fc.array(event, { maxLength: 60 }), (configured, events) => {
        let s: ThrottleState = initialThrottle(configured, 0);
        let t = 0;
        for (const e of events) {
          t += e.gap;
          const before = advance(s, t, A);
          s = e.action ? onDeferral(s, e.action, t, A) : before;
          expect(s.rate).toBeGreaterThanOrEqual(configured * A.floorFraction * (1 - 1e-9));
          expect(s.rate).toBeLessThanOrEqual(configured * (1 + 1e-9));
          if (
            e.action?.type === 'slow' &&
            before.mode !== 'suspended' &&
            before.decreasedAt !== undefined &&
            t - before.decreasedAt < A.holdMs
          ) {
            expect(s.rate).toBe(before.rate);
          }
          if (e.action === null) expect(s.rate).toBeGreaterThanOrEqual(before.rate);
        }
        // Enough quiet: the longest suspension plus ten recovery steps.
        const end = advance(s, t + 7 * 86_400_000 + 11 * A.quietMs, A);
        expect(end).toMatchObject({ mode: 'normal', rate: configured });
      }),
      { seed: 1301, numRuns: 300 },
    );
  });

  it('advance is monotone in time and does not depend on how often it is called', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 200_000 }), { minLength: 1, maxLength: 30 }), (gaps) => {
        const start = onDeferral(onDeferral(initialThrottle(40, 0), { type: 'suspend', seconds: 120 }, 0, A), slow, 1, A);
        let stepwise = start;
        let t = 0;
        for (const g of gaps) {
          t += g;
          const next = advance(stepwise, t, A);
          expect(next.rate).toBeGreaterThanOrEqual(stepwise.rate);
          stepwise = next;
        }
        expect(advance(start, t, A)).toEqual(stepwise);
      }),
      { seed: 1302, numRuns: 200 },
    );
  });
});
