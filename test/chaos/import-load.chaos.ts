/**
 * One import must not stall the engine (issue 17): a 100,000-row CSV with a `timezone` column
 * (about 6 MB, inside the 10 MiB import limit) is posted over real HTTP to a listening server while
 * a campaign is being delivered by the same process to an SMTP server on loopback.
 *
 * Measured in the process, for the whole import (post, background job, last poll):
 * - the event loop's longest stall must stay under 50 ms: the longest lateness of a 10 ms timer,
 *   at most the main thread's own CPU time in that interval (helpers/loop-stall.ts, from Linux's
 *   per-thread schedstat): the work that held the loop, whatever the machine's load. On this shared
 *   2-core machine at load 13, delivery alone measured a 96 ms wall-clock delay
 *   (monitorEventLoopDelay) with no import at all, 418 ms at load 33: the machine's load, not the
 *   engine. The wall-clock figure and the lateness less the wait for a core are printed beside it;
 * - RSS growth over the RSS before the import must stay under 200 MB (sampled every 50 ms);
 * - delivery goes on during the import (messages reach the SMTP server while it runs), and every
 *   row is stored with its time zone.
 * The figures are recorded in the chaos table whether or not they pass, so a regression is visible,
 * with the same measures for 5 s of delivery alone, the longest GC pause and the machine's
 * load average.
 */
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { createLogger } from '../../services/kernel/logger.js';
import { createToken } from '../../services/auth.js';
import { createHttpServer } from '../../src/http/server.js';
import { startSmtpCatcher } from '../../src/smtp-catcher.js';
import { createTestEngine, rows } from '../helpers/db.js';
import { measureLoopStall } from './helpers/loop-stall.js';
import { recordFigures } from './report.js';

const ROWS = 100_000;
const MAX_DELAY_MS = 50;
const MAX_RSS_GROWTH_MB = 200;
const ZONES = [
  'Europe/Berlin',
  'America/New_York',
  'Asia/Tokyo',
  'Australia/Sydney',
  'UTC',
  'America/Sao_Paulo',
  'Africa/Lagos',
  'Asia/Kolkata',
];

function csvBody(): Buffer {
  const lines = ['email,name,timezone,tags,plan'];
  for (let i = 0; i < ROWS; i++) lines.push(`user${i}@load${i % 97}.example.com,User ${i},${ZONES[i % ZONES.length]},a;b,p${i % 5}`);
  return Buffer.from(lines.join('\n') + '\n', 'utf8');
}

function post(port: number, path: string, token: string, body: Buffer, type: string): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': type, 'content-length': body.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null') }));
      },
    );
    req.on('error', reject);
    // Written in 64 KiB pieces, as a client on a network would.
    for (let i = 0; i < body.length; i += 65536) req.write(body.subarray(i, i + 65536));
    req.end();
  });
}

async function get(port: number, path: string, token: string): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return res.json();
}

describe('a 100,000-row import while delivery runs', () => {
  it(`keeps the event loop's longest stall under ${MAX_DELAY_MS} ms and RSS growth under ${MAX_RSS_GROWTH_MB} MB`, async () => {
    const catcher = await startSmtpCatcher({ keep: false });
    const engine = await createTestEngine({ schedulerTickMs: 50 });
    const http = await createHttpServer(engine, { logger: createLogger('silent'), processMetrics: false, port: 0 });
    await http.listen();
    const port = (http.app.server.address() as AddressInfo).port;
    try {
      // Delivery: a campaign of 6,000 messages at 100 a second (sendingRate: seconds between sends), running through the import.
      await engine.services.create({
        name: 'load',
        transport: { host: '127.0.0.1', port: catcher.port },
        sendingRate: 0.01,
        dailyQuota: 1_000_000,
      });
      const sender = await engine.users.create({ name: 'Sender', email: 'sender@example.test', quota: 1_000_000 });
      const recipients = Array.from({ length: 6000 }, (_, i) => ({ email: `r${i}@deliver.example.com` }));
      await engine.contacts.bulkCreate(sender.id, recipients);
      const tpl = await engine.templates.create(sender.id, { name: 't', subject: 'Load', text: 'Hello {{name}}' });
      await engine.campaigns.create({
        userId: sender.id,
        name: 'c',
        from: 'n@example.test',
        templates: [tpl.id],
        recipientRule: { type: 'all' },
      });
      await engine.scheduler.start();
      const deadline = Date.now() + 60_000;
      while (catcher.received < 50 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(catcher.received).toBeGreaterThanOrEqual(50);

      // Baseline: the same measure for 5 s of delivery alone, so the figure of the import can be
      // read against what the machine does without it (a shared 2-core machine under load).
      const base = monitorEventLoopDelay({ resolution: 10 });
      base.enable();
      const baseStall = measureLoopStall();
      await new Promise((r) => setTimeout(r, 5000));
      const baseline = baseStall.stop();
      base.disable();
      const baselineMs = base.max / 1e6;

      const importer = await engine.users.create({ name: 'Importer', email: 'importer@example.test', quota: 10 });
      const token = await createToken(engine, importer.id);
      const body = csvBody();
      global.gc?.();
      const rssBefore = process.memoryUsage().rss;
      let rssMax = rssBefore;
      const sampler = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage().rss)), 50);
      const sentBefore = catcher.received;
      const gcs: number[] = [];
      const gcObserver = new PerformanceObserver((l) => l.getEntries().forEach((e) => gcs.push(e.duration)));
      gcObserver.observe({ entryTypes: ['gc'] });
      const histogram = monitorEventLoopDelay({ resolution: 10 });
      histogram.enable();
      const stall = measureLoopStall();
      const started = Date.now();
      let job: { id: number; status: string; rowsRead: number; bytesRead: number; result: { created: number } | null; error: unknown };
      try {
        const res = await post(port, '/api/contacts', token, body, 'text/csv');
        expect(res.status).toBe(202);
        job = (res.json as { import: typeof job }).import;
        // Given up when the job showed no progress for 240 s (a hang; the whole import's limit
        // until now), not after a fixed time: at load 32 on the 2 cores the process got 12 s of CPU
        // in 240 s and the import was still running. Progress is the rows and bytes read the job
        // saves; a 60 s window gave up at 63 s on an import at load 21 (one took 134 s at load 16).
        let lastProgress = '';
        let lastProgressAt = Date.now();
        while (job.status === 'running' && Date.now() - lastProgressAt < 240_000) {
          await new Promise((r) => setTimeout(r, 100));
          job = ((await get(port, `/api/contacts/imports/${job.id}`, token)) as { import: typeof job }).import;
          const progress = JSON.stringify([job.rowsRead, job.bytesRead]);
          if (progress !== lastProgress) [lastProgress, lastProgressAt] = [progress, Date.now()];
        }
      } finally {
        histogram.disable();
        clearInterval(sampler);
      }
      const stalled = stall.stop();
      const seconds = (Date.now() - started) / 1000;
      const sentDuring = catcher.received - sentBefore;
      const maxDelayMs = histogram.max / 1e6;
      const ownMs = stalled.cpuMaxMs;
      const p99Ms = histogram.percentile(99) / 1e6;
      const growthMb = (rssMax - rssBefore) / 2 ** 20;
      const figures = `${(body.length / 2 ** 20).toFixed(1)} MB CSV in ${seconds.toFixed(1)} s; longest stall ${ownMs.toFixed(1)} ms of the loop's CPU${stalled.corrected ? '' : ' (not measurable here: wall clock)'} (delivery alone ${baseline.cpuMaxMs.toFixed(1)} ms), less the wait for a core ${stalled.ownMaxMs.toFixed(1)} ms (alone ${baseline.ownMaxMs.toFixed(1)} ms); wall-clock event-loop delay max ${maxDelayMs.toFixed(1)} ms, p99 ${p99Ms.toFixed(1)} ms (delivery alone: max ${baselineMs.toFixed(1)} ms); waited ${(stalled.waitMs / 1000).toFixed(1)} s for a core; longest GC ${Math.max(0, ...gcs).toFixed(0)} ms; load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores; RSS +${growthMb.toFixed(0)} MB; ${sentDuring} messages delivered meanwhile`;
      process.stdout.write(`[import-load] ${figures}\n`);
      gcObserver.disconnect();

      expect(job.error).toBeNull();
      expect(job.status).toBe('completed');
      expect(job.result!.created).toBe(ROWS);
      const [stored] = await rows<{ n: number; zones: number }>(
        engine.apiDb,
        'SELECT count(*)::int AS n, count(DISTINCT timezone)::int AS zones FROM contacts WHERE user_id = $u',
        { u: importer.id },
      );
      expect(stored).toEqual({ n: ROWS, zones: ZONES.length });
      expect(sentDuring).toBeGreaterThan(0);
      const ok = ownMs < MAX_DELAY_MS && growthMb < MAX_RSS_GROWTH_MB;
      await recordFigures({
        scenario: `100,000-row CSV import while delivering (loop stall < ${MAX_DELAY_MS} ms, RSS < +${MAX_RSS_GROWTH_MB} MB)`,
        faultsInjected: 1,
        faultsSurvived: ok ? 1 : 0,
        messagesSent: sentDuring,
        lost: 0,
        duplicates: 0,
        duplicateBound: 0,
        inputsTried: ROWS,
        notes: figures,
      });
      expect(growthMb).toBeLessThan(MAX_RSS_GROWTH_MB);
      expect(ownMs).toBeLessThan(MAX_DELAY_MS);
    } finally {
      await engine.scheduler.stop().catch(() => undefined);
      await http.close();
      await engine.close();
      await catcher.stop();
    }
  }, 900_000);
});
