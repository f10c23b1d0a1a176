/**
 * Seeded randomness for the fault scenarios: every random choice (kill points, which reply a
 * server gives) comes from one generator per scenario, seeded from CHAOS_SEED when set, else
 * from the clock. The seed is printed and recorded in the summary table, so a failing run is
 * replayed with `CHAOS_SEED=<seed> npm run test:chaos -- test/chaos/faults`.
 */

export interface Rng {
  readonly seed: number;
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max]. */
  int(min: number, max: number): number;
  /** True with probability p. */
  chance(p: number): boolean;
}

/** mulberry32: small, fast, and good enough to pick fault points. */
export function createRng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    seed: seed >>> 0,
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    chance: (p) => next() < p,
  };
}

/**
 * The scenario's seed: CHAOS_SEED (decimal) when set, else a fresh one. Each scenario derives its
 * own from it and its name, so scenarios replay independently of which ones ran before.
 */
export function scenarioRng(name: string): Rng {
  const given = process.env.CHAOS_SEED;
  let base: number;
  if (given !== undefined && given !== '') {
    base = Number(given);
    if (!Number.isInteger(base) || base < 0) throw new Error(`CHAOS_SEED must be a non-negative integer, got ${JSON.stringify(given)}`);
  } else {
    base = (Date.now() ^ (process.pid << 8)) >>> 0;
  }
  let h = base >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  const rng = createRng(h);
  console.log(`[chaos ${name}] seed ${base} (replay with CHAOS_SEED=${base}); scenario stream ${rng.seed}`);
  return Object.assign(rng, { seed: base });
}
