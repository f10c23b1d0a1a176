/** The rate and ETA shown by `campaign status --watch` (src/cli/rate.ts): pure arithmetic on samples. */
import { createRateMeter, formatEta, formatRate } from '../src/cli/rate.js';

describe('campaign watch rate and ETA', () => {
  it('measures finished messages a minute over a sliding window and the time left at that rate', () => {
    const m = createRateMeter(60_000);
    expect(m.add(0, 0, 100)).toEqual({ perMinute: null, etaMs: null });
    expect(m.add(30_000, 10, 90)).toEqual({ perMinute: 20, etaMs: 270_000 });
    expect(m.add(60_000, 20, 80)).toEqual({ perMinute: 20, etaMs: 240_000 });
    // Samples older than the window drop out: a pause shows as rate 0, ETA unknown.
    expect(m.add(120_000, 20, 80)).toEqual({ perMinute: 0, etaMs: null });
    expect(m.add(150_000, 50, 50)).toEqual({ perMinute: 60, etaMs: 50_000 });
    expect(m.add(160_000, 100, 0).etaMs).toBe(0);
  });

  it('formats rate and ETA for the bar', () => {
    expect(formatRate(null)).toBe('-');
    expect(formatRate(12.345)).toBe('12.3/min');
    expect(formatRate(1234.5)).toBe('1235/min');
    expect(formatEta(null)).toBe('-');
    expect(formatEta(45_000)).toBe('45s');
    expect(formatEta(725_000)).toBe('12m05s');
    expect(formatEta(3 * 3600_000 + 20 * 60_000)).toBe('3h20m');
    expect(formatEta(52 * 3600_000)).toBe('2d4h');
  });
});
