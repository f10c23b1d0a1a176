/** `fairsend start`: the engine, the scheduler and the HTTP server until SIGINT or SIGTERM. */
import { Option, type Command } from 'commander';
import { detachEmbeddedSignalHooks } from '../embedded-postgres.js';
import { createHttpServer } from '../http/server.js';
import { intArg, stopSignal, type CliContext } from './context.js';

export function registerStart(program: Command, ctx: CliContext): void {
  const { io, out, withEngine, jobsOf } = ctx;
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
}
