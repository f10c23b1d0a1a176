/** Small statistics helpers: every figure in the report is a median with its min and max. */

export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function median(values: number[]): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function summarize(values: number[]): Summary {
  const finite = values.filter((v) => Number.isFinite(v));
  if (!finite.length) return { median: NaN, min: NaN, max: NaN, n: 0 };
  return { median: median(finite), min: Math.min(...finite), max: Math.max(...finite), n: finite.length };
}

/** Jain's fairness index: (sum x)^2 / (n * sum x^2); 1 when all equal, 1/n when one takes all. */
export function jain(xs: number[]): number {
  let sum = 0;
  let sq = 0;
  for (const x of xs) {
    sum += x;
    sq += x * x;
  }
  return sq === 0 ? 1 : (sum * sum) / (xs.length * sq);
}

/** The best Jain index possible when `total` whole sends are split among `n` users (a perfect round robin). */
export function jainIdeal(total: number, n: number): number {
  const q = Math.floor(total / n);
  const r = total - q * n;
  const xs = Array.from({ length: n }, (_, i) => (i < r ? q + 1 : q));
  return jain(xs);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
