/**
 * The one place fairsend reads its configuration: environment variables (and an optional
 * `.env`), each with a default, validated with zod. A bad value stops start-up with a message
 * that names the variable and what is wrong, e.g.
 * `SCHEDULER_POOL_MAX must be a positive integer, got "-3"`.
 *
 * Every variable is listed in `.env.example` and in the README's configuration table; the
 * `VARIABLES` table below is the source of both.
 */
import { z } from 'zod';
import { IANAZone } from 'luxon';
import { ConfigError, type FieldIssue } from './errors.js';
import { parseSecretKey } from './secrets.js';
import { parseImapUrl } from '../inbound/imap-url.js';

type Kind = 'posInt' | 'nonNegInt' | 'nonNegNumber' | 'string' | 'url' | 'bool' | 'port' | 'zone' | 'enum';

interface VarSpec {
  env: string;
  kind: Kind;
  default?: string;
  values?: readonly string[];
  doc: string;
}

/** Every variable fairsend reads, its default and one line of meaning. */
export const VARIABLES = {
  databaseUrl: { env: 'DATABASE_URL', kind: 'url', doc: 'PostgreSQL connection string; when unset an embedded PostgreSQL is started' },
  embeddedPgDir: {
    env: 'EMBEDDED_PG_DIR',
    kind: 'string',
    default: './.fairsend/pg',
    doc: 'Data folder of the embedded PostgreSQL (used only without DATABASE_URL)',
  },
  embeddedPgPort: { env: 'EMBEDDED_PG_PORT', kind: 'port', default: '54329', doc: 'Port of the embedded PostgreSQL on 127.0.0.1' },
  apiPoolMax: { env: 'API_POOL_MAX', kind: 'posInt', default: '20', doc: 'Most connections of the API pool' },
  apiPoolMin: { env: 'API_POOL_MIN', kind: 'nonNegInt', default: '2', doc: 'Connections the API pool keeps open' },
  apiPoolAcquireMs: {
    env: 'API_POOL_ACQUIRE_MS',
    kind: 'posInt',
    default: '60000',
    doc: 'How long an API query waits for a free connection before failing',
  },
  apiPoolIdleMs: {
    env: 'API_POOL_IDLE_MS',
    kind: 'posInt',
    default: '30000',
    doc: 'Idle time after which an API connection above the minimum is closed',
  },
  apiPoolEvictMs: {
    env: 'API_POOL_EVICT_MS',
    kind: 'posInt',
    default: '60000',
    doc: 'How often the API pool looks for idle connections to close',
  },
  schedulerPoolMax: {
    env: 'SCHEDULER_POOL_MAX',
    kind: 'posInt',
    default: '5',
    doc: "Most connections of the scheduler pool, and of its prepared statements' pool (apart from the API pool)",
  },
  schedulerPoolMin: {
    env: 'SCHEDULER_POOL_MIN',
    kind: 'nonNegInt',
    default: '1',
    doc: "Connections the scheduler pool (and its prepared statements' pool) keeps open",
  },
  schedulerPoolAcquireMs: {
    env: 'SCHEDULER_POOL_ACQUIRE_MS',
    kind: 'posInt',
    default: '60000',
    doc: 'How long a scheduler query waits for a free connection',
  },
  schedulerPoolIdleMs: {
    env: 'SCHEDULER_POOL_IDLE_MS',
    kind: 'posInt',
    default: '30000',
    doc: 'Idle time after which a scheduler connection above the minimum is closed',
  },
  schedulerPoolEvictMs: {
    env: 'SCHEDULER_POOL_EVICT_MS',
    kind: 'posInt',
    default: '60000',
    doc: 'How often the scheduler pool looks for idle connections to close',
  },
  logLevel: {
    env: 'LOG_LEVEL',
    kind: 'enum',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    default: 'info',
    doc: 'Log level (pino)',
  },
  logFormat: {
    env: 'LOG_FORMAT',
    kind: 'enum',
    values: ['auto', 'pretty', 'json'],
    default: 'auto',
    doc: 'Log lines as readable text (pretty) or JSON; auto: text on a terminal, JSON when stdout is a file or a pipe',
  },
  smtpCatcherHost: {
    env: 'SMTP_CATCHER_HOST',
    kind: 'string',
    default: '127.0.0.1',
    doc: 'Address of the local SMTP catcher started by `npm start`',
  },
  smtpCatcherPort: { env: 'SMTP_CATCHER_PORT', kind: 'port', default: '2525', doc: 'Port of the local SMTP catcher (0 picks a free port)' },
  demoData: { env: 'DEMO_DATA', kind: 'bool', default: 'true', doc: 'Load the demo data set when the database has no users' },
  defaultTimezone: { env: 'DEFAULT_TIMEZONE', kind: 'zone', default: 'UTC', doc: 'Time zone for users and services that name none' },
  dbConnectTimeoutMs: {
    env: 'DB_CONNECT_TIMEOUT_MS',
    kind: 'posInt',
    default: '5000',
    doc: 'How long opening a PostgreSQL connection may take before it fails (an unreachable host then answers 503 quickly)',
  },
  schedulerBatchSize: { env: 'SCHEDULER_BATCH_SIZE', kind: 'posInt', default: '20', doc: 'Due campaigns generated per scheduler pass' },
  generationCopyMin: {
    env: 'GENERATION_COPY_MIN',
    kind: 'nonNegInt',
    default: '100000',
    doc: 'Campaigns of at least this many recipients get their queue written by COPY over a second connection (faster from 100,000 with a core to spare: docs/performance.md); 0: every campaign',
  },
  schedulerTickMs: {
    env: 'SCHEDULER_TICK_MS',
    kind: 'posInt',
    default: '250',
    doc: 'Scheduler tick: how often services refill, outcomes are written and changes are picked up',
  },
  attemptRecords: {
    env: 'ATTEMPT_RECORDS',
    kind: 'bool',
    default: 'true',
    doc: 'Keep a record of every send attempt (time, service, SMTP reply, duration) in send_attempts; pruned by cleanup_old_data',
  },
  deliveryMode: {
    env: 'DELIVERY_MODE',
    kind: 'enum',
    values: ['at-least-once', 'at-most-once'],
    default: 'at-least-once',
    doc: 'What happens to a message whose outcome is unknown after a crash or a dropped connection: resent with the same Message-ID, or marked unknown',
  },
  maxRetries: {
    env: 'MAX_RETRIES',
    kind: 'nonNegInt',
    default: '3',
    doc: 'Retries of a message after a temporary SMTP failure (4xx, timeout, dropped connection)',
  },
  retryDelayMs: { env: 'RETRY_DELAY_MS', kind: 'posInt', default: '60000', doc: 'Base retry delay; attempt n waits RETRY_DELAY_MS * 2^n' },
  leaseTtlMs: {
    env: 'LEASE_TTL_MS',
    kind: 'posInt',
    default: '60000',
    doc: 'How long a claimed message stays leased to an engine without a heartbeat before another may recover it',
  },
  heartbeatMs: { env: 'HEARTBEAT_MS', kind: 'posInt', default: '10000', doc: 'How often an engine heartbeats and renews its leases' },
  claimBatchSize: { env: 'CLAIM_BATCH_SIZE', kind: 'posInt', default: '100', doc: 'Messages claimed from a campaign at once' },
  unhealthyAfter: {
    env: 'UNHEALTHY_AFTER',
    kind: 'posInt',
    default: '5',
    doc: 'Consecutive connection or server failures after which a service is marked unhealthy and probed',
  },
  probeBackoffMs: {
    env: 'PROBE_BACKOFF_MS',
    kind: 'posInt',
    default: '5000',
    doc: 'First wait before probing an unhealthy service; doubles up to 5 minutes',
  },
  concurrencyInitial: {
    env: 'CONCURRENCY_INITIAL',
    kind: 'posInt',
    default: '2',
    doc: 'Concurrent SMTP sends a service starts with, and never goes under (bounded by its maxConnections)',
  },
  concurrencyStep: { env: 'CONCURRENCY_STEP', kind: 'posInt', default: '2', doc: 'Sends added or removed per concurrency change' },
  concurrencyUpMs: {
    env: 'CONCURRENCY_UP_MS',
    kind: 'posInt',
    default: '1000',
    doc: 'Least time between two scale-ups (backlog over twice the concurrency, latency healthy)',
  },
  concurrencyDownMs: {
    env: 'CONCURRENCY_DOWN_MS',
    kind: 'posInt',
    default: '30000',
    doc: 'Least time between two scale-downs (backlog under half the concurrency)',
  },
  concurrencyLatencyMs: {
    env: 'CONCURRENCY_LATENCY_MS',
    kind: 'posInt',
    default: '2000',
    doc: 'Average send latency at or above which a service does not scale up',
  },
  sendWorkers: {
    env: 'SEND_WORKERS',
    kind: 'nonNegInt',
    doc: "Worker threads that build, sign and send the messages (each holds its share of every service's connections); unset: the number of cores less one, at least 1; 0: on the main thread",
  },
  shutdownGraceMs: {
    env: 'SHUTDOWN_GRACE_MS',
    kind: 'posInt',
    default: '10000',
    doc: 'How long stopping waits for in-flight sends to finish',
  },
  unsubscribeUrlBase: {
    env: 'UNSUBSCRIBE_URL_BASE',
    kind: 'string',
    doc: 'Public base URL of the unsubscribe endpoint; when set, messages carry List-Unsubscribe headers',
  },
  unsubscribeSecret: {
    env: 'UNSUBSCRIBE_SECRET',
    kind: 'string',
    doc: 'Secret for signing unsubscribe tokens (required with UNSUBSCRIBE_URL_BASE; at least 16 characters)',
  },
  messageIdDomain: {
    env: 'MESSAGE_ID_DOMAIN',
    kind: 'string',
    doc: 'Domain of generated Message-IDs (default: the domain of the campaign sender)',
  },
  port: { env: 'PORT', kind: 'port', default: '3000', doc: 'Port of the HTTP API and dashboard' },
  host: { env: 'HOST', kind: 'string', default: '127.0.0.1', doc: 'Address the HTTP API listens on (0.0.0.0 for all interfaces)' },
  bounceWebhookSecret: {
    env: 'BOUNCE_WEBHOOK_SECRET',
    kind: 'string',
    doc: 'Shared secret a bounce webhook sends in X-Fairsend-Webhook-Secret (unset: only admin tokens may report bounces)',
  },
  bounceDomain: {
    env: 'BOUNCE_DOMAIN',
    kind: 'string',
    doc: 'Domain of the VERP return path bounce+<token>@BOUNCE_DOMAIN (unset: the sender address is the return path)',
  },
  bounceSecret: {
    env: 'BOUNCE_SECRET',
    kind: 'string',
    doc: 'Secret signing VERP tokens (required with BOUNCE_DOMAIN; at least 16 characters)',
  },
  bounceSmtpPort: { env: 'BOUNCE_SMTP_PORT', kind: 'port', doc: 'Port of the inbound SMTP listener for bounces (unset: no listener)' },
  bounceSmtpHost: { env: 'BOUNCE_SMTP_HOST', kind: 'string', default: '127.0.0.1', doc: 'Address the inbound bounce listener binds' },
  bounceImapUrl: {
    env: 'BOUNCE_IMAP_URL',
    kind: 'string',
    doc: 'imap[s]://user:password@host[:port]/MAILBOX polled for bounces (unset: no polling)',
  },
  bounceImapIntervalMs: { env: 'BOUNCE_IMAP_INTERVAL_MS', kind: 'posInt', default: '60000', doc: 'How often the bounce mailbox is polled' },
  softBounceLimit: {
    env: 'SOFT_BOUNCE_LIMIT',
    kind: 'posInt',
    default: '3',
    doc: "Soft bounces of one address within SOFT_BOUNCE_WINDOW_DAYS that put it on its owner's suppression list",
  },
  softBounceWindowDays: { env: 'SOFT_BOUNCE_WINDOW_DAYS', kind: 'posInt', default: '7', doc: 'Window over which soft bounces are counted' },
  breakerComplaintPercent: {
    env: 'BREAKER_COMPLAINT_PERCENT',
    kind: 'nonNegNumber',
    default: '0.3',
    doc: 'A campaign pauses itself when its complaints pass this share of its sent mail (percent)',
  },
  breakerHardBouncePercent: {
    env: 'BREAKER_HARD_BOUNCE_PERCENT',
    kind: 'nonNegNumber',
    default: '5',
    doc: 'A campaign pauses itself when its hard bounces pass this share of its sent mail (percent)',
  },
  breakerMinSent: {
    env: 'BREAKER_MIN_SENT',
    kind: 'posInt',
    default: '1000',
    doc: 'Sent messages a campaign needs before its breakers may trip (the minimum sample)',
  },
  shapingFile: {
    env: 'DELIVERABILITY_SHAPING_FILE',
    kind: 'string',
    doc: 'JSON file of limits per mailbox provider, adaptive settings and deferral rules for every service (docs/deliverability.md)',
  },
  mxLookupTimeoutMs: {
    env: 'MX_LOOKUP_TIMEOUT_MS',
    kind: 'nonNegInt',
    default: '2000',
    doc: 'How long a recipient domain MX lookup may take at generation (its provider is then other:<domain>); 0: no lookups',
  },
  secretKey: {
    env: 'FAIRSEND_SECRET_KEY',
    kind: 'string',
    doc: 'Key that encrypts stored secrets (SMTP passwords, DKIM and TLS keys): 32 bytes as base64 or 64 hex digits (`fairsend secrets generate-key`); the embedded demo makes one in its data folder',
  },
  secretKeyPrevious: {
    env: 'FAIRSEND_SECRET_KEY_PREVIOUS',
    kind: 'string',
    doc: 'Earlier keys, comma-separated: they still decrypt while `fairsend secrets rotate` re-encrypts with FAIRSEND_SECRET_KEY',
  },
  trustProxy: {
    env: 'TRUST_PROXY',
    kind: 'bool',
    default: 'false',
    doc: 'Take the client address from X-Forwarded-For (behind a reverse proxy)',
  },
  metricsAuth: {
    env: 'METRICS_AUTH',
    kind: 'bool',
    default: 'true',
    doc: '/metrics needs an admin or a metrics token (false: anyone who reaches the port may scrape)',
  },
  maintenanceEnabled: {
    env: 'MAINTENANCE_ENABLED',
    kind: 'bool',
    default: 'true',
    doc: 'Run the maintenance jobs (health, pool watch, cleanup, reports) on their schedules',
  },
  maintenanceTimezone: {
    env: 'MAINTENANCE_TIMEZONE',
    kind: 'zone',
    default: 'UTC',
    doc: 'Time zone of the daily and weekly maintenance times (02:00 ANALYZE, 04:00 cleanup, ...)',
  },
  maintenanceDisabledJobs: {
    env: 'MAINTENANCE_DISABLED_JOBS',
    kind: 'string',
    doc: 'Comma-separated maintenance jobs not to schedule (e.g. analyze_tables,index_report)',
  },
  maintenanceRetentionDays: {
    env: 'MAINTENANCE_RETENTION_DAYS',
    kind: 'posInt',
    default: '90',
    doc: 'cleanup_old_data deletes messages of campaigns finished longer ago than this',
  },
  maintenanceSlowQueryMs: {
    env: 'MAINTENANCE_SLOW_QUERY_MS',
    kind: 'posInt',
    default: '5000',
    doc: 'check_slow_queries reports queries running longer than this',
  },
  maintenanceIdleInTransactionMs: {
    env: 'MAINTENANCE_IDLE_IN_TRANSACTION_MS',
    kind: 'posInt',
    default: '60000',
    doc: "cleanup_connection_pool ends fairsend's own sessions idle in a transaction longer than this",
  },
} as const satisfies Record<string, VarSpec>;

type Vars = typeof VARIABLES;
type ValueOf<K extends Kind> = K extends 'bool' ? boolean : K extends 'posInt' | 'nonNegInt' | 'nonNegNumber' | 'port' ? number : string;

export type Config = {
  [K in keyof Vars]: Vars[K] extends { default: string } ? ValueOf<Vars[K]['kind']> : ValueOf<Vars[K]['kind']> | undefined;
};

const NEEDS: Record<Kind, string> = {
  posInt: 'a positive integer',
  nonNegInt: 'a non-negative integer',
  nonNegNumber: 'a non-negative number',
  string: 'a non-empty string',
  url: 'a postgres:// or postgresql:// URL',
  bool: 'true or false',
  port: 'a port number from 0 to 65535',
  zone: 'an IANA time zone such as Europe/Paris',
  enum: 'one of',
};

function schemaFor(spec: VarSpec): z.ZodType<unknown, string> {
  const fail = (ctx: z.RefinementCtx, raw: string) => {
    const need = spec.kind === 'enum' ? `one of ${spec.values!.join(', ')}` : NEEDS[spec.kind];
    ctx.addIssue({ code: 'custom', message: `${spec.env} must be ${need}, got ${JSON.stringify(raw)}` });
    return z.NEVER;
  };
  return z.string().transform((raw, ctx) => {
    const v = raw.trim();
    switch (spec.kind) {
      case 'posInt':
      case 'nonNegInt':
      case 'port': {
        if (!/^-?\d+$/.test(v)) return fail(ctx, raw);
        const n = Number(v);
        const min = spec.kind === 'posInt' ? 1 : 0;
        const max = spec.kind === 'port' ? 65535 : Number.MAX_SAFE_INTEGER;
        return n >= min && n <= max ? n : fail(ctx, raw);
      }
      case 'nonNegNumber': {
        const n = Number(v);
        return v !== '' && Number.isFinite(n) && n >= 0 ? n : fail(ctx, raw);
      }
      case 'bool':
        if (/^(true|1|yes|on)$/i.test(v)) return true;
        if (/^(false|0|no|off)$/i.test(v)) return false;
        return fail(ctx, raw);
      case 'url':
        return /^postgres(ql)?:\/\/.+/.test(v) && URL.canParse(v) ? v : fail(ctx, raw);
      case 'zone':
        return IANAZone.isValidZone(v) ? v : fail(ctx, raw);
      case 'enum':
        return spec.values!.includes(v) ? v : fail(ctx, raw);
      case 'string':
        return v !== '' ? v : fail(ctx, raw);
    }
  });
}

export type ConfigOverrides = Partial<{ [K in keyof Config]: Config[K] }>;

/**
 * Reads the configuration from `env` (default `process.env`), then applies `overrides`
 * (options given to `createEngine`, already typed). Throws a ConfigError naming every bad variable.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: ConfigOverrides = {}): Config {
  const issues: FieldIssue[] = [];
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(VARIABLES) as [string, VarSpec][]) {
    const override = (overrides as Record<string, unknown>)[key];
    const raw = override !== undefined ? String(override) : (env[spec.env] ?? spec.default);
    if (raw === undefined || (raw === '' && spec.default === undefined)) {
      out[key] = undefined;
      continue;
    }
    const parsed = schemaFor(spec).safeParse(raw);
    if (parsed.success) out[key] = parsed.data;
    else issues.push({ path: spec.env, message: parsed.error.issues[0]!.message });
  }
  if (out.apiPoolMin !== undefined && (out.apiPoolMin as number) > (out.apiPoolMax as number)) {
    issues.push({
      path: 'API_POOL_MIN',
      message: `API_POOL_MIN must not exceed API_POOL_MAX (${String(out.apiPoolMax)}), got "${String(out.apiPoolMin)}"`,
    });
  }
  if (out.schedulerPoolMin !== undefined && (out.schedulerPoolMin as number) > (out.schedulerPoolMax as number)) {
    issues.push({
      path: 'SCHEDULER_POOL_MIN',
      message: `SCHEDULER_POOL_MIN must not exceed SCHEDULER_POOL_MAX (${String(out.schedulerPoolMax)}), got "${String(out.schedulerPoolMin)}"`,
    });
  }
  if (out.unsubscribeUrlBase !== undefined && (out.unsubscribeSecret === undefined || String(out.unsubscribeSecret).length < 16)) {
    issues.push({
      path: 'UNSUBSCRIBE_SECRET',
      message: 'UNSUBSCRIBE_SECRET must be at least 16 characters when UNSUBSCRIBE_URL_BASE is set',
    });
  }
  if (out.bounceDomain !== undefined && (out.bounceSecret === undefined || String(out.bounceSecret).length < 16)) {
    issues.push({ path: 'BOUNCE_SECRET', message: 'BOUNCE_SECRET must be at least 16 characters when BOUNCE_DOMAIN is set' });
  }
  if (out.bounceImapUrl !== undefined) {
    try {
      parseImapUrl(String(out.bounceImapUrl));
    } catch (err) {
      // The message never repeats the URL: it holds the mailbox password.
      issues.push({ path: 'BOUNCE_IMAP_URL', message: (err as Error).message });
    }
  }
  if (out.secretKey !== undefined && !parseSecretKey(String(out.secretKey))) {
    issues.push({ path: 'FAIRSEND_SECRET_KEY', message: 'FAIRSEND_SECRET_KEY must be 32 bytes as base64 or 64 hex digits' });
  }
  for (const k of String(out.secretKeyPrevious ?? '')
    .split(',')
    .filter((s) => s.trim())) {
    if (!parseSecretKey(k)) {
      issues.push({
        path: 'FAIRSEND_SECRET_KEY_PREVIOUS',
        message: 'FAIRSEND_SECRET_KEY_PREVIOUS must be comma-separated keys of 32 bytes as base64 or 64 hex digits',
      });
      break;
    }
  }
  if (issues.length) throw new ConfigError(issues);
  return out as Config;
}

/** Loads `.env` from the working directory when there is one; variables already set win. */
export async function loadDotenv(path = '.env'): Promise<void> {
  const { existsSync } = await import('node:fs');
  if (!existsSync(path)) return;
  const dotenv = await import('dotenv');
  dotenv.config({ path, quiet: true });
}
