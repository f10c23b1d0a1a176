/**
 * The cap ledger: hourly, daily and warm-up caps of (service, provider) pairs made exact across
 * restarts, takeovers and engine processes, the way the service's daily quota is (sql/quota.ts).
 *
 * Each capped window (a clock hour, a quota day, a warm-up day) is a row in PostgreSQL
 * (`delivery_counts`: service, provider, scope, bucket -> sent). A send needs one unit of every
 * cap that applies to it, and a unit is RESERVED from the row before the send, by a conditional
 * upsert that never grants beyond the cap (sql/caps.ts). Units are reserved in small batches
 * (about one second of the pair's sends, at least 1, at most 100 and at most a twentieth of the
 * cap) and the next batch is reserved while half of this one is left, so a send waits on the
 * database only for a pair's first send of a window. The row counts what was reserved, so:
 *   - a restart or a takeover by another engine continues from the row: nothing is forgotten;
 *   - two engines sending on one service at once (a partition before the lock timeout) reserve
 *     from the same row, and the sum never passes the cap;
 *   - a clean stop gives back the units it reserved and did not use (release);
 *   - a crash leaves its unused units counted (at most one batch per window: a twentieth of the
 *     cap, or one unit), and those of its slots alive (a slot takes its units when it picks its
 *     message: the sends under way, which may have reached the server, and those picked ahead of
 *     their pacing slot): the cap may be UNDER-used by that much in that window, never exceeded;
 *   - a send the server did not take (refused, never reached) gives its units back, as it does its
 *     quota unit (the runner decides, from send.ts's Decision).
 *
 * Why reservation, rather than adding the sends to the row in the outcome write: a count written
 * with the outcome lags the send (the write commits after the server answered), so a crash forgets
 * the sends in flight and a second engine does not see the first's sends until they commit; a cap
 * could be passed by those. Reserving first is exact by construction, costs PostgreSQL nothing for
 * a pair with no cap (the default table has none), and one upsert per batch for a capped pair.
 *
 * States of one window entry (per scope and provider, for its current bucket):
 *   empty (held 0) --check--> reserving --granted n--> held n --take--> ... --> empty
 *   reserving --granted 0, nothing held--> full (until the bucket changes, the cap is raised, or
 *     RECHECK_MS passed: units another engine gave back are seen then)
 *   any --bucket changed--> empty (units of the old window stay counted in the old row)
 * No I/O here: the store (CapStore) is injected; unit tests use an in-memory one.
 */

export type CapScope = 'hour' | 'day' | 'warmup';

/** One cap that applies to a send now: its window row and its size. */
export interface CapKey {
  scope: CapScope;
  /** A mailbox provider, or '*' for a warm-up schedule of the whole service. */
  provider: string;
  /** The window: `2026-11-30T05` (UTC hour), `2026-11-30` (quota day), `Europe/Berlin:2026-11-30` (warm-up day). */
  bucket: string;
  cap: number;
  /** When the window ends (ms since the epoch): the row may be pruned a day after. */
  endsAt: number;
}

export interface CapStore {
  /** Reserves up to `want` units of the window, never beyond `cap`; returns those granted and the row's count after. */
  reserve(k: CapKey, want: number): Promise<{ granted: number; sent: number }>;
  /** Gives back reserved units that were not used. */
  release(items: { key: CapKey; n: number }[]): Promise<void>;
}

/** How long a full window is believed full before the row is asked again. */
export const RECHECK_MS = 5_000;
/** After a failed reservation, the next waits this long (no hot loop while the database is away). */
export const RETRY_MS = 1_000;

export type CapState = 'ok' | 'full' | 'wait';

/** Units reserved at once for a window: `batch` (a second of sends), 1 to 100, at most a twentieth of the cap. */
export function batchFor(k: Pick<CapKey, 'cap'>, batch: number): number {
  return Math.max(1, Math.min(100, Math.floor(batch), Math.floor(k.cap / 20)));
}

interface Entry {
  key: CapKey;
  held: number;
  /** The row's count as of the last reservation (what this and other engines reserved). */
  counted: number;
  reserving: boolean;
  /** Full: the cap it was full at, and when. */
  full?: { cap: number; at: number };
  retryAt: number;
}

export interface CapLedgerOptions {
  store: CapStore;
  now: () => number;
  /** Units became available (a reservation came back): the caller may send again. */
  onReady?: () => void;
  onError?: (err: unknown) => void;
}

/** Units of the same window taken by one send, so they can be given back when it did not go. */
export type CapTaken = readonly CapKey[];

export class CapLedger {
  private readonly entries = new Map<string, Entry>();
  /** Reservations under way (a stop waits for them before it gives units back). */
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly opts: CapLedgerOptions) {}

  private idOf(k: Pick<CapKey, 'scope' | 'provider'>): string {
    return `${k.scope}:${k.provider}`;
  }

  /** The entry for the key's window; a new window starts empty. */
  private entry(k: CapKey): Entry {
    const id = this.idOf(k);
    let e = this.entries.get(id);
    if (!e || e.key.bucket !== k.bucket) {
      e = { key: k, held: 0, counted: 0, reserving: false, retryAt: 0 };
      this.entries.set(id, e);
    } else {
      e.key = k; // the cap may have changed (service edited)
    }
    return e;
  }

  /**
   * May one send of this window go now? 'ok': a unit is held for it; 'full': the cap is reached;
   * 'wait': a reservation is under way (started here when needed).
   */
  check(k: CapKey, batch: number): CapState {
    const e = this.entry(k);
    if (e.held > 0) return 'ok';
    const now = this.opts.now();
    if (e.full && e.full.cap >= k.cap && now - e.full.at < RECHECK_MS) return 'full';
    this.reserve(e, batch);
    return e.full ? 'full' : 'wait';
  }

  /** Takes one unit of each key for a send (check said 'ok' for each in the same turn); reserves ahead. */
  take(keys: readonly CapKey[], batch: number): CapTaken {
    for (const k of keys) {
      const e = this.entry(k);
      if (e.held <= 0) throw new Error(`cap ledger: no unit held for ${this.idOf(k)} ${k.bucket} (check first)`);
      e.held--;
      if (e.held < Math.ceil(batchFor(k, batch) / 2)) this.reserve(e, batch);
    }
    return keys;
  }

  /** The send did not go: its units return to the windows they came from (if still current). */
  giveBack(taken: CapTaken): void {
    for (const k of taken) {
      const e = this.entries.get(this.idOf(k));
      if (e && e.key.bucket === k.bucket) e.held++;
    }
  }

  /** Sends counted in the window (by every engine), not counting units held here unused; undefined before the first reservation. */
  sent(k: CapKey): number | undefined {
    const e = this.entries.get(this.idOf(k));
    if (!e || e.key.bucket !== k.bucket || (e.counted === 0 && e.held === 0 && !e.full)) return undefined;
    return Math.max(0, e.counted - e.held);
  }

  /** Gives back every unit held (a clean stop, after the sends under way ended). */
  async releaseAll(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending]);
    const items = [...this.entries.values()].filter((e) => e.held > 0).map((e) => ({ key: e.key, n: e.held }));
    if (!items.length) return;
    for (const e of this.entries.values()) {
      e.counted -= e.held;
      e.held = 0;
    }
    await this.opts.store.release(items);
  }

  private reserve(e: Entry, batch: number): void {
    if (e.reserving || this.opts.now() < e.retryAt) return;
    e.reserving = true;
    const key = e.key;
    const done: Promise<void> = this.opts.store.reserve(key, batchFor(key, batch)).then(
      ({ granted, sent }) => {
        e.reserving = false;
        // The window turned meanwhile: those units belong to the old row, and stay counted there.
        if (this.entries.get(this.idOf(key)) !== e || e.key.bucket !== key.bucket) return;
        e.held += granted;
        e.counted = sent;
        if (granted === 0 && e.held === 0) e.full = { cap: key.cap, at: this.opts.now() };
        else delete e.full;
        if (granted > 0) this.opts.onReady?.();
      },
      (err: unknown) => {
        e.reserving = false;
        e.retryAt = this.opts.now() + RETRY_MS;
        this.opts.onError?.(err);
      },
    );
    this.pending.add(done);
    void done.finally(() => this.pending.delete(done));
  }
}
