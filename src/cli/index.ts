/**
 * The `fairsend` command line (commander). `runCli(argv)` returns the exit code instead of exiting,
 * so tests run it in process with their own streams and environment; bin/fairsend.js calls it with
 * process.argv and sets process.exitCode.
 *
 *   fairsend start [--port 3000] [--host 127.0.0.1] [--no-scheduler]   engine, scheduler and HTTP server
 *   fairsend migrate | seed                                           schema, demo data
 *   fairsend services list | add --name --host --port --rate --quota [--timezone --max-connections ...]
 *   fairsend campaign create --file campaign.json | status ID [--watch]
 *   fairsend scheduler status [--url --token]
 *   fairsend users create --name --email --quota [--admin] | token ID
 *   fairsend jobs list | pause NAME | resume NAME | run NAME [--url --token]
 *   fairsend secrets generate-key | status | rotate                   the key of stored secrets (src/cli/secrets.ts)
 *
 * Commands that read or change the database connect directly (DATABASE_URL, else the embedded
 * PostgreSQL in ./.fairsend/pg). The scheduler's live state and the maintenance jobs' pause flags
 * live in the running server's memory, so `scheduler status` and `jobs` talk to a running server
 * when given --url (or FAIRSEND_URL) and a token (--token or FAIRSEND_TOKEN).
 *
 * Errors: one line on stderr, `fairsend: <message>` (a validation error lists every `path: message`),
 * and exit code 1; usage errors exit with 2.
 */
import { readFile } from 'node:fs/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { loadDotenv } from '../../services/kernel/config.js';
import { detachEmbeddedSignalHooks } from '../embedded-postgres.js';
import { createEngine, createEngineCore, type Engine, type EngineCore } from '../engine.js';
import { ValidationError } from '../../services/kernel/errors.js';
import { createLogger, type Logger } from '../../services/kernel/logger.js';
import { migrateUp, seedAll } from '../migrator.js';
import { createToken } from '../../services/auth.js';
import { USER_ROLES, type UserRole } from '../../models/user.js';
import type { CampaignProgress } from '../../services/campaigns.js';
import { createHttpServer } from '../http/server.js';
import type { JobsApi } from '../http/options.js';
import { duration, errorLine, table } from './format.js';
import { registerContactCommands } from './contacts.js';
import { registerSuppressionCommands } from './suppressions.js';
import { secretsCommand } from './secrets.js';
import { addTransportFlags, tlsCells, transportFromFlags, type TransportFlags } from './transport-options.js';

export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Environment (default process.env; `.env` is loaded only then). */
  env: NodeJS.ProcessEnv;
  /** Ends `start` and `campaign status --watch` (besides SIGINT/SIGTERM); for tests and embedding. */
  signal?: AbortSignal;
  /** Maintenance jobs for in-process `jobs` commands, when the engine does not carry them. */
  jobs?: (engine: Engine) => JobsApi;
}

const FINAL = new Set(['completed', 'cancelled']);

function intArg(name: string, min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    if (!/^-?\d+$/.test(v.trim()) || Number(v) < min || Number(v) > max)
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return Number(v);
  };
}
function numArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative number`);
    return n;
  };
}

/** Resolves after `ms`, or at once when `signal` aborts; true when aborted. */
function wait(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(false);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(true);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** An AbortSignal that fires on SIGINT/SIGTERM or on the caller's signal; `dispose` removes the handlers. */
function stopSignal(io: CliIo): { signal: AbortSignal; dispose: () => void; which: () => string | undefined } {
  const ctl = new AbortController();
  let which: string | undefined;
  const on = (sig: string) => () => {
    which = sig;
    ctl.abort();
  };
  const onInt = on('SIGINT');
  const onTerm = on('SIGTERM');
  process.once('SIGINT', onInt);
  process.once('SIGTERM', onTerm);
  const onCaller = () => ctl.abort();
  io.signal?.addEventListener('abort', onCaller, { once: true });
  if (io.signal?.aborted) ctl.abort();
  return {
    signal: ctl.signal,
    which: () => which,
    dispose: () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      io.signal?.removeEventListener('abort', onCaller);
    },
  };
}

/** A small client for a running server's API (scheduler status, jobs). */
function apiClient(url: string, token: string | undefined) {
  return async <T>(method: 'GET' | 'POST', path: string): Promise<T> => {
    if (!token) throw new Error('a token is needed to talk to a running server: --token or FAIRSEND_TOKEN');
    let res: Response;
    try {
      res = await fetch(new URL(path, url), { method, headers: { authorization: `Bearer ${token}`, accept: 'application/json' } });
    } catch (err) {
      const cause = (err as Error).cause;
      throw new Error(`cannot reach ${url}: ${cause instanceof Error ? cause.message : (err as Error).message}`, { cause: err });
    }
    const body = (await res.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
    if (!res.ok) throw new Error(`${url} answered ${res.status}: ${body?.error?.message ?? res.statusText}`);
    return body as T;
  };
}

const field = (o: unknown, camel: string): unknown => {
  const r = o as Record<string, unknown>;
  return r[camel] ?? r[camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)];
};
const when = (v: unknown) => (v ? new Date(v as string).toISOString().replace(/\.\d+Z$/, 'Z') : '-');

export async function runCli(argv: string[], ioIn: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env, ...ioIn };
  if (io.env === process.env) await loadDotenv();
  const out = (s: string) => void io.stdout.write(s);
  const logger: Logger = createLogger(io.env.LOG_LEVEL ?? 'warn', io.stderr);
  let code = 0;

  const withEngine = async <T>(fn: (engine: Engine) => Promise<T>): Promise<T> => {
    const engine = await createEngine({ env: io.env, logger });
    try {
      return await fn(engine);
    } finally {
      await engine.close();
    }
  };
  const withCore = async <T>(migrate: boolean, fn: (core: EngineCore) => Promise<T>): Promise<T> => {
    const core = await createEngineCore({ env: io.env, logger, migrate });
    try {
      return await fn(core);
    } finally {
      await core.close();
    }
  };
  // An injected jobs API (tests, embedding) wins over the engine's own maintenance runner.
  const jobsOf = (engine: Engine): JobsApi | undefined => io.jobs?.(engine) ?? (engine as { jobs?: JobsApi }).jobs;
  const remote = (opts: { url?: string; token?: string }) => {
    const url = opts.url ?? io.env.FAIRSEND_URL;
    return url ? apiClient(url, opts.token ?? io.env.FAIRSEND_TOKEN) : undefined;
  };
  const urlOption = () => new Option('--url <url>', 'a running server (default: FAIRSEND_URL)');
  const tokenOption = () => new Option('--token <token>', 'its API token (default: FAIRSEND_TOKEN)');

  const program = new Command('fairsend')
    .description('fairsend: email campaign delivery with per-service rates and quotas, fair across users')
    .exitOverride()
    .configureOutput({
      writeOut: out,
      writeErr: (s) => void io.stderr.write(s),
      outputError: (s, write) => write(`fairsend: ${s.replace(/^error: /, '')}`),
    });

  program
    .command('start')
    .description('run the engine, the scheduler and the HTTP server until SIGINT or SIGTERM')
    .addOption(new Option('-p, --port <port>', 'HTTP port (default: PORT, else 3000)').argParser(intArg('port', 0, 65535)))
    .addOption(new Option('--host <host>', 'address to listen on (default: HOST, else 127.0.0.1)'))
    .option('--no-scheduler', 'serve the API without delivering mail')
    .action(async (opts: { port?: number; host?: string; scheduler: boolean }) => {
      const stop = stopSignal(io);
      try {
        await withEngine(async (engine) => {
          // Our shutdown below stops the embedded cluster last, after the scheduler has written its outcomes.
          detachEmbeddedSignalHooks();
          const jobs = jobsOf(engine);
          const { config } = engine; // PORT, HOST, BOUNCE_WEBHOOK_SECRET, TRUST_PROXY: validated in services/kernel/config.ts
          const server = await createHttpServer(engine, {
            port: opts.port ?? config.port,
            host: opts.host ?? config.host,
            trustProxy: config.trustProxy,
            ...(config.bounceWebhookSecret ? { bounceWebhookSecret: config.bounceWebhookSecret } : {}),
            jobs: jobs ?? null,
          });
          try {
            if (opts.scheduler) await engine.scheduler.start();
            if (opts.scheduler && engine.config.maintenanceEnabled) (jobs as { start?: () => void } | undefined)?.start?.();
            const address = await server.listen();
            out(`fairsend listening on ${address} (database: ${engine.databaseLabel}; scheduler ${opts.scheduler ? 'running' : 'off'})\n`);
            await new Promise<void>((resolve) =>
              stop.signal.aborted ? resolve() : stop.signal.addEventListener('abort', () => resolve(), { once: true }),
            );
            out(`fairsend: ${stop.which() ?? 'stop'} received, stopping: in-flight sends finish, outcomes are written\n`);
          } finally {
            await server.close();
            await engine.scheduler.stop();
          }
        });
        out('fairsend stopped\n');
      } finally {
        stop.dispose();
      }
    });

  program
    .command('migrate')
    .description('apply pending migrations')
    .action(async () => {
      await withCore(false, async (core) => {
        out(`migrating ${core.databaseLabel} ...\n`);
        const ran = await migrateUp(core.apiDb);
        out(ran.length ? ran.map((m) => `  applied ${m}\n`).join('') + `${ran.length} migration(s) applied\n` : 'already up to date\n');
      });
    });

  program
    .command('seed')
    .description('load the demo data set (three users, three services, contacts, campaigns)')
    .action(async () => {
      await withCore(true, async (core) => {
        out(`seeding ${core.databaseLabel} ...\n`);
        const ran = await seedAll(core.apiDb);
        out(ran.length ? ran.map((m) => `  loaded ${m}\n`).join('') : 'nothing to load: every seeder has run\n');
      });
    });

  const services = program.command('services').description('sending services');
  services
    .command('list')
    .description('services with remaining quota today and reset time')
    .action(async () => {
      await withEngine(async (engine) => {
        const [views, quota] = await Promise.all([engine.services.list(), engine.services.quota()]);
        const q = new Map(quota.map((x) => [x.id, x]));
        const now = Date.now();
        out(
          table(
            ['id', 'name', 'every (s)', 'remaining', 'used', 'daily', 'resets at', 'in', 'health', 'enabled', 'tls', 'certificates'],
            views.map((v) => {
              const x = q.get(v.id)!;
              return [
                v.id,
                v.name,
                v.sendingRate,
                x.remainingQuota,
                x.usedQuota,
                x.dailyQuota,
                `${when(x.resetsAt)} (${v.quotaTimezone})`,
                duration(x.resetsAt.getTime() - now),
                x.healthy ? 'ok' : 'unhealthy',
                v.enabled ? 'yes' : 'no',
                ...tlsCells(v.transport),
              ];
            }),
          ),
        );
      });
    });
  const addService = services
    .command('add')
    .description('add a sending service (SMTP); the password is read from an environment variable, never from the command line')
    .requiredOption('--name <name>', 'unique name')
    .requiredOption('--host <host>', 'SMTP host')
    .addOption(new Option('--port <port>', 'SMTP port').argParser(intArg('port', 1, 65535)).default(587))
    .addOption(new Option('--rate <seconds>', 'seconds between two sends').argParser(numArg('rate')).makeOptionMandatory())
    .addOption(new Option('--quota <n>', 'daily quota').argParser(intArg('quota')).makeOptionMandatory())
    .option('--timezone <zone>', 'zone whose midnight resets the quota (default: DEFAULT_TIMEZONE)')
    .addOption(new Option('--max-connections <n>', 'SMTP connections at most').argParser(intArg('max-connections', 1, 100)))
    .option('--secure', 'TLS from the first byte (port 465)');
  addTransportFlags(addService).action(
    async (
      o: TransportFlags & {
        name: string;
        rate: number;
        quota: number;
        timezone?: string;
        maxConnections?: number;
      },
    ) => {
      const transport = await transportFromFlags(o, io.env);
      await withEngine(async (engine) => {
        const s = await engine.services.create({
          name: o.name,
          transport,
          sendingRate: o.rate,
          dailyQuota: o.quota,
          ...(o.timezone ? { quotaTimezone: o.timezone } : {}),
          ...(o.maxConnections ? { maxConnections: o.maxConnections } : {}),
        });
        out(`service #${s.id} ${s.name}: one send every ${s.sendingRate}s, ${s.dailyQuota} a day (${s.quotaTimezone})\n`);
      });
    },
  );

  const campaign = program.command('campaign').description('campaigns');
  campaign
    .command('create')
    .description('create a campaign from a JSON file holding the input of engine.campaigns.create')
    .requiredOption('-f, --file <path>', 'campaign JSON file')
    .action(async (o: { file: string }) => {
      let text: string;
      try {
        text = await readFile(o.file, 'utf8');
      } catch (err) {
        throw new Error(`cannot read ${o.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
      }
      let input: unknown;
      try {
        input = JSON.parse(text);
      } catch (err) {
        throw new Error(`${o.file} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
      if (!input || typeof input !== 'object' || Array.isArray(input))
        throw new ValidationError([{ path: '', message: `${o.file} must hold one JSON object` }]);
      await withEngine(async (engine) => {
        const c = await engine.campaigns.create(input as Parameters<Engine['campaigns']['create']>[0]);
        out(`campaign #${c.id} ${c.name}: ${c.status}, ${c.recipients} recipients reserved, scheduled at ${when(c.scheduledAt)}\n`);
      });
    });
  campaign
    .command('status')
    .description('progress of a campaign; --watch shows a live bar until it completes or is cancelled')
    .argument('<id>', 'campaign id', intArg('id', 1))
    .option('-w, --watch', 'follow the progress live')
    .addOption(new Option('--interval <ms>', 'refresh interval of --watch').argParser(intArg('interval', 100, 60_000)).default(1000))
    .action(async (id: number, o: { watch?: boolean; interval: number }) => {
      await withEngine(async (engine) => {
        const line = (p: CampaignProgress) =>
          `campaign #${p.id}: ${p.status}, ${p.sent} sent, ${p.failed} failed, ${p.cancelled} cancelled, ${p.unknown} unknown, ` +
          `${p.queued} queued, ${p.sending} sending, of ${p.total}${p.waitReason ? ` (waiting: ${p.waitReason})` : ''}${p.pauseReason ? ` (paused: ${p.pauseReason})` : ''}\n`;
        const done = (p: CampaignProgress) => p.sent + p.failed + p.cancelled + p.unknown;
        let p = await engine.campaigns.progress(id);
        if (!o.watch || FINAL.has(p.status)) return out(line(p));
        const stop = stopSignal(io);
        const bar = new cliProgress.SingleBar(
          {
            stream: io.stdout,
            format: ' {bar} {percentage}% | {value}/{total} done | {sent} sent, {failed} failed, {cancelled} cancelled | {state}',
            hideCursor: true,
            noTTYOutput: true,
            notTTYSchedule: o.interval,
          },
          cliProgress.Presets.shades_classic,
        );
        const payload = (x: CampaignProgress) => ({ sent: x.sent, failed: x.failed, cancelled: x.cancelled, state: x.status });
        bar.start(Math.max(p.total, 1), done(p), payload(p));
        try {
          while (!FINAL.has(p.status) && !(await wait(o.interval, stop.signal))) {
            p = await engine.campaigns.progress(id);
            bar.setTotal(Math.max(p.total, 1));
            bar.update(done(p), payload(p));
          }
        } finally {
          bar.stop();
          stop.dispose();
        }
        out(line(p));
      });
    });

  const scheduler = program.command('scheduler').description('the delivery scheduler');
  scheduler
    .command('status')
    .description('a running server’s scheduler (with --url), else what the database shows: live engines, queue, quota')
    .addOption(urlOption())
    .addOption(tokenOption())
    .action(async (o: { url?: string; token?: string }) => {
      const api = remote(o);
      if (api) {
        const s = await api<Record<string, unknown> & { services: Record<string, unknown>[] }>('GET', '/api/scheduler/status');
        const rate = s.processing_rate as Record<string, number>;
        out(
          `scheduler ${s.is_running ? 'running' : 'stopped'} (${String(s.instance_id)}, version ${String(s.version)}, up ${duration(Number(s.uptime_seconds) * 1000)})\n` +
            `queued subtasks: ${String(s.queued_subtasks)}, buffered: ${String(s.buffered_messages)}, ` +
            `rate: ${rate.per_minute_1}/min (1m) ${rate.per_minute_5}/min (5m) ${rate.per_minute_15}/min (15m)\n`,
        );
        out(
          table(
            ['id', 'name', 'state', 'remaining', 'daily', 'resets at', 'health'],
            s.services.map((x) => [
              Number(x.id),
              String(x.name),
              String(x.state),
              Number(x.remaining_quota),
              Number(x.daily_quota),
              when(x.resets_at),
              x.is_healthy ? 'ok' : 'unhealthy',
            ]),
          ),
        );
        return;
      }
      await withEngine(async (engine) => {
        const [live, [[queued]], quota] = await Promise.all([
          engine.scheduler.instances(),
          engine.apiDb.query(`SELECT count(*)::bigint AS n FROM subtasks WHERE status = 'queued'`),
          engine.services.quota(),
        ]);
        out(
          `scheduler engines alive (heartbeat in the last ${(engine.config.heartbeatMs * 3) / 1000}s): ${live.length}\n` +
            live
              .map(
                (i) => `  ${i.id} on ${i.host} pid ${i.pid}, last heartbeat ${when(i.heartbeatAt)}, services [${i.services.join(', ')}]\n`,
              )
              .join('') +
            `queued subtasks: ${Number((queued as { n: string }).n)}\n`,
        );
        out(
          table(
            ['id', 'name', 'remaining', 'daily', 'resets at', 'health', 'enabled'],
            quota.map((x) => [
              x.id,
              x.name,
              x.remainingQuota,
              x.dailyQuota,
              when(x.resetsAt),
              x.healthy ? 'ok' : 'unhealthy',
              x.enabled ? 'yes' : 'no',
            ]),
          ),
        );
      });
    });

  const users = program.command('users').description('users and their API tokens');
  users
    .command('create')
    .description('create a user and print their API token (shown once)')
    .requiredOption('--name <name>', 'display name')
    .requiredOption('--email <email>', 'email address')
    .addOption(new Option('--quota <n>', 'sending credit').argParser(intArg('quota')).default(0))
    .option('--timezone <zone>', 'IANA zone (default: DEFAULT_TIMEZONE)')
    .option('--admin', 'may manage services and users and start or stop the scheduler (same as --role admin)')
    .addOption(new Option('--role <role>', 'admin, user, or metrics (may only scrape /metrics)').choices(USER_ROLES).default('user'))
    .action(async (o: { name: string; email: string; quota: number; timezone?: string; admin?: boolean; role: UserRole }) => {
      await withEngine(async (engine) => {
        const u = await engine.users.create({
          name: o.name,
          email: o.email,
          quota: o.quota,
          role: o.admin ? 'admin' : o.role,
          ...(o.timezone ? { timezone: o.timezone } : {}),
        });
        const token = await createToken(engine, u.id);
        out(`user #${u.id} ${u.email} (${u.role}), credit ${u.remainingQuota}\napi token (shown once, store it now): ${token}\n`);
      });
    });
  users
    .command('token')
    .description('give a user a new API token (the old one stops working) and print it')
    .argument('<id>', 'user id', intArg('id', 1, 2_147_483_647))
    .action(async (id: number) => {
      await withEngine(async (engine) => {
        const u = await engine.users.get(id);
        out(`api token of user #${u.id} ${u.email} (shown once): ${await createToken(engine, id)}\n`);
      });
    });

  program.addCommand(secretsCommand({ withCore, out }));
  const jobs = program.command('jobs').description('maintenance jobs');
  const withJobs = async (o: { url?: string; token?: string }, verb: string, fn: (api: JobsApi) => Promise<void>) => {
    const api = remote(o);
    if (api) {
      await fn({
        list: async () => (await api<{ jobs: unknown[] }>('GET', '/api/jobs')).jobs,
        pause: async (n) => (await api<{ job: unknown }>('POST', `/api/jobs/${encodeURIComponent(n)}/pause`)).job,
        resume: async (n) => (await api<{ job: unknown }>('POST', `/api/jobs/${encodeURIComponent(n)}/resume`)).job,
        runNow: async (n) => (await api<{ job: unknown }>('POST', `/api/jobs/${encodeURIComponent(n)}/run`)).job,
      });
      return;
    }
    if (verb === 'pause' || verb === 'resume') {
      throw new Error(`jobs ${verb} steers a running server's schedule: pass --url (or set FAIRSEND_URL) and a token`);
    }
    await withEngine(async (engine) => {
      const local = jobsOf(engine);
      if (!local) throw new Error('maintenance jobs are not available in this build; use --url to reach a running server');
      await fn(local);
    });
  };
  const printJob = (j: unknown) => {
    const outcome = field(j, 'outcome') ?? field(j, 'lastOutcome') ?? '-';
    const ms = field(j, 'durationMs') ?? field(j, 'lastDurationMs');
    const error = field(j, 'error') ?? field(j, 'lastError');
    out(
      `${String(field(j, 'name'))}: ${String(outcome)}${ms !== undefined && ms !== null ? ` in ${String(ms)} ms` : ''}${error ? ` (${String(error)})` : ''}\n`,
    );
  };
  jobs
    .command('list')
    .description('every job: schedule, state, next and last run')
    .addOption(urlOption())
    .addOption(tokenOption())
    .action(async (o: { url?: string; token?: string }) =>
      withJobs(o, 'list', async (api) => {
        const list = await api.list();
        out(
          table(
            ['name', 'schedule', 'state', 'next run', 'last run', 'outcome'],
            list.map((j) => [
              String(field(j, 'name')),
              String(field(j, 'schedule') ?? '-'),
              field(j, 'running') ? 'running' : field(j, 'paused') ? 'paused' : field(j, 'enabled') === false ? 'disabled' : 'scheduled',
              when(field(j, 'nextRunAt')),
              when(field(j, 'lastRunAt')),
              String(field(j, 'lastOutcome') ?? '-'),
            ]),
          ),
        );
      }),
    );
  for (const [verb, desc] of [
    ['pause', 'stop scheduling a job (a run in progress finishes)'],
    ['resume', 'schedule a paused job again'],
    ['run', 'run a job now and print the outcome'],
  ] as const) {
    jobs
      .command(verb)
      .description(desc)
      .argument('<name>', 'job name')
      .addOption(urlOption())
      .addOption(tokenOption())
      .action(async (name: string, o: { url?: string; token?: string }) =>
        withJobs(o, verb, async (api) => {
          if (verb === 'run') printJob(await api.runNow(name));
          else {
            const j = await api[verb](name);
            out(
              `${name}: ${verb === 'pause' ? 'paused' : 'resumed'}${field(j ?? {}, 'nextRunAt') ? `, next run ${when(field(j, 'nextRunAt'))}` : ''}\n`,
            );
          }
        }),
      );
  }

  registerSuppressionCommands(program, { withEngine, out });
  registerContactCommands(program, { withEngine, out, stdout: io.stdout, env: io.env });

  try {
    await program.parseAsync(argv, { from: 'node' });
  } catch (err) {
    // Help and --version exit 0; usage errors (unknown command, missing option) 2.
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    io.stderr.write(errorLine(err));
    code = 1;
  }
  return code;
}
