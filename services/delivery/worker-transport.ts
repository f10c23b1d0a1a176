/**
 * SMTP work on every core (SEND_WORKERS): building the MIME message, DKIM signing and the
 * transport run in worker threads, while the main thread keeps the fair pick, pacing, quota,
 * claims and outcome writes. A service runner sees the same three calls as with nodemailer's
 * pooled transport (sendMail, verify, close): `SendWorkerPool.transport()` returns a stand-in
 * that posts each message to a thread.
 *
 * - Each thread holds its share of each service's connections (maxConnections split as evenly as
 *   it goes; a thread with no share does not carry the service), as a real pooled transport made
 *   by createServiceTransport in the thread. A message goes to the carrying thread with the fewest
 *   sends under way per connection.
 * - The dispatch instant is the main thread's (the pacer's): the message is posted in the same
 *   turn. Messages posted in one turn travel in one postMessage, and so do the results that
 *   settle in one turn of a thread. A held send (held-send.ts) is posted ahead of its slot; the
 *   thread reports it once held (with its settled batch), and the releases of one turn go to the
 *   thread together at the end of the pacer's turn, after that turn's sends.
 * - A thread that dies (an uncaught error, process.exit, out of memory) fails every send under way
 *   on it with an `EWORKER` error, which classify.ts reads as ambiguous (the message may have
 *   reached the server) and not as the service's fault: the delivery mode decides (at-least-once
 *   resends with the same Message-ID, at-most-once marks it unknown); a held send whose release
 *   had not been posted fails as never delivered (its end never left). The thread is started again
 *   at once with the same transports, and the crash is logged and counted (status, /metrics).
 * - Secrets: the row's sealed options are opened on the main thread when a thread needs them
 *   (at open and at each restart) and posted to the thread, in memory; nothing logs them.
 *
 * The worker thread runs send-worker.js from dist/, or send-worker.ts from the sources (tests run
 * the TypeScript, through tsx registered inside the thread).
 */
import { Worker } from 'node:worker_threads';
import type { SendMailOptions } from 'nodemailer';
import type { DkimConfig, TransportConfig } from '../../models/index.js';
import type { Keyring } from '../kernel/secrets.js';
import type { Logger } from '../kernel/logger.js';
import { openServiceSecrets } from '../service-secrets.js';
import type { FromWorker, Settled, ToWorker, WireError } from './worker-protocol.js';
import { monoToEpoch } from '../kernel/mono-clock.js';
import type { HeldSend } from './held-send.js';

/** A send's answer. `answeredAt`: when a send worker thread saw it (epoch ms, this thread's clock); unset in-thread. */
export interface SendResult {
  response?: string | undefined;
  messageId: string;
  answeredAt?: number;
}

/** What the engine uses of a service's transport: nodemailer's pooled transport (transport.ts, localTransport), or WorkerTransport. */
export interface ServiceTransport {
  sendMail(mail: SendMailOptions): Promise<SendResult>;
  /** Sends `mail` up to its end and holds it there until released (held-send.ts). */
  hold(mail: SendMailOptions): HeldSend<SendResult>;
  verify(): Promise<unknown>;
  close(): void;
}

/** The send worker threads to run: SEND_WORKERS when set (0: SMTP work on the main thread), else the cores less one, at least 1. */
export function resolveSendWorkers(configured: number | undefined, cores: number): number {
  return configured ?? Math.max(1, cores - 1);
}

/**
 * A thread that keeps dying as it starts (a broken install) is started again after a backoff
 * (100 ms doubling to 10 s) instead of at once; meanwhile its sends fail with EWORKERDOWN, never
 * posted (classify.ts: not sent, a connection failure, so the service turns unhealthy and is
 * probed on its own backoff instead of spinning).
 */
const EARLY_DEATH_MS = 1000;
const MAX_RESTART_BACKOFF_MS = 10_000;

/** A send that could not be handed to a thread (it is down, restarting after a backoff): never sent. */
export class WorkerDownError extends Error {
  readonly code = 'EWORKERDOWN';
  constructor(message: string) {
    super(message);
    this.name = 'WorkerDownError';
  }
}

/** A send lost with its thread: classify.ts reads it as ambiguous, and not the service's fault. */
export class WorkerCrashError extends Error {
  readonly code = 'EWORKER';
  constructor(message: string) {
    super(message);
    this.name = 'WorkerCrashError';
  }
}

interface Pending {
  resolve(info: SendResult): void;
  reject(err: Error): void;
  tid: number;
  /** A held send: told when the thread holds it; released once the main thread let its end go. */
  hold?: { onHeld(): void; released: boolean };
}

interface Thread {
  index: number;
  worker: Worker;
  pending: Map<number, Pending>;
  outbox: { id: number; tid: number; mail: SendMailOptions; hold?: true }[];
  /** Held sends released in this turn (posted with the turn's sends, after them). */
  releases: number[];
  /** Sends under way per transport (to pick the least busy thread). */
  busy: Map<number, number>;
  exited: Promise<void>;
  startedAt: number;
}

export interface SendWorkerStatus {
  /** Threads configured (SEND_WORKERS). */
  threads: number;
  /** Threads started again after one died, since the pool opened. */
  restarts: number;
  /** Sends failed because their thread died (classified ambiguous). */
  lostSends: number;
  lastCrash: { at: Date; thread: number; exitCode: number; error: string | null } | null;
}

export interface SendWorkerPoolOptions {
  threads: number;
  logger: Logger;
  /** The thread's entry (tests: one that fails); default send-worker.js, or .ts from the sources. */
  entry?: URL;
}

function workerUrl(): URL {
  return new URL(import.meta.url.endsWith('.ts') ? './send-worker.ts' : './send-worker.js', import.meta.url);
}

function startWorker(url: URL): Worker {
  if (!url.pathname.endsWith('.ts')) return new Worker(url);
  // From the sources (jest, tsx): the thread registers tsx first, then loads the TypeScript entry.
  const code = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(url.href)}); });`;
  return new Worker(code, { eval: true });
}

function toError(w: WireError): Error {
  return Object.assign(new Error(w.message), w);
}

export class SendWorkerPool {
  private readonly threads: (Thread | undefined)[];
  private readonly transports = new Map<number, WorkerTransport>();
  private nextId = 1;
  private nextTid = 1;
  private closing = false;
  private flushQueued = false;
  private readonly stats: SendWorkerStatus;
  private readonly logger: Logger;
  private readonly entry: URL;
  /** Per thread: the backoff before its next start after early deaths, and when it may start. */
  private readonly backoff: number[];
  private readonly downUntil: number[];

  constructor(opts: SendWorkerPoolOptions) {
    if (!Number.isInteger(opts.threads) || opts.threads < 1)
      throw new RangeError(`send worker threads must be at least 1, got ${opts.threads}`);
    this.threads = new Array<Thread | undefined>(opts.threads).fill(undefined);
    this.logger = opts.logger;
    this.entry = opts.entry ?? workerUrl();
    this.backoff = new Array<number>(opts.threads).fill(0);
    this.downUntil = new Array<number>(opts.threads).fill(0);
    this.stats = { threads: opts.threads, restarts: 0, lostSends: 0, lastCrash: null };
  }

  status(): SendWorkerStatus {
    return { ...this.stats };
  }

  /** A service's transport on the threads (the same options as createServiceTransport). */
  transport(stored: TransportConfig, maxConnections: number, storedDkim: DkimConfig | null, keyring: Keyring): WorkerTransport {
    if (this.closing) throw new Error('send worker pool is closed');
    // Opened now, so a bad key fails here as it would with createServiceTransport.
    openServiceSecrets(keyring, { transport: stored, dkim: storedDkim });
    const tid = this.nextTid++;
    const n = this.threads.length;
    maxConnections = Math.max(1, maxConnections);
    // maxConnections split over the threads, the remainder starting at a different thread per transport.
    const shares = Array.from(
      { length: n },
      (_, i) => Math.floor(maxConnections / n) + ((i - tid + n * n) % n < maxConnections % n ? 1 : 0),
    );
    const t = new WorkerTransport(this, tid, shares, { stored, storedDkim, keyring });
    this.transports.set(tid, t);
    shares.forEach((share, i) => {
      const th = this.threads[i];
      if (share === 0) return;
      // A thread that is not running opens every live transport (this one too) when it starts.
      if (th) this.post(th, this.openMessage(t, i));
      else if (this.downUntil[i]! <= Date.now()) this.spawn(i);
    });
    return t;
  }

  private openMessage(t: WorkerTransport, i: number): ToWorker {
    const { transport, dkim } = openServiceSecrets(t.source.keyring, { transport: t.source.stored, dkim: t.source.storedDkim });
    return { type: 'open', tid: t.tid, transport, dkim, maxConnections: t.shares[i]! };
  }

  private thread(i: number): Thread {
    const th = this.threads[i];
    if (th) return th;
    if (this.downUntil[i]! > Date.now()) throw new WorkerDownError(`send worker thread ${i} is down, restarting after a backoff`);
    return this.spawn(i);
  }

  /** Starts thread `index` with every live transport it carries. */
  private spawn(index: number): Thread {
    const worker = startWorker(this.entry);
    let lastError: string | null = null;
    let exitedResolve!: () => void;
    const th: Thread = {
      index,
      worker,
      pending: new Map(),
      outbox: [],
      releases: [],
      busy: new Map(),
      exited: new Promise<void>((r) => (exitedResolve = r)),
      startedAt: Date.now(),
    };
    this.threads[index] = th;
    for (const t of this.transports.values()) {
      if (t.shares[index] === 0) continue;
      try {
        this.post(th, this.openMessage(t, index));
      } catch (err) {
        // The row's secrets no longer open (a key removed since): its sends on this thread fail
        // as a closed transport would. Only the error's code and message are logged, never the options.
        const e = err as { code?: unknown; message?: unknown };
        this.logger.error({ thread: index, code: e.code, error: e.message }, 'send worker: a transport could not be opened');
      }
    }
    worker.on('message', (m: FromWorker) => {
      if (m.type !== 'settled') return;
      if (m.held) for (const id of m.held) th.pending.get(id)?.hold?.onHeld();
      for (const r of m.results) this.settle(th, r);
    });
    worker.on('error', (err) => {
      lastError = err instanceof Error ? err.message : String(err);
    });
    worker.on('exit', (code) => {
      exitedResolve();
      if (this.threads[index] === th) this.threads[index] = undefined;
      if (this.closing && th.pending.size === 0) return;
      this.crashed(th, code, lastError);
    });
    return th;
  }

  /** A thread died: its sends fail as ambiguous, it starts again with the live transports. */
  private crashed(th: Thread, exitCode: number, error: string | null): void {
    const lost = th.pending.size;
    const failure = new WorkerCrashError(
      `send worker thread ${th.index} exited (code ${exitCode}${error ? `: ${error}` : ''}) with the send under way`,
    );
    const pending = [...th.pending.values()];
    th.pending.clear();
    th.busy.clear();
    this.stats.lostSends += lost;
    this.stats.lastCrash = { at: new Date(), thread: th.index, exitCode, error };
    const i = th.index;
    let restartInMs = 0;
    if (!this.closing) {
      this.stats.restarts++;
      // Died as it started: again after a backoff (a broken install must not spin); else at once.
      this.backoff[i] =
        Date.now() - th.startedAt < EARLY_DEATH_MS ? Math.min(MAX_RESTART_BACKOFF_MS, Math.max(100, this.backoff[i]! * 2)) : 0;
      restartInMs = this.backoff[i]!;
      this.downUntil[i] = Date.now() + restartInMs;
      if (restartInMs === 0) this.spawn(i);
      else
        setTimeout(() => {
          if (!this.closing && !this.threads[i]) this.spawn(i);
        }, restartInMs).unref();
    }
    this.logger.error(
      { thread: i, exitCode, error, inFlight: lost, restarts: this.stats.restarts, restarted: !this.closing, restartInMs },
      'send worker thread died; its sends under way are classified ambiguous (delivery mode decides), held ones not released as never delivered',
    );
    for (const p of pending) {
      // A held send whose end never left this thread was not delivered, whatever the thread did.
      if (p.hold && !p.hold.released) p.reject(Object.assign(new WorkerCrashError(failure.message), { unreleased: true }));
      else p.reject(failure);
    }
  }

  private settle(th: Thread, r: Settled): void {
    const p = th.pending.get(r.id);
    if (!p) return;
    th.pending.delete(r.id);
    th.busy.set(p.tid, (th.busy.get(p.tid) ?? 1) - 1);
    const answeredAt = r.at === undefined ? undefined : monoToEpoch(r.at);
    if (r.error) p.reject(Object.assign(toError(r.error), { answeredAt }));
    else p.resolve(answeredAt === undefined ? r.info : { ...r.info, answeredAt });
  }

  private post(th: Thread, m: ToWorker): void {
    th.worker.postMessage(m);
  }

  /** The carrying thread with the fewest sends under way per connection of this transport (one that is down last). */
  private pick(t: WorkerTransport): Thread {
    let best = -1;
    let load = Infinity;
    const now = Date.now();
    for (let i = 0; i < t.shares.length; i++) {
      const share = t.shares[i]!;
      if (share === 0) continue;
      if (!this.threads[i] && this.downUntil[i]! > now) {
        if (best === -1) best = i;
        continue;
      }
      const l = (this.threads[i]?.busy.get(t.tid) ?? 0) / share;
      if (l < load) {
        load = l;
        best = i;
      }
    }
    return this.thread(best);
  }

  /**
   * A send or a probe on the least busy carrying thread: counted as under way there until it
   * settles (or the thread dies); `post` hands it to the thread under the id it settles with.
   */
  private submit<T>(t: WorkerTransport, post: (th: Thread, id: number) => void, hold?: Pending['hold']): Promise<T> {
    if (this.closing || t.closed) return Promise.reject(new WorkerDownError('send worker pool is closed'));
    let th: Thread;
    try {
      th = this.pick(t);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const id = this.nextId++;
    th.busy.set(t.tid, (th.busy.get(t.tid) ?? 0) + 1);
    const promise = new Promise<T>((resolve, reject) =>
      th.pending.set(id, { resolve: resolve as Pending['resolve'], reject, tid: t.tid, ...(hold ? { hold } : {}) }),
    );
    post(th, id);
    return promise;
  }

  send(t: WorkerTransport, mail: SendMailOptions): Promise<SendResult> {
    return this.submit(t, (th, id) => this.enqueue(th, { id, tid: t.tid, mail }));
  }

  /** Every send posted in this turn goes in one message, at the end of the turn. */
  private enqueue(th: Thread, send: Thread['outbox'][number]): void {
    th.outbox.push(send);
    this.queueFlush();
  }

  private queueFlush(): void {
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  /**
   * A held send (held-send.ts) on the least busy carrying thread. Its release and drop go to the
   * thread at once, each in a message of its own: the release is the pacer's instant.
   */
  hold(t: WorkerTransport, mail: SendMailOptions): HeldSend<SendResult> {
    let onHeld!: () => void;
    let onFailed!: (err: Error) => void;
    const held = new Promise<void>((resolve, reject) => {
      onHeld = resolve;
      onFailed = reject;
    });
    held.catch(() => undefined);
    const state = { onHeld: () => onHeld(), released: false };
    let at: { th: Thread; id: number } | undefined;
    const result = this.submit<SendResult>(
      t,
      (th, id) => {
        at = { th, id };
        this.enqueue(th, { id, tid: t.tid, mail, hold: true });
      },
      state,
    );
    result.catch((err: Error) => onFailed(err));
    const tell = (type: 'release' | 'drop') => {
      if (!at || !at.th.pending.has(at.id) || state.released || this.threads[at.th.index] !== at.th) return;
      if (type === 'drop') {
        if (at.th.outbox.length) this.flush(); // the send goes before its drop
        this.post(at.th, { type, ids: [at.id] });
        return;
      }
      state.released = true;
      // Released in this turn: with the sends of the turn, after them (flush).
      at.th.releases.push(at.id);
      this.queueFlush();
    };
    return { held, result, release: () => tell('release'), drop: () => tell('drop') };
  }

  private flush(): void {
    this.flushQueued = false;
    for (const th of this.threads) {
      if (!th) continue;
      if (th.outbox.length) {
        const sends = th.outbox;
        th.outbox = [];
        this.post(th, { type: 'send', sends });
      }
      if (th.releases.length) {
        const ids = th.releases;
        th.releases = [];
        this.post(th, { type: 'release', ids });
      }
    }
  }

  verify(t: WorkerTransport): Promise<unknown> {
    return this.submit(t, (th, id) => this.post(th, { type: 'verify', id, tid: t.tid }));
  }

  closeTransport(t: WorkerTransport): void {
    this.transports.delete(t.tid);
    t.shares.forEach((share, i) => {
      const th = this.threads[i];
      if (share > 0 && th) this.post(th, { type: 'close', tid: t.tid });
    });
  }

  /**
   * Test hook: makes a thread die (process.exit in it, or an uncaught error) with sends under way:
   * at once if it has some, else as soon as it is handed one.
   */
  crash(thread: number, how: 'exit' | 'throw' = 'exit'): void {
    const th = this.threads[thread];
    if (th) this.post(th, { type: 'crash', how });
  }

  /** Sends (and probes) under way on a thread now. */
  underWay(thread: number): number {
    return this.threads[thread]?.pending.size ?? 0;
  }

  /** The threads running now (a thread starts when a transport first needs it). */
  get running(): number {
    return this.threads.filter(Boolean).length;
  }

  /**
   * Closes every transport and thread: each thread closes its connections and ends; one still
   * running after `graceMs` is terminated. Sends still under way fail (the runners waited for
   * theirs before this).
   */
  async close(graceMs = 2000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.flush();
    this.transports.clear();
    const live = this.threads.filter((t): t is Thread => t !== undefined);
    for (const th of live) this.post(th, { type: 'shutdown' });
    await Promise.all(
      live.map(async (th) => {
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          th.exited.then(() => false),
          new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs))),
        ]);
        clearTimeout(timer);
        if (timedOut) await th.worker.terminate();
      }),
    );
  }
}

/** One service's transport on the pool's threads: nodemailer's sendMail, verify and close. */
export class WorkerTransport implements ServiceTransport {
  closed = false;
  constructor(
    private readonly pool: SendWorkerPool,
    readonly tid: number,
    /** Connections each thread holds for this service. */
    readonly shares: number[],
    /** The row's options as stored (sealed): opened again for a thread that starts over. */
    readonly source: { stored: TransportConfig; storedDkim: DkimConfig | null; keyring: Keyring },
  ) {}

  sendMail(mail: SendMailOptions): Promise<SendResult> {
    return this.pool.send(this, mail);
  }

  hold(mail: SendMailOptions): HeldSend<SendResult> {
    return this.pool.hold(this, mail);
  }

  verify(): Promise<unknown> {
    return this.pool.verify(this);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.closeTransport(this);
  }
}
