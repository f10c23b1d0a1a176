/**
 * `npm start`: the engine on embedded defaults (or DATABASE_URL), the demo data in an empty
 * database, the local SMTP catcher the demo services point at, a "ready" summary, and a clean
 * exit on Ctrl-C or SIGTERM (pools closed, embedded PostgreSQL stopped, no orphan process).
 */
import { loadDotenv } from '../services/kernel/config.js';
import { createEngine, type Engine } from './engine.js';
import { ConfigError } from '../services/kernel/errors.js';
import { SecretKeyError } from '../services/kernel/secrets.js';
import { detachEmbeddedSignalHooks } from './embedded-postgres.js';
import { seedAll } from './migrator.js';
import { startSmtpCatcher, type SmtpCatcher } from './smtp-catcher.js';
import { createHttpServer, type HttpServer } from './http/server.js';
import { createToken } from '../services/auth.js';
import { createRepeatLevel } from './progress-log.js';

async function readySummary(engine: Engine, catcher: SmtpCatcher): Promise<string> {
  const services = await engine.models.EmailService.findAll({ order: [['id', 'ASC']] });
  const campaigns = await engine.models.Task.findAll({ order: [['id', 'ASC']] });
  const lines = [
    'fairsend ready',
    `  database:     ${engine.databaseLabel}`,
    `  smtp catcher: ${catcher.host}:${catcher.port}`,
    `  services (${services.length}):`,
    ...services.map(
      (s) =>
        `    #${s.id} ${s.name}: one send every ${s.sendingRate}s, quota ${s.usedQuota}/${s.dailyQuota} used today (${s.quotaTimezone})${s.enabled ? '' : ' [disabled]'}`,
    ),
    `  campaigns (${campaigns.length}):`,
    ...campaigns.map((c) => `    #${c.id} ${c.name}: ${c.status}, ${c.reservedQuota} recipients reserved`),
  ];
  return lines.join('\n');
}

/**
 * One log line per campaign that is still moving, and a scheduler summary, every few seconds; a
 * line whose figures did not move since the last is written at debug (src/progress-log.ts).
 */
const levelOf = createRepeatLevel();
async function logProgress(engine: Engine): Promise<void> {
  try {
    const active = (await engine.campaigns.list()).filter((c) => c.status === 'sending' || c.status === 'scheduled');
    for (const c of active) {
      const p = await engine.campaigns.progress(c.id, { forecast: false }); // not logged: no need to make it
      engine.logger[levelOf(`campaign ${c.id}`, [p.status, p.sent, p.failed, p.waitReason])](
        { campaign: c.id, name: c.name, status: p.status, sent: p.sent, total: p.total, failed: p.failed, waitReason: p.waitReason },
        'progress',
      );
    }
    const st = engine.scheduler.status();
    const services = st.services.map((s) => `${s.name}:${s.state}:${s.sent}`);
    engine.logger[levelOf('scheduler', services)]({ perMinute: st.processingRate.perMinute1, services }, 'scheduler');
  } catch (err) {
    engine.logger.warn({ err }, 'progress report failed');
  }
}

async function main(): Promise<void> {
  await loadDotenv();
  const engine = await createEngine();
  detachEmbeddedSignalHooks(); // our shutdown below stops the cluster last, after the scheduler
  const { config, logger } = engine;
  let catcher: SmtpCatcher | undefined;
  let stopping = false;
  let progressTimer: NodeJS.Timeout | undefined;
  let http: HttpServer | undefined;
  let startup: Promise<void> = Promise.resolve();
  const shutdown = async (signal: string) => {
    if (stopping) {
      // A second Ctrl-C: the user will not wait for in-flight sends (their leases are recovered at
      // the next start). Our exit hook in src/embedded-postgres.ts still stops the cluster.
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await startup.catch(() => undefined); // a start-up under way finishes (or fails) first
    clearInterval(progressTimer);
    await http?.close();
    await engine.close(); // scheduler first (in-flight sends finish), then jobs, pools, embedded PostgreSQL
    await catcher?.stop();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  startup = (async () => {
    catcher = await startSmtpCatcher({ host: config.smtpCatcherHost, port: config.smtpCatcherPort });
    if (config.demoData && (await engine.models.User.count()) === 0) {
      process.env.SMTP_CATCHER_HOST = catcher.host;
      process.env.SMTP_CATCHER_PORT = String(catcher.port);
      const seeded = await seedAll(engine.apiDb);
      logger.info({ seeders: seeded }, 'demo data loaded');
    }
    http = await createHttpServer(engine, {
      port: config.port,
      host: config.host,
      trustProxy: config.trustProxy,
      ...(config.bounceWebhookSecret ? { bounceWebhookSecret: config.bounceWebhookSecret } : {}),
    });
    const address = await http.listen();
    if (stopping) return;
    await engine.scheduler.start();
    if (config.maintenanceEnabled) engine.jobs.start();
    progressTimer = setInterval(() => void logProgress(engine), 5000);
    progressTimer.unref();
    // "ready" once everything runs: a signal from here on meets a fully started engine.
    console.log(await readySummary(engine, catcher));
    console.log(`  dashboard:    ${address}/    API docs: ${address}/docs`);
    // A token for the first admin that has none (the demo's Alice): shown once, stored hashed.
    const admin = await engine.models.User.findOne({ where: { role: 'admin', apiTokenHash: null }, order: [['id', 'ASC']] });
    if (admin) console.log(`  admin token:  ${await createToken(engine, admin.id)}  (${admin.email}; shown once, keep it)`);
  })();
  try {
    await startup;
  } catch (err) {
    if (stopping) return; // the shutdown under way closes everything
    logger.error({ err }, 'start-up failed');
    await catcher?.stop();
    await engine.close();
    process.exit(1);
  }
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    console.error(`fairsend: configuration error: ${err.message}`);
  } else if (err instanceof SecretKeyError) {
    console.error(`fairsend: cannot start (${err.code}): ${err.message}`);
  } else {
    console.error('fairsend: failed to start:', err);
  }
  process.exit(1);
});
