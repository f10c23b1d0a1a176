/**
 * The engine: configuration, the embedded or given PostgreSQL, its pools, models, migrations.
 * Later layers (campaign API, scheduler, HTTP) hang off the object createEngine returns.
 */
import type { SendWorkerPool } from '../services/delivery/worker-transport.js';
import type { Sequelize } from 'sequelize';
import { loadConfig, type Config, type ConfigOverrides } from '../services/kernel/config.js';
import { APP_NAME_API, APP_NAME_PREPARED, APP_NAME_SCHEDULER, createSequelize, poolSettings, poolUsage } from '../services/kernel/db.js';
import { attachPreparedPool } from '../services/kernel/db-prepared.js';
import { embeddedSecretKey, startEmbeddedPostgres, type EmbeddedPostgresHandle } from './embedded-postgres.js';
import { Keyring } from '../services/kernel/secrets.js';
import { secureStoredSecrets } from '../services/service-secrets.js';
import { componentLogger, createLogger, redactUrl, type LogFormat, type Logger } from '../services/kernel/logger.js';
import { migrateUp } from './migrator.js';
import { defineModels, type Models } from '../models/index.js';
import { createCampaignsApi, type CampaignsApi } from '../services/campaigns.js';
import { createContactsApi, type ContactsApi } from '../services/contacts.js';
import { systemClock, type Clock, type ServiceContext } from '../services/context.js';
import { createProviderResolver, type MxLookup } from '../services/deliverability/providers.js';
import { createGenerator, type GenerationResult } from '../services/generation.js';
import { createSendingServicesApi, type SendingServicesApi } from '../services/sending-services.js';
import { createTemplatesApi, type TemplatesApi } from '../services/templates.js';
import { createUsersApi, type UsersApi } from '../services/users.js';
import { createSubscriptionsApi, type SubscriptionsApi } from '../services/contact-status.js';
import { createSuppressionsApi, type SuppressionsApi } from '../services/suppressions.js';
import { createBouncesApi, type BouncesApi } from '../services/bounces.js';
import { createBreakersApi, type BreakersApi } from '../services/breakers.js';
import { handleInbound, type InboundMessage, type InboundOutcome } from '../services/inbound/inbound.js';
import { startBounceListener, type BounceListener } from '../services/inbound/smtp-listener.js';
import { startImapPoller, type ImapPoller, type PollResult } from '../services/inbound/imap-poller.js';
import { createWebhooksApi, type WebhookDeps, type WebhooksApi } from '../services/webhooks/index.js';
import { QueueScheduler, type InstanceInfo, type SchedulerStatus, type SentEvent } from '../services/scheduler/loop.js';
import { createMaintenance, type Maintenance } from '../services/maintenance/index.js';
import { JOB_NAMES, type JobName } from '../services/maintenance/options.js';

export interface EngineOptions extends ConfigOverrides {
  /** PostgreSQL URL; omitted (and no DATABASE_URL): an embedded PostgreSQL is started. */
  databaseUrl?: string;
  /** Environment to read configuration from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** A pino logger; default: one at `LOG_LEVEL` writing JSON to stdout. */
  logger?: Logger;
  /** Run migrations on start (default true). */
  migrate?: boolean;
  /** The clock every time-dependent decision reads (default: the system clock). Tests inject one. */
  clock?: Clock;
  /** Provider webhooks: how SNS certificates are fetched and subscriptions confirmed (tests inject these; default fetch). */
  webhooks?: Pick<WebhookDeps, 'fetchCert' | 'confirmSubscription'>;
  /** How recipient domains' MX hosts are looked up (default: DNS). Tests inject a fake one: these machines have no DNS. */
  mxLookup?: MxLookup;
}

export interface EngineCore {
  readonly config: Config;
  readonly logger: Logger;
  /** The API side's Sequelize instance and pool. */
  readonly apiDb: Sequelize;
  /** The scheduler side's Sequelize instance and pool, apart from the API's. */
  readonly schedulerDb: Sequelize;
  /**
   * The pool the scheduler's prepared statements run on (attached to schedulerDb: queryPrepared
   * finds it), its sessions on generic plans (kernel/db.ts, APP_NAME_PREPARED).
   */
  readonly preparedDb: Sequelize;
  /** Models bound to the API pool. */
  readonly models: Models;
  /** Where the database is, with any password redacted. */
  readonly databaseLabel: string;
  /** The connection string in use (embedded or given). Contains credentials: never log it. */
  readonly databaseUrl: string;
  readonly embedded: boolean;
  /** FAIRSEND_SECRET_KEY (and earlier keys): seals stored secrets; the embedded demo keeps its own in its data folder. */
  readonly secrets: Keyring;
  pools(): { api: ReturnType<typeof poolUsage>; scheduler: ReturnType<typeof poolUsage>; prepared: ReturnType<typeof poolUsage> };
  close(): Promise<void>;
}

export async function createEngineCore(options: EngineOptions = {}): Promise<EngineCore> {
  const {
    env = process.env,
    logger: givenLogger,
    migrate = true,
    clock: _clock,
    webhooks: _webhooks,
    mxLookup: _mx,
    ...overrides
  } = options;
  const config = loadConfig(env, overrides);
  const logger = givenLogger ?? createLogger(config.logLevel, undefined, config.logFormat as LogFormat);

  let embedded: EmbeddedPostgresHandle | undefined;
  let url = config.databaseUrl;
  let secretKey = config.secretKey;
  if (!url) {
    embedded = await startEmbeddedPostgres({ dataDir: config.embeddedPgDir, port: config.embeddedPgPort, logger });
    url = await ensureDatabase(embedded, 'fairsend');
    secretKey ??= await embeddedSecretKey(embedded.dataDir);
  }
  const secrets = Keyring.fromConfig(secretKey, config.secretKeyPrevious);

  const apiDb = createSequelize(url, poolSettings(config, 'api'), APP_NAME_API, logger, config.dbConnectTimeoutMs);
  const schedulerDb = createSequelize(url, poolSettings(config, 'scheduler'), APP_NAME_SCHEDULER, logger, config.dbConnectTimeoutMs);
  const preparedDb = createSequelize(url, poolSettings(config, 'scheduler'), APP_NAME_PREPARED, logger, config.dbConnectTimeoutMs, {
    planCacheMode: 'force_generic_plan',
  });
  attachPreparedPool(schedulerDb, preparedDb);
  const closeAll = async () => {
    await Promise.allSettled([apiDb.close(), schedulerDb.close(), preparedDb.close()]);
    await embedded?.stop();
  };
  try {
    await apiDb.authenticate();
    if (migrate) {
      const ran = await migrateUp(apiDb);
      if (ran.length) logger.info({ migrations: ran }, 'migrations applied');
    }
  } catch (err) {
    await closeAll();
    throw err;
  }

  let closed: Promise<void> | undefined;
  return {
    config,
    logger,
    apiDb,
    schedulerDb,
    preparedDb,
    models: defineModels(apiDb),
    databaseLabel: embedded ? `embedded PostgreSQL on 127.0.0.1:${embedded.port} (data in ${embedded.dataDir})` : redactUrl(url),
    databaseUrl: url,
    embedded: embedded !== undefined,
    secrets,
    pools: () => ({ api: poolUsage(apiDb), scheduler: poolUsage(schedulerDb), prepared: poolUsage(preparedDb) }),
    close: () => (closed ??= closeAll()),
  };
}

/** Creates `name` on the embedded cluster when missing; returns its URL. */
async function ensureDatabase(embedded: EmbeddedPostgresHandle, name: string): Promise<string> {
  const pg = await import('pg');
  const client = new pg.default.Client({ connectionString: embedded.url('postgres') });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) await client.query(`CREATE DATABASE "${name}"`);
  } finally {
    await client.end();
  }
  return embedded.url(name);
}

/** The engine as users see it: the core plus the programmatic API. */
export interface Engine extends EngineCore {
  readonly clock: Clock;
  readonly users: UsersApi;
  /** Sending services (SMTP accounts, relays): rate, daily quota, who may use them. */
  readonly services: SendingServicesApi;
  readonly contacts: ContactsApi;
  /** Unsubscribes through the API, re-activation by an admin with a reason, and each contact's status history. */
  readonly subscriptions: SubscriptionsApi;
  readonly templates: TemplatesApi;
  readonly campaigns: CampaignsApi;
  /** The suppression list: per user, and the admin-managed global list (services/suppressions.ts). */
  readonly suppressions: SuppressionsApi;
  /** Bounce and complaint reports, and inbound mail kept for review (services/bounces.ts). */
  readonly bounces: BouncesApi;
  /** Safety breakers and user pauses (services/breakers.ts). */
  readonly breakers: BreakersApi;
  /** Provider webhooks (Mailgun, SendGrid, Postmark, SparkPost, SES), each tied to a sending service. */
  readonly webhooks: WebhooksApi;
  /** Inbound bounce mail: DSNs and ARF reports by SMTP (BOUNCE_SMTP_PORT) or IMAP (services/inbound/). */
  readonly inbound: {
    /** Applies one inbound message (or keeps it for review). */
    handle(msg: InboundMessage): Promise<InboundOutcome>;
    /** The port the bounce listener is bound to; undefined when BOUNCE_SMTP_PORT is unset. */
    readonly smtpPort: number | undefined;
    /**
     * Polls the bounce mailbox now (BOUNCE_IMAP_URL; after any poll under way) and says what it did;
     * undefined when no mailbox is set. It is also polled every BOUNCE_IMAP_INTERVAL_MS.
     */
    pollImap(): Promise<PollResult | undefined>;
  };
  readonly scheduler: {
    /** Starts delivery: per-service timers, fair rounds, quota, retries, lease recovery. */
    start(): Promise<void>;
    /** Stops delivery gracefully: in-flight sends finish, outcomes are written, leases released. */
    stop(): Promise<void>;
    status(): SchedulerStatus;
    /** Live engine processes on this database (heartbeat within 3 x HEARTBEAT_MS) and the services each owns. */
    instances(): Promise<InstanceInfo[]>;
    /** One control pass begun after this call (normally run by the timer every SCHEDULER_TICK_MS): a pause committed before it has taken effect when it resolves. */
    tick(): Promise<void>;
    /** Writes pending outcomes now. */
    flush(): Promise<void>;
    /** Generates the subtask queues of up to `batchSize` due campaigns (exactly once each). */
    processScheduledTasks(batchSize?: number): Promise<GenerationResult[]>;
    /** 'sent' (SentEvent), 'retry', 'failed', 'tick', 'error', 'written' ({ outcomes }: one committed outcome write). */
    on(event: 'sent', listener: (e: SentEvent) => void): void;
    on(event: 'retry' | 'failed' | 'tick' | 'error' | 'written', listener: (e: unknown) => void): void;
    off(event: string, listener: (...args: never[]) => void): void;
    readonly instanceId: string;
    /** The send worker threads of this run (SEND_WORKERS), undefined when SMTP work runs on the main thread. */
    readonly sendPool: SendWorkerPool | undefined;
  };
  /** Maintenance jobs (health, pool watch, cleanup, reports): list, pause, resume, run now. */
  readonly jobs: Maintenance;
}

/**
 * Starts fairsend: the embedded PostgreSQL unless `databaseUrl` (or DATABASE_URL) names a server,
 * migrations, the pools, and the programmatic API. Call `close()` when done.
 */
export async function createEngine(options: EngineOptions = {}): Promise<Engine> {
  const core = await createEngineCore(options);
  const clock = options.clock ?? systemClock;
  const ctx: ServiceContext = {
    config: core.config,
    logger: core.logger,
    apiDb: core.apiDb,
    schedulerDb: core.schedulerDb,
    models: core.models,
    clock,
    secrets: core.secrets,
  };
  try {
    // Refuse to start with secrets no configured key opens; encrypt any still in plain text.
    await secureStoredSecrets(core.apiDb, core.secrets, core.logger);
  } catch (err) {
    await core.close();
    throw err;
  }
  const providers = createProviderResolver({
    timeoutMs: core.config.mxLookupTimeoutMs,
    ...(options.mxLookup ? { lookup: options.mxLookup } : {}),
  });
  const generator = createGenerator(ctx, { providers });
  const queue = new QueueScheduler(ctx, { generator, databaseUrl: core.databaseUrl });
  const { config } = core;
  const disabled = (config.maintenanceDisabledJobs ?? '')
    .split(',')
    .map((j) => j.trim())
    .filter(Boolean) as JobName[];
  let jobs: Maintenance;
  try {
    jobs = createMaintenance({
      databaseUrl: core.databaseUrl,
      apiDb: core.apiDb,
      schedulerDb: core.schedulerDb,
      logger: componentLogger(core.logger, 'maintenance'),
      clock,
      timezone: config.maintenanceTimezone,
      options: {
        disabled: disabled.filter((j) => (JOB_NAMES as readonly string[]).includes(j)),
        retentionDays: config.maintenanceRetentionDays,
        slowQueryMs: config.maintenanceSlowQueryMs,
        idleInTransactionMs: config.maintenanceIdleInTransactionMs,
      },
    });
  } catch (err) {
    await core.close();
    throw err;
  }
  const unknownJobs = disabled.filter((j) => !(JOB_NAMES as readonly string[]).includes(j));
  if (unknownJobs.length) core.logger.warn({ unknownJobs }, 'MAINTENANCE_DISABLED_JOBS names unknown jobs');
  const bounces = createBouncesApi(ctx);
  const inboundDeps = { db: core.apiDb, bounces, logger: componentLogger(core.logger, 'inbound'), secret: config.bounceSecret };
  let listener: BounceListener | undefined;
  if (config.bounceSmtpPort !== undefined) {
    try {
      listener = await startBounceListener({
        port: config.bounceSmtpPort,
        host: config.bounceSmtpHost,
        domain: config.bounceDomain,
        logger: inboundDeps.logger,
        handle: (msg) => handleInbound(inboundDeps, msg),
      });
    } catch (err) {
      await jobs.close();
      await core.close();
      throw err;
    }
  }
  let poller: ImapPoller | undefined;
  if (config.bounceImapUrl !== undefined) {
    try {
      poller = startImapPoller({
        url: config.bounceImapUrl,
        intervalMs: config.bounceImapIntervalMs,
        logger: inboundDeps.logger,
        handle: (msg) => handleInbound(inboundDeps, msg),
      });
    } catch (err) {
      await listener?.close();
      await jobs.close();
      await core.close();
      throw err;
    }
  }
  const closeCore = core.close;
  const contacts = createContactsApi(ctx);
  return Object.assign(core, {
    clock,
    users: createUsersApi(ctx),
    services: createSendingServicesApi(ctx),
    contacts,
    subscriptions: createSubscriptionsApi(ctx),
    templates: createTemplatesApi(ctx),
    // The forecast reads the throttles of the services this process runs.
    campaigns: createCampaignsApi(ctx, { live: () => new Map(queue.status().services.map((sv) => [sv.id, sv.deliverability])) }),
    suppressions: createSuppressionsApi(ctx),
    bounces,
    webhooks: createWebhooksApi(ctx, { bounces, ...options.webhooks }),
    inbound: {
      handle: (msg: InboundMessage) => handleInbound(inboundDeps, msg),
      smtpPort: listener?.port,
      pollImap: async () => poller?.poll(),
    },
    breakers: createBreakersApi(ctx),
    scheduler: {
      start: () => queue.start(),
      stop: () => queue.stop(),
      status: () => queue.status(),
      instances: () => queue.instances(),
      tick: () => queue.tick(),
      flush: () => queue.flush(),
      processScheduledTasks: (batchSize?: number) => generator.processScheduledTasks(batchSize, clock()),
      on: (event: string, listener: (...args: never[]) => void) => void queue.on(event, listener as (...a: unknown[]) => void),
      off: (event: string, listener: (...args: never[]) => void) => void queue.off(event, listener as (...a: unknown[]) => void),
      instanceId: queue.instanceId,
      get sendPool() {
        return queue.sendPool;
      },
    } as Engine['scheduler'],
    jobs,
    // Stopping the scheduler comes first: its outcomes must be written while the pools are open.
    close: async () => {
      await listener?.close();
      await poller?.close();
      await queue.stop();
      await contacts.closeImports();
      await jobs.close();
      await closeCore();
    },
  });
}
