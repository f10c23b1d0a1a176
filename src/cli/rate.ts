/**
 * The rate and ETA of `campaign status --watch`: messages finished per minute over a sliding
 * window of samples, and the time the remaining ones take at that rate. Pure: the caller passes
 * the time of each sample.
 */
export interface RateEstimate {
  /** Finished messages a minute over the window; null until two samples span some time. */
  perMinute: number | null;
  /** Milliseconds until `remaining` are done at that rate; null when unknown (no rate yet, or zero). */
  etaMs: number | null;
}

export function createRateMeter(windowMs = 60_000) {
  const samples: { at: number; done: number }[] = [];
  return {
    add(at: number, done: number, remaining: number): RateEstimate {
      samples.push({ at, done });
      while (samples.length > 2 && samples[0]!.at < at - windowMs) samples.shift();
      const first = samples[0]!;
      const span = at - first.at;
      if (span <= 0) return { perMinute: null, etaMs: null };
      const perMs = (done - first.done) / span;
      const perMinute = Math.max(0, perMs * 60_000);
      return { perMinute, etaMs: remaining === 0 ? 0 : perMs > 0 ? remaining / perMs : null };
    },
  };
}

/** "12.5/min", "-" when unknown. */
export function formatRate(perMinute: number | null): string {
  if (perMinute === null) return '-';
  return `${perMinute >= 100 ? Math.round(perMinute) : Math.round(perMinute * 10) / 10}/min`;
}

/** "45s", "12m05s", "3h20m", "2d4h"; "-" when unknown. */
export function formatEta(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '-';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h${String(m % 60).padStart(2, '0')}m` : `${Math.floor(h / 24)}d${h % 24}h`;
}
