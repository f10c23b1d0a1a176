/**
 * Options of the HTTP server, each with its default, in one place (graphile-worker's habit).
 */
import type { Logger } from '../../services/kernel/logger.js';
import type { WebhookSecrets } from './auth.js';

/**
 * The maintenance jobs, as the HTTP API and the CLI use them. Structural: the maintenance runner
 * (services/maintenance) satisfies it, and tests can pass a small object of their own.
 */
export interface JobsApi {
  list(): Promise<unknown[]> | unknown[];
  pause(name: string): unknown;
  resume(name: string): unknown;
  runNow(name: string): Promise<unknown>;
  reports?(limit: number): Promise<unknown[]>;
}

export interface HttpServerOptions {
  /** Port for listen() (default 3000; 0 picks a free one). */
  port?: number;
  /** Address for listen() (default 127.0.0.1; 0.0.0.0 to listen on every interface). */
  host?: string;
  /** A pino logger for requests and errors (default: the engine's, as a child with component=http). */
  logger?: Logger;
  /** Largest request body in bytes (default 1 MiB); the contact import takes `importBodyLimit`. */
  bodyLimit?: number;
  /** Largest contact import body in bytes (default 10 MiB). */
  importBodyLimit?: number;
  /** Contact imports with a larger body run in the background: 202, polled at /api/contacts/imports/:id (default 1 MiB). */
  backgroundImportBytes?: number;
  /** Secret of the one-click unsubscribe tokens (default: the engine's UNSUBSCRIBE_SECRET). Without one, /u/ answers 404. */
  unsubscribeSecret?: string;
  /** Public base URL of /u/ (default: the engine's UNSUBSCRIBE_URL_BASE); shown in the OpenAPI document. */
  unsubscribeBaseUrl?: string;
  /** Secret(s) a bounce webhook presents in X-Fairsend-Webhook-Secret: one string, or one per service id. */
  bounceWebhookSecret?: WebhookSecrets;
  /** The maintenance jobs (default: the engine's `jobs` when it has them; null: none, /api/jobs answers 404). */
  jobs?: JobsApi | null;
  /** Failed credential attempts per client address per minute before 429 (default 20). */
  authFailureLimit?: number;
  /**
   * Whether /metrics needs an admin or a metrics token (default: the engine's METRICS_AUTH, true unless
   * set; Prometheus sends one with `authorization` in scrape_configs).
   */
  metricsAuth?: boolean;
  /** Node process metrics in /metrics (default true). */
  processMetrics?: boolean;
  /** How long a count of queued subtasks is reused by status and /metrics (default 1000 ms; 0: count every time). */
  queueCountCacheMs?: number;
  /** How long /health waits for the database before answering 503 (default 2000 ms). */
  healthTimeoutMs?: number;
  /** Trust X-Forwarded-For for the client address (default false; set behind a reverse proxy). */
  trustProxy?: boolean | string | string[];
}

export const HTTP_DEFAULTS = {
  port: 3000,
  host: '127.0.0.1',
  bodyLimit: 1024 * 1024,
  importBodyLimit: 10 * 1024 * 1024,
  backgroundImportBytes: 1024 * 1024,
  authFailureLimit: 20,
  processMetrics: true,
  healthTimeoutMs: 2000,
  queueCountCacheMs: 1000,
  trustProxy: false,
} as const satisfies Partial<HttpServerOptions>;

/** The options with every default applied. */
export type ResolvedHttpOptions = HttpServerOptions & {
  -readonly [K in keyof typeof HTTP_DEFAULTS]-?: NonNullable<HttpServerOptions[K]>;
} & {
  metricsAuth: boolean;
};
