/**
 * pg-boss 10 with batch fetching: `fetch(name, { batchSize })` / `complete(name, ids)` loops, which
 * bench-notes measured faster than `work()` (whose polling interval, at least 0.5 s, idles the
 * worker between batches). Each loop fetches a batch, sends it through the shared pooled
 * transport, completes the batch in one call, and fetches again at once.
 */
import PgBoss from 'pg-boss';
import { createServiceTransport } from '../../services/delivery/transport.js';
import { render, type Recipient } from '../lib/fixtures.js';
import { sleep } from '../lib/stats.js';

export interface PgBossConfig {
  loops: number;
  batchSize: number;
}

const QUEUE = 'send';

export async function preparePgBoss(url: string, recipients: Recipient[], port: number, connections: number, cfg: PgBossConfig) {
  // Supervision and cron off: they are background maintenance, not part of delivering jobs.
  const boss = new PgBoss({ connectionString: url, max: cfg.loops + 2, supervise: false, schedule: false });
  boss.on('error', () => undefined);
  await boss.start();
  await boss.createQueue(QUEUE);
  for (let i = 0; i < recipients.length; i += 5000) {
    await boss.insert(recipients.slice(i, i + 5000).map((r) => ({ name: QUEUE, data: r })));
  }
  const transport = createServiceTransport({ host: '127.0.0.1', port }, connections, null);
  return {
    go: async () => {
      let done = 0;
      let empty = 0;
      const loop = async () => {
        while (done < recipients.length && empty < 500) {
          const jobs = await boss.fetch<Recipient>(QUEUE, { batchSize: cfg.batchSize });
          if (!jobs.length) {
            empty++;
            await sleep(10);
            continue;
          }
          await Promise.all(jobs.map((j) => transport.sendMail(render(j.data))));
          await boss.complete(
            QUEUE,
            jobs.map((j) => j.id),
          );
          done += jobs.length;
        }
      };
      await Promise.all(Array.from({ length: cfg.loops }, loop));
      if (done < recipients.length) throw new Error(`pg-boss completed ${done} of ${recipients.length}`);
    },
    teardown: async () => {
      transport.close();
      await boss.stop({ graceful: false, wait: true });
    },
  };
}
