/**
 * Sends per service over the last 15 minutes, in 10-second buckets, for the status API and the
 * dashboard's rate chart (a pause shows as a run of zeros).
 *
 * Fed by the scheduler's public 'sent' events (serviceId, at), not by its internals, and not by a
 * query: subtasks has no index on status or send time (each costs the million-row queue
 * generation), so counting the last 15 minutes would scan the table on every dashboard poll. The
 * price: it counts the sends of this process only (one figure per engine in a scale-out), from the
 * moment the HTTP server starts; a restart begins with an empty history.
 *
 * Buckets are aligned on multiples of the bucket length of the engine's clock (`at` comes from it),
 * so two polls agree on their boundaries. Memory is bounded: one small map per bucket, at most
 * window / bucket + 1 of them.
 */
import type { Engine } from '../engine.js';
import type { SentEvent } from '../../services/scheduler/loop.js';

export const HISTORY_BUCKET_MS = 10_000;
export const HISTORY_WINDOW_MS = 15 * 60_000;

export interface HistoryWindow {
  bucketSeconds: number;
  /** Start of the oldest bucket; the newest one (still filling) holds `now`. */
  startsAt: Date;
  /** Sends per bucket of one service, oldest first (window / bucket entries, zeros included). */
  of(serviceId: number): number[];
}

export class SendHistory {
  /** Bucket start (ms) -> service id -> sends. */
  private readonly buckets = new Map<number, Map<number, number>>();

  constructor(
    readonly bucketMs = HISTORY_BUCKET_MS,
    readonly windowMs = HISTORY_WINDOW_MS,
  ) {
    if (windowMs % bucketMs !== 0) throw new RangeError('the window must be a whole number of buckets');
  }

  private startOf(ms: number): number {
    return Math.floor(ms / this.bucketMs) * this.bucketMs;
  }

  record(serviceId: number, at: Date): void {
    const start = this.startOf(at.getTime());
    let bucket = this.buckets.get(start);
    if (!bucket) {
      bucket = new Map();
      this.buckets.set(start, bucket);
      this.prune(start);
    }
    bucket.set(serviceId, (bucket.get(serviceId) ?? 0) + 1);
  }

  /** Forgets buckets that fell out of the window ending with the bucket starting at `newest`. */
  private prune(newest: number): void {
    const oldest = newest - this.windowMs + this.bucketMs;
    for (const start of this.buckets.keys()) if (start < oldest) this.buckets.delete(start);
  }

  /** The window ending with the bucket that holds `now` (ms). */
  window(now: number): HistoryWindow {
    const n = this.windowMs / this.bucketMs;
    const first = this.startOf(now) - (n - 1) * this.bucketMs;
    return {
      bucketSeconds: this.bucketMs / 1000,
      startsAt: new Date(first),
      of: (serviceId) => Array.from({ length: n }, (_, i) => this.buckets.get(first + i * this.bucketMs)?.get(serviceId) ?? 0),
    };
  }
}

/** A history fed by the engine's scheduler until detached (the HTTP server detaches on close). */
export function attachSendHistory(
  engine: Pick<Engine, 'scheduler'>,
  history = new SendHistory(),
): { history: SendHistory; detach(): void } {
  const onSent = (e: SentEvent) => history.record(e.serviceId, e.at);
  engine.scheduler.on('sent', onSent);
  return { history, detach: () => engine.scheduler.off('sent', onSent as (...args: never[]) => void) };
}
