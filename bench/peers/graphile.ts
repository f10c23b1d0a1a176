/**
 * graphile-worker 0.17, one job per message. Configured for throughput as its documentation says
 * (website/docs/config and performance): `concurrentJobs` well above 1, and for the batched variant
 * `localQueue.size` (jobs fetched and locked in one query) with `completeJobBatchDelay: 0`
 * (completions batched into one statement per tick). The handler renders and sends the message
 * through the same pooled transport fairsend uses.
 */
import { Logger, makeWorkerUtils, run, type Runner } from 'graphile-worker';
import pg from 'pg';
import { createServiceTransport } from '../../services/delivery/transport.js';
import { render, type Recipient } from '../lib/fixtures.js';
import { sleep } from '../lib/stats.js';

const silent = new Logger(() => () => undefined);

export interface GraphileConfig {
  concurrency: number;
  /** Batched fetching and completion (localQueue size); undefined: one job per fetch. */
  localQueueSize?: number;
}

export async function prepareGraphile(url: string, recipients: Recipient[], port: number, connections: number, cfg: GraphileConfig) {
  const utils = await makeWorkerUtils({ connectionString: url, logger: silent });
  await utils.migrate();
  for (let i = 0; i < recipients.length; i += 5000) {
    await utils.addJobs(recipients.slice(i, i + 5000).map((r) => ({ identifier: 'send', payload: r })));
  }
  await utils.release();
  const transport = createServiceTransport({ host: '127.0.0.1', port }, connections, null);
  // Our own pool, ended in teardown before the database is dropped: the runner's pool could still
  // hold idle clients when stop() resolves, and DROP DATABASE ... WITH (FORCE) then terminated
  // them with an 'error' on a pool nobody listened to (seen in a quick run).
  const pgPool = new pg.Pool({ connectionString: url, max: cfg.concurrency + 2 });
  pgPool.on('error', () => undefined);
  let runner: Runner | undefined;
  return {
    /** The measured part: start the worker, return once every job's completion is committed. */
    go: async () => {
      let sent = 0;
      runner = await run({
        pgPool,
        logger: silent,
        noHandleSignals: true,
        taskList: {
          send: async (payload) => {
            await transport.sendMail(render(payload as Recipient));
            sent++;
          },
        },
        preset: {
          worker: {
            concurrentJobs: cfg.concurrency,
            ...(cfg.localQueueSize ? { localQueue: { size: cfg.localQueueSize }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } : {}),
          },
        },
      });
      while (sent < recipients.length) await sleep(20);
      // A job is done when its row is deleted: wait until the completions are committed.
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        while (Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM graphile_worker._private_jobs')).rows[0]!.n) > 0)
          await sleep(20);
      } finally {
        await c.end();
      }
    },
    teardown: async () => {
      await runner?.stop();
      transport.close();
      await pgPool.end();
    },
  };
}
