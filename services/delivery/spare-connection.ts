/**
 * A warm spare connection in nodemailer's SMTP pool.
 *
 * nodemailer's pool opens a connection when a message finds every open one busy, and that message
 * then waits for the new connection's set-up: TCP, the server's greeting, EHLO, STARTTLS and AUTH.
 * Servers delay the greeting on purpose (smtp-server waits 100 ms for early talkers; postfix's
 * postscreen waits seconds), so that one message reaches the server far later than its neighbours.
 * For a paced service that is lost rate for good: the pacer keeps later sends behind the server's
 * answers (scheduler/pacer.ts), and W3 measured about 90 ms lost per new connection at 100 msg/s,
 * most of the shortfall of a 10 s run.
 *
 * So the pool keeps one connection ready beyond those in use. Once the pool has a connection, right
 * before each message is handed to it (nodemailer's `stream` plugin step, which runs just before
 * the transport's send): if the idle connections would not leave one spare once this message and
 * those queued before it have taken theirs, no spare is being opened already, and the pool is under
 * maxConnections, one more connection is opened and greeted in the background. It is handed no
 * message until it is ready; then the pool's own queue takes it. Meanwhile the pool opens no other
 * connection: a message that finds none idle waits for the spare or for a busy one to free up, both
 * sooner than a connection opened from scratch. The pool never holds more than maxConnections, and
 * never more than one connection beyond what its busiest moment used (idle ones close after
 * nodemailer's idle timeout, or when the server drops them, and are opened again when needed).
 *
 * A spare that fails to open (the server limits connections per client, or is down) stops the
 * warming for SPARE_BACKOFF_MS, so a server that refuses extra connections sees one attempt per
 * backoff, not one per message; the sends themselves go on over the open connections.
 *
 * This reaches into the pool's internals (`_connections`, `_queue`, `_createConnection` and the
 * resource's `connect`, as in nodemailer 10): when they are not there (another nodemailer), no
 * warming happens and the pool behaves as before. test/spare-connection.test.ts pins the behaviour.
 *
 * States of a spare: warming -> ready (handed to the pool's queue) | failed (backoff starts).
 */
import type { EventEmitter } from 'node:events';
import type { Transporter } from 'nodemailer';

/** How long warming stops after a spare failed to open (ms). */
export const SPARE_BACKOFF_MS = 30_000;

interface PoolResource extends EventEmitter {
  available: boolean;
  connect(callback: (err?: Error | null) => void): void;
  _startIdleTimer?: () => void;
}

interface SmtpPool {
  options: { maxConnections?: number };
  _connections: PoolResource[];
  _queue: unknown[];
  _closed: boolean;
  _createConnection(): PoolResource;
}

function isPool(x: unknown): x is SmtpPool {
  const p = x as Partial<SmtpPool> | undefined;
  return !!p && Array.isArray(p._connections) && Array.isArray(p._queue) && typeof p._createConnection === 'function';
}

export interface SpareOptions {
  /** Clock for the backoff (tests drive it). */
  now?: () => number;
  backoffMs?: number;
}

/** What the warming did, for tests and status. */
export interface SpareStats {
  /** Spares opened (attempts). */
  opened: number;
  /** Of those, greeted and handed to the pool. */
  ready: number;
  /** Of those, failed to open (each starts a backoff). */
  failed: number;
}

/**
 * Keeps a warm spare in the transporter's pool (see the header). Returns the stats object it
 * updates, or null when the transporter is not a nodemailer pool this knows (nothing is changed).
 */
export function keepSpareConnection(transporter: Transporter, opts: SpareOptions = {}): SpareStats | null {
  const pool = (transporter as unknown as { transporter?: unknown }).transporter;
  if (!isPool(pool)) return null;
  const now = opts.now ?? Date.now;
  const backoffMs = opts.backoffMs ?? SPARE_BACKOFF_MS;
  const stats: SpareStats = { opened: 0, ready: 0, failed: 0 };
  let warming = 0;
  let failedAt = -Infinity;
  /** The pool's maxConnections while a spare is being opened (see open()). */
  let heldMax: number | undefined;
  const release = () => {
    if (heldMax !== undefined) pool.options.maxConnections = heldMax;
    heldMax = undefined;
  };

  const open = () => {
    const r = pool._createConnection();
    r.available = false; // no message until it is greeted
    // While the spare is being greeted, a message that finds no idle connection must wait for it
    // (or for a busy one to free up) rather than make the pool open yet another connection from
    // scratch: the pool opens none beyond those it has until the spare is ready or has failed.
    heldMax = pool.options.maxConnections ?? 5;
    pool.options.maxConnections = pool._connections.length;
    warming++;
    stats.opened++;
    let done = false;
    const fail = () => {
      if (done) return;
      done = true;
      warming--;
      stats.failed++;
      failedAt = now();
      release();
    };
    // Before the pool's own handlers, so its queue is served with the bound restored.
    r.prependOnceListener('error', fail);
    r.prependOnceListener('close', fail);
    r.connect((err) => {
      if (done) return;
      if (err) return fail();
      done = true;
      warming--;
      release();
      r.removeListener('error', fail);
      r.removeListener('close', fail);
      if (!pool._closed) stats.ready++;
      r.available = true;
      r._startIdleTimer?.();
      // The pool's queue takes it now, if anything waits; a pool closed meanwhile closes it (the
      // pool's close() leaves connections that are not available, as this one was, to this event).
      r.emit('available');
    });
  };

  const beforeSend = () => {
    // One spare opens at a time (a refusal is known only after the server's greeting delay).
    if (warming > 0 || pool._closed || now() - failedAt < backoffMs) return;
    const max = pool.options.maxConnections ?? 5;
    // The pool opens its first connection for the first message itself: a spare starts beside it.
    if (pool._connections.length === 0 || pool._connections.length >= max) return;
    let spare = 0;
    for (const c of pool._connections) if (c.available) spare++;
    // This message takes one of them, and each message queued before it takes one too.
    if (spare - pool._queue.length - 1 < 1) open();
  };

  transporter.use('stream', (_mail, next) => {
    try {
      beforeSend();
    } finally {
      next();
    }
  });
  return stats;
}
