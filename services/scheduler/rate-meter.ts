/** Sends per minute over the last 1, 5 and 15 minutes, from per-second buckets (900 of them). */
export class RateMeter {
  private readonly buckets = new Float64Array(900);
  private readonly stamps = new Float64Array(900);

  add(n = 1, nowMs = Date.now()): void {
    const sec = Math.floor(nowMs / 1000);
    const i = sec % 900;
    if (this.stamps[i] !== sec) {
      this.stamps[i] = sec;
      this.buckets[i] = 0;
    }
    this.buckets[i]! += n;
  }

  perMinute(minutes: 1 | 5 | 15, nowMs = Date.now()): number {
    const sec = Math.floor(nowMs / 1000);
    let total = 0;
    for (let s = sec - minutes * 60 + 1; s <= sec; s++) {
      const i = s % 900;
      if (this.stamps[i] === s) total += this.buckets[i]!;
    }
    return Math.round((total / minutes) * 10) / 10;
  }
}
