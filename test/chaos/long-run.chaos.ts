/**
 * Long run: LONG_RUN_MESSAGES (default 200,000) messages through two sending services, with
 * quota days reset twice by an injected clock. The engine runs in its own process with
 * --expose-gc (test/chaos/fixtures/long-run.ts); the two SMTP servers run here and count every
 * Message-ID they accept. Checked: every recipient received exactly once (none lost, no
 * duplicate), each service stayed within its daily quota on each of the three days, the heap is
 * flat (live heap at 10 %, 50 %, 90 % and the end, after full collections), and closing the engine
 * leaves no timer, socket or other handle behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { startSmtpCatcher, type SmtpCatcher } from '../../src/smtp-catcher.js';
import { createTestDatabase, plainSequelize, rows } from '../helpers/db.js';
import { recordFigures } from './report.js';

const TOTAL = Number(process.env.LONG_RUN_MESSAGES ?? 200_000);
// Three quota days: two full ones (two services each) and the rest on the third.
const DAILY_QUOTA = Math.ceil(TOTAL / 5.5);
/** Live heap may wander by a few MB between samples (buffers, caches); a leak of even 100 bytes a message would add 20 MB. */
const HEAP_GROWTH_LIMIT_MB = 12;

interface Result {
  sent: number;
  elapsedMs: number;
  resets: number;
  heapBefore: number;
  heap: { at: number; mb: number }[];
  heapAfterClose: number;
  resourcesBefore: Record<string, number>;
  resourcesAfter: Record<string, number>;
  perDay: Record<string, number>;
  progress: { status: string; sent: number; total: number; failed: number; unknown: number }[];
  services: number[];
}

const MESSAGE_ID = /^Message-ID: (.*)\r$/m;

describe('long run', () => {
  const catchers: SmtpCatcher[] = [];
  let child: ChildProcess | undefined;
  afterAll(async () => {
    // A run cut short by jest's time limit must not outlive the suite.
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await Promise.all(catchers.map((c) => c.stop()));
  });

  // Time limit 45 minutes: the fixture gives up after 120 s without a send, or 40 minutes in all,
  // a guard against a hang, not a speed bound (what this test checks is the figures; speed is the
  // bench's). Until 900 s here and 600 s in the fixture: 333 msg/s at least, which a run at load 35
  // on the 2 cores did not make (150-250 msg/s).
  it(`delivers ${TOTAL} messages through two services across two quota resets, with a flat heap and no leaked handles`, async () => {
    const url = await createTestDatabase();
    const seen = new Map<string, number>();
    for (let i = 0; i < 2; i++) {
      catchers.push(
        await startSmtpCatcher({
          keep: false,
          onAccept: (m) => {
            const id = MESSAGE_ID.exec(m.raw.subarray(0, 4096).toString('latin1'))?.[1] ?? `(no id ${seen.size})`;
            seen.set(id, (seen.get(id) ?? 0) + 1);
          },
        }),
      );
    }
    child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', 'test/chaos/fixtures/long-run.ts'], {
      env: {
        ...process.env,
        DATABASE_URL: url,
        SMTP_PORTS: catchers.map((c) => c.port).join(','),
        LONG_RUN_MESSAGES: String(TOTAL),
        DAILY_QUOTA: String(DAILY_QUOTA),
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const proc = child;
    proc.stdout!.setEncoding('utf8');
    let out = '';
    proc.stdout!.on('data', (d: string) => (out += d));
    const code = await new Promise<number | null>((resolve) => proc.once('exit', resolve));
    expect(code).toBe(0);
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as Result;

    const accepted = catchers.reduce((n, c) => n + c.accepted, 0);
    const duplicates = [...seen.values()].reduce((n, k) => n + k - 1, 0);
    const db = plainSequelize(url);
    let final: { status: string; n: number }[];
    try {
      final = await rows(db, `SELECT status, count(*)::int AS n FROM subtasks GROUP BY status ORDER BY status`);
    } finally {
      await db.close();
    }
    const lost = TOTAL - (final.find((f) => f.status === 'sent')?.n ?? 0) + (TOTAL - seen.size);
    const heapSamples = r.heap.map((h) => h.mb);
    const growth = Math.max(...heapSamples) - heapSamples[0]!;
    const rate = Math.round(r.sent / (r.elapsedMs / 1000));
    console.log(
      `[chaos long run] ${r.sent} sent in ${(r.elapsedMs / 1000).toFixed(1)} s (${rate}/s), ${r.resets} quota resets; ` +
        `heap MB before ${r.heapBefore}, at ${r.heap.map((h) => `${h.at}: ${h.mb}`).join(', ')}, after close ${r.heapAfterClose}; ` +
        `resources before ${JSON.stringify(r.resourcesBefore)} after ${JSON.stringify(r.resourcesAfter)}; per service and day ${JSON.stringify(r.perDay)}`,
    );

    // Everything delivered, once.
    expect(final).toEqual([{ status: 'sent', n: TOTAL }]);
    expect(r.progress.every((p) => p.status === 'completed')).toBe(true);
    expect(seen.size).toBe(TOTAL);
    expect(accepted).toBe(TOTAL);
    expect(duplicates).toBe(0);
    // Two resets, and never more than the daily quota per service and day.
    expect(r.resets).toBe(2);
    const days = new Set(Object.keys(r.perDay).map((k) => k.split(' ')[1]));
    expect(days.size).toBe(3);
    for (const n of Object.values(r.perDay)) expect(n).toBeLessThanOrEqual(DAILY_QUOTA);
    // Both services carried the load.
    for (const id of r.services) expect(Object.entries(r.perDay).some(([k, n]) => k.startsWith(`${id} `) && n > 0)).toBe(true);
    // Flat heap: the live set at the end is the live set after warm-up, within a few MB.
    expect(growth).toBeLessThan(HEAP_GROWTH_LIMIT_MB);
    // No handle left behind: after close, every kind of resource is back to its count before the engine.
    for (const [kind, n] of Object.entries(r.resourcesAfter))
      expect({ kind, n }).toEqual({ kind, n: Math.min(n, r.resourcesBefore[kind] ?? 0) });

    await recordFigures({
      scenario: `long run: ${TOTAL} messages, 2 services, 2 quota resets (injected clock)`,
      faultsInjected: r.resets,
      faultsSurvived: r.resets,
      messagesSent: accepted,
      lost,
      duplicates,
      duplicateBound: 0,
      inputsTried: 0,
      notes: `${rate} msg/s over ${(r.elapsedMs / 1000).toFixed(0)} s; live heap ${heapSamples[0]} -> ${heapSamples.at(-1)} MB (max growth ${growth.toFixed(1)} MB, before engine ${r.heapBefore}, after close ${r.heapAfterClose}); handles ${Object.values(r.resourcesBefore).reduce((a, b) => a + b, 0)} before, ${Object.values(r.resourcesAfter).reduce((a, b) => a + b, 0)} after close`,
    });
  }, 2_700_000);
});
