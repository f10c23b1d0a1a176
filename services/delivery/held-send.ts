/**
 * A message held at the server but for its end: the pacer's release lets the end go.
 *
 * Why. A paced send is judged where it arrives (scheduler/pacer.ts): the server must accept at
 * most k + 1 messages in any window of k intervals. Between the pacer's release and the server's
 * acceptance lay building the MIME message, MAIL FROM, RCPT TO and DATA (three round trips to
 * the server, each waiting for both processes to be scheduled), the message's bytes and the end
 * of data; between the acceptance and the answer, one more trip back. The pacer keeps later sends
 * behind the answers (a message that took longer than an interval moves the schedule back for
 * good), so every stall on that long road cost rate: W3 measured 0.5 to 1.6 % under 100 and 500
 * msg/s with another process busy on the machine.
 *
 * So the paced send of a service with connections to spare (scheduler/service-runner.ts,
 * holdsSends) goes in two steps. `hold` builds the message and runs the whole SMTP transaction
 * except its last bytes: the envelope is accepted, DATA is under way and every byte of the message
 * has been handed to the socket. The server cannot accept a message before its end of data
 * (RFC 5321, 4.1.1.4), so the message is not delivered, whatever waits. The pacer's release then
 * lets the end through (`\r\n.\r\n`, written by nodemailer's DataStream when its input ends), and
 * the road from release to answer is one trip to the server and back.
 *
 * How. HeldEnd is a pass-through stream added last to the message's stream (after DKIM signing,
 * which needs the whole message): it hands every chunk on and keeps back only the end of its
 * input. It counts as held once its input has ended and nodemailer has piped it into the DATA
 * stream (after the server's 354) with nothing left in its buffer. A held send that is dropped
 * (the service stopped, the campaign was paused) is destroyed with an error: nodemailer then
 * closes the connection (pool-resource.js: a stream error closes it), and a server drops a
 * message whose data never ended.
 *
 * A failure before the release (the envelope refused, the connection lost while held) carries
 * `unreleased: true`: classify.ts reads it as never delivered when no reply code says more.
 *
 * States, asserted (HOLD_TRANSITIONS): building -> held (input ended, piped, drained) ->
 * released (end handed on); building | held -> dropped (destroyed with HeldDropError). A release
 * while still building is kept: the end goes as soon as the input ends.
 */
import { Transform, type TransformCallback } from 'node:stream';
import type { SendMailOptions, Transporter } from 'nodemailer';

/** A send built and under way up to its end, waiting for `release()`. */
export interface HeldSend<R> {
  /** Resolves once the server has everything but the end; rejects when the send failed before. */
  held: Promise<void>;
  /** Lets the end go: from now the server may accept the message. */
  release(): void;
  /** The send is not wanted: its connection closes before the end, the server never accepts it. */
  drop(): void;
  /** The server's answer, as sendMail's. A failure before the release has `unreleased: true`. */
  result: Promise<R>;
}

/** Why a held send failed: dropped on purpose before its release. */
export class HeldDropError extends Error {
  readonly code = 'EHELDDROP';
  constructor() {
    super('held send dropped before its release');
    this.name = 'HeldDropError';
  }
}

/** How often a held message whose bytes are still buffered is looked at again (ms). */
const DRAIN_RECHECK_MS = 2;

/** The mail option nodemailer copies to the message; the `stream` plugin (installHeldEnd) reads it. */
const HOLD_KEY = '_fairsendHeldEnd';

type HoldState = 'building' | 'held' | 'released' | 'dropped';
const HOLD_TRANSITIONS: Record<HoldState, readonly HoldState[]> = {
  building: ['held', 'released', 'dropped'],
  held: ['released', 'dropped'],
  released: [],
  dropped: [],
};

export class HeldEnd extends Transform {
  private state: HoldState = 'building';
  private flushed: TransformCallback | undefined;
  private piped = false;
  private waits = 0;
  private onHeld!: () => void;
  private onFailed!: (err: Error) => void;
  readonly held: Promise<void>;

  constructor() {
    super();
    this.held = new Promise<void>((resolve, reject) => {
      this.onHeld = resolve;
      this.onFailed = reject;
    });
    // A rejection nobody awaits (the send failed, its result says why) must not crash the process.
    this.held.catch(() => undefined);
  }

  get wasReleased(): boolean {
    return this.state === 'released';
  }

  private to(next: HoldState): void {
    if (!HOLD_TRANSITIONS[this.state].includes(next)) throw new Error(`held send: ${this.state} -> ${next} is not a transition`);
    this.state = next;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.state === 'released') return done();
    this.flushed = done;
    this.check();
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    const out = super.pipe(destination, options);
    this.piped = true;
    this.check();
    return out;
  }

  /** Held once the input ended and the DATA stream has taken every byte before the end. */
  private check = (): void => {
    if (this.state !== 'building' || !this.flushed || !this.piped || this.destroyed) return;
    if (this.readableLength > 0) {
      // The flow starts on the next tick after the pipe; a large message behind a slow socket
      // drains for longer, and is looked at again on a timer rather than on every turn.
      if (this.waits++ === 0) setImmediate(this.check);
      else setTimeout(this.check, DRAIN_RECHECK_MS);
      return;
    }
    this.to('held');
    this.onHeld();
  };

  release(): void {
    if (this.state === 'released' || this.state === 'dropped' || this.destroyed) return;
    this.to('released');
    const done = this.flushed;
    this.flushed = undefined;
    done?.();
  }

  discard(): void {
    if (this.state === 'released' || this.state === 'dropped' || this.destroyed) return;
    this.to('dropped');
    this.destroy(new HeldDropError());
  }

  /** The send failed before it was held (called with the send's error). */
  failed(err: Error): void {
    this.onFailed(err);
  }
}

/**
 * Registers the `stream` step that puts a message's HeldEnd last in its stream. Call it after any
 * other step that adds to the stream (DKIM signing), before none that must see the end.
 */
export function installHeldEnd(transporter: Transporter): void {
  transporter.use('stream', (mail, next) => {
    const gate = (mail.data as Record<string, unknown>)[HOLD_KEY];
    if (gate instanceof HeldEnd)
      mail.message.processFunc((input) => {
        // A process function reports its input's errors on its output (mime-node's contract).
        input.once('error', (err: Error) => gate.destroy(err));
        return input.pipe(gate);
      });
    next();
  });
}

/**
 * Sends `mail` through `transporter` (made by createServiceTransport, which installs the gate)
 * held before its end.
 */
export function holdMail<R>(transporter: Transporter<R>, mail: SendMailOptions): HeldSend<R> {
  const gate = new HeldEnd();
  const result = transporter.sendMail({ ...mail, [HOLD_KEY]: gate } as SendMailOptions).catch((err: unknown) => {
    const e = (err instanceof Error ? err : new Error(String(err))) as Error & { unreleased?: boolean };
    if (!gate.wasReleased) e.unreleased = true;
    gate.failed(e);
    throw e;
  });
  result.catch(() => undefined); // a dropped send's failure is nobody's to await
  return { held: gate.held, release: () => gate.release(), drop: () => gate.discard(), result };
}
