/**
 * BullMQ 6 on Redis, one job per message. Configured for throughput as its documentation says
 * (guide: workers/concurrency, queues/adding-bulks, workers/auto-removal-of-jobs, connections):
 * jobs added with `addBulk` (one round trip per chunk) before the clock; one Worker with a high
 * `concurrency` (jobs are I/O bound: an SMTP send each); `removeOnComplete` / `removeOnFail` so
 * finished jobs are deleted as they finish, keeping Redis small; `maxRetriesPerRequest: null` on the
 * worker's connection, as BullMQ requires. The handler renders and sends the message through the
 * same pooled transport fairsend uses. Done when every job has completed and none is waiting or
 * active (completions written to Redis).
 */
import { Queue, Worker } from 'bullmq';
import { createServiceTransport } from '../../services/delivery/transport.js';
import { render, type Recipient } from '../lib/fixtures.js';
import type { BenchRedis } from '../lib/redis.js';
import { sleep } from '../lib/stats.js';

export interface BullMqConfig {
  concurrency: number;
}

let seq = 0;

export async function prepareBullMq(redis: BenchRedis, recipients: Recipient[], port: number, connections: number, cfg: BullMqConfig) {
  // A queue name of its own per run, so that a shared Redis holds nothing of another run.
  const name = `fairsend-bench-${process.pid}-${Date.now().toString(36)}-${seq++}`;
  const connection = { host: redis.host, port: redis.port, maxRetriesPerRequest: null };
  const queue = new Queue<Recipient>(name, {
    connection,
    defaultJobOptions: { removeOnComplete: true, removeOnFail: true, attempts: 1 },
  });
  queue.on('error', () => undefined);
  for (let i = 0; i < recipients.length; i += 5000) {
    await queue.addBulk(recipients.slice(i, i + 5000).map((r) => ({ name: 'send', data: r })));
  }
  const transport = createServiceTransport({ host: '127.0.0.1', port }, connections, null);
  let worker: Worker<Recipient> | undefined;
  return {
    go: async () => {
      let sent = 0;
      let failed: unknown;
      worker = new Worker<Recipient>(
        name,
        async (job) => {
          await transport.sendMail(render(job.data));
          sent++;
        },
        { connection, concurrency: cfg.concurrency, removeOnComplete: { count: 0 }, removeOnFail: { count: 0 } },
      );
      worker.on('error', () => undefined);
      worker.on('failed', (_job, err) => (failed ??= err));
      while (sent < recipients.length) {
        if (failed) throw failed instanceof Error ? failed : new Error(String(failed));
        await sleep(20);
      }
      // Completed when the last completions are written: nothing waiting or active any more.
      for (;;) {
        const c = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized');
        if (!c.wait && !c.active && !c.delayed && !c.prioritized) break;
        await sleep(20);
      }
    },
    teardown: async () => {
      await worker?.close();
      transport.close();
      await queue.obliterate({ force: true }).catch(() => undefined);
      await queue.close();
    },
  };
}
