/**
 * The body of a send worker thread (see worker-transport.ts): it holds its share of each sending
 * service's connections as a real pooled transport (createServiceTransport), and builds, signs
 * and sends the messages the main thread posts to it. Results go back in batches: every result
 * that settled in one turn of this thread's event loop travels in one message, with the held
 * sends (held-send.ts) that became held in that turn; the main thread posts their releases once
 * per turn of its own, and each drop on its own.
 *
 * The transport options arrive opened (secrets decrypted) in the 'open' message, in memory only:
 * this thread never logs them (the transports are made with `logger: false`) and never sends them
 * back.
 */
import { parentPort } from 'node:worker_threads';
import type { SendMailOptions, Transporter } from 'nodemailer';
import { createServiceTransport } from './transport.js';
import { holdMail, type HeldSend } from './held-send.js';
import type { FromWorker, Settled, ToWorker, WireError } from './worker-protocol.js';
import { monoNow } from '../kernel/mono-clock.js';

const port = parentPort!;
const transports = new Map<number, Transporter>();
let results: Settled[] = [];
/** Held sends that became held this turn. */
let heldNow: number[] = [];
/** Held sends not released yet, by id. */
const holds = new Map<number, HeldSend<{ response?: unknown; messageId?: unknown }>>();
let flushing = false;
/** Sends handed to a transport, not settled yet. */
let underWay = 0;
/** Test hook: die as soon as a send is under way. */
let crashArmed: 'exit' | 'throw' | undefined;

function die(how: 'exit' | 'throw'): void {
  if (how === 'exit') process.exit(70);
  setImmediate(() => {
    throw new Error('send worker: injected crash');
  });
}

function flush(): void {
  flushing = false;
  const batch = results;
  const held = heldNow;
  results = [];
  heldNow = [];
  port.postMessage((held.length ? { type: 'settled', results: batch, held } : { type: 'settled', results: batch }) satisfies FromWorker);
}

function report(): void {
  if (!flushing) {
    flushing = true;
    setImmediate(flush);
  }
}

function settle(r: Settled): void {
  underWay--;
  // The instant of the answer, taken here: the main thread's pacer keeps later sends behind it
  // (scheduler/pacer.ts), and this thread sees it sooner than the main thread's busy loop would.
  r.at = monoNow();
  holds.delete(r.id);
  results.push(r);
  report();
}

/** The fields of nodemailer's error that classify.ts reads (an Error does not cross threads whole). */
function wireError(err: unknown): WireError {
  const e = (err ?? {}) as Record<string, unknown>;
  const out: WireError = { message: typeof e.message === 'string' ? e.message : String(err) };
  for (const k of ['code', 'originalCode', 'command', 'response'] as const) if (typeof e[k] === 'string') out[k] = e[k];
  if (typeof e.responseCode === 'number') out.responseCode = e.responseCode;
  if (e.unreleased === true) out.unreleased = true;
  return out;
}

function send(id: number, tid: number, mail: SendMailOptions, hold: boolean): void {
  underWay++;
  const t = transports.get(tid);
  if (!t)
    return settle({ id, error: { message: `send worker: transport ${tid} is not open`, code: 'EWORKER', unreleased: hold || undefined } });
  let result: Promise<{ response?: unknown; messageId?: unknown }>;
  if (hold) {
    const h = holdMail(t, mail);
    holds.set(id, h);
    h.held.then(
      () => {
        if (!holds.has(id)) return;
        heldNow.push(id);
        report();
      },
      () => undefined, // the result reports the failure
    );
    result = h.result;
  } else result = t.sendMail(mail);
  result.then(
    (info: { response?: unknown; messageId?: unknown }) =>
      settle({
        id,
        info: { response: typeof info.response === 'string' ? info.response : undefined, messageId: String(info.messageId ?? '') },
      }),
    (err: unknown) => settle({ id, error: wireError(err) }),
  );
  if (crashArmed) die(crashArmed);
}

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'open':
      transports.get(m.tid)?.close();
      transports.set(m.tid, createServiceTransport(m.transport, m.maxConnections, m.dkim));
      break;
    case 'send':
      for (const s of m.sends) send(s.id, s.tid, s.mail, s.hold === true);
      break;
    case 'release':
      for (const id of m.ids) holds.get(id)?.release();
      break;
    case 'drop':
      for (const id of m.ids) holds.get(id)?.drop();
      break;
    case 'verify': {
      underWay++;
      const t = transports.get(m.tid);
      if (!t) settle({ id: m.id, error: { message: `send worker: transport ${m.tid} is not open`, code: 'EWORKER' } });
      else
        t.verify().then(
          () => settle({ id: m.id, info: { messageId: '' } }),
          (err: unknown) => settle({ id: m.id, error: wireError(err) }),
        );
      break;
    }
    case 'close':
      transports.get(m.tid)?.close();
      transports.delete(m.tid);
      break;
    case 'shutdown':
      for (const t of transports.values()) t.close();
      transports.clear();
      // Nothing is left to keep the thread alive once the connections are closed.
      port.close();
      break;
    case 'crash':
      // Test hook (SendWorkerPool.crash): the thread dies with sends under way (now, or at the next send).
      if (underWay > 0) die(m.how);
      else crashArmed = m.how;
      break;
  }
});
