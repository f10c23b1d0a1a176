/**
 * Where a service's send slots wait for their turn. Two kinds, chosen by the service's rate:
 *
 *   - a rate-limited service (sendingRate > 0) spaces its slots with bottleneck: `minTime` is the
 *     interval, `maxConcurrent` the concurrency. The dispatch gate in service-runner.ts then makes
 *     the interval exact.
 *   - a service with no rate limit needs only the concurrency bound: a p-queue. Bottleneck starts
 *     every job through setTimeout(0) and its own lock queue, which costs at least a millisecond
 *     between one send ending and the next starting on that connection; p-queue starts the next
 *     one in the same microtask (measured in bench W1).
 */
import Bottleneck from 'bottleneck';
import PQueue from 'p-queue';

export interface SlotLimiter {
  /** Runs `fn` when a slot is free (and, rate-limited, when its interval has come). */
  schedule(fn: () => Promise<boolean>): Promise<boolean>;
  /** Slots waiting or running. */
  readonly pending: number;
  setConcurrency(n: number): void;
  /** Drops waiting slots; resolves when the running ones have finished. */
  stop(): Promise<void>;
}

class RateLimiter implements SlotLimiter {
  private readonly b: Bottleneck;
  constructor(minTime: number, concurrency: number) {
    this.b = new Bottleneck({ minTime, maxConcurrent: concurrency });
  }
  schedule(fn: () => Promise<boolean>): Promise<boolean> {
    return this.b.schedule(fn);
  }
  get pending(): number {
    const c = this.b.counts();
    return (c.RECEIVED ?? 0) + (c.QUEUED ?? 0) + (c.RUNNING ?? 0) + (c.EXECUTING ?? 0);
  }
  setConcurrency(n: number): void {
    this.b.updateSettings({ maxConcurrent: n });
  }
  async stop(): Promise<void> {
    await this.b.stop({ dropWaitingJobs: true }).catch(() => undefined);
  }
}

class ConcurrencyLimiter implements SlotLimiter {
  private readonly q: PQueue;
  constructor(concurrency: number) {
    this.q = new PQueue({ concurrency });
  }
  schedule(fn: () => Promise<boolean>): Promise<boolean> {
    return this.q.add(fn, { throwOnTimeout: true });
  }
  get pending(): number {
    return this.q.size + this.q.pending;
  }
  setConcurrency(n: number): void {
    this.q.concurrency = n;
  }
  async stop(): Promise<void> {
    this.q.clear();
    await this.q.onIdle();
  }
}

/** The limiter for a service sending at most once per `minTimeMs` (0: no rate limit). */
export function createSlotLimiter(minTimeMs: number, concurrency: number): SlotLimiter {
  return minTimeMs > 0 ? new RateLimiter(minTimeMs, concurrency) : new ConcurrencyLimiter(concurrency);
}
