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
  /** Sends posted in one turn of the main thread, in dispatch order. */
  | { type: 'send'; sends: { id: number; tid: number; mail: SendMailOptions }[] }
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
}

/** `at`: when the thread saw the server's answer (or the failure), in monotonic ms (kernel/mono-clock.ts). */
export type Settled =
  | { id: number; at?: number; info: { response?: string | undefined; messageId: string }; error?: undefined }
  | { id: number; at?: number; error: WireError; info?: undefined };

export type FromWorker = { type: 'settled'; results: Settled[] };
