/** Messages between the main thread (worker-transport.ts) and a send worker thread (send-worker.ts). */
import type { SendMailOptions } from 'nodemailer';
import type { DkimConfig, TransportConfig } from '../../models/index.js';

/** A transport's options, secrets opened: they cross to the thread in memory, never anywhere else. */
export interface OpenTransport {
  type: 'open';
  tid: number;
  transport: TransportConfig;
  dkim: DkimConfig | null;
  /** This thread's share of the service's connections. */
  maxConnections: number;
}

export type ToWorker =
  | OpenTransport
  /**
   * Sends posted in one turn of the main thread, in order. `hold`: sent up to its end and held
   * there until a 'release' (held-send.ts); the thread reports it in `held` once it is.
   */
  | { type: 'send'; sends: { id: number; tid: number; mail: SendMailOptions; hold?: true }[] }
  /** Held sends whose end goes now (the pacer released them). */
  | { type: 'release'; ids: number[] }
  /** Held sends not wanted any more: their connections close before the end. */
  | { type: 'drop'; ids: number[] }
  | { type: 'verify'; id: number; tid: number }
  | { type: 'close'; tid: number }
  | { type: 'shutdown' }
  | { type: 'crash'; how: 'exit' | 'throw' };

/** The fields of a send error that classify.ts reads. */
export interface WireError {
  message: string;
  code?: string;
  originalCode?: string;
  command?: string;
  response?: string;
  responseCode?: number;
  /** A held send that failed before its release: the server never had its end. */
  unreleased?: boolean;
}

/** `at`: when the thread saw the server's answer (or the failure), in monotonic ms (kernel/mono-clock.ts). */
export type Settled =
  | { id: number; at?: number; info: { response?: string | undefined; messageId: string }; error?: undefined }
  | { id: number; at?: number; error: WireError; info?: undefined };

/** What settled in one turn of the thread, and the held sends that became held in it. */
export type FromWorker = { type: 'settled'; results: Settled[]; held?: number[] };
