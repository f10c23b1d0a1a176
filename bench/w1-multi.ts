/**
 * W1-multi: four sending services (each `sendingRate` 0, 5 connections, to the sink), W1's
 * messages (10 users x 5 campaigns; 2,000 recipients each, quick 100), sent by one fairsend
 * process owning all four services, against two processes owning two each (services spread 2
 * and 2). Every engine runs in a child process with SEND_WORKERS=1 (the worker-thread setting of
 * #18; an engine that does not know it yet ignores it), so on this 2-core machine the two
 * processes stand in for two machines. The clock runs from the children's start until
 * `sum(sent_count)` reaches the total (outcomes committed). Goal (#18): two >= 1.15x one, per run.
 */
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { forkBench, nextMessage } from './lib/children.js';
import { benchEngine, createService, seedCampaigns, sentTotal } from './lib/fixtures.js';
import { measure, type BenchContext, type RunRecord } from './lib/harness.js';
import { rowOf, verdict, type Row } from './lib/report.js';
import { fmt, median, sleep } from './lib/stats.js';

const SERVICES = 4;
const CONNECTIONS = 5;
const SEND_WORKERS = '1';

type MultiConfig = 'one' | 'two';

async function runOnce(
  ctx: BenchContext,
  config: MultiConfig,
  perCampaign: number,
): Promise<RunRecord['extra'] & { rec: Omit<RunRecord, 'run'> }> {
  const db = await ctx.server.newDatabase('w1m');
  const seeder = await benchEngine(db.url);
  const ids: number[] = [];
  const service = (i: number) => ({
    name: `sink ${i}`,
    port: ctx.sink.port,
    sendingRate: 0,
    dailyQuota: 100_000_000,
    maxConnections: CONNECTIONS,
  });
  const total = await seedCampaigns(seeder, { users: 10, campaignsPerUser: 5, perCampaign, service: service(1) });
  for (let i = 2; i <= SERVICES; i++) await createService(seeder, service(i));
  const [rows] = (await seeder.apiDb.query('SELECT id FROM email_services ORDER BY id')) as [{ id: number }[], unknown];
  ids.push(...rows.map((r) => r.id));
  const spread = config === 'one' ? [ids] : [ids.slice(0, 2), ids.slice(2)];
  const children: ChildProcess[] = [];
  for (const services of spread) {
    const child = forkBench('engine-child.js', [], { SEND_WORKERS });
    child.send({ type: 'init', url: db.url, ...(config === 'two' ? { services } : {}) });
    await nextMessage(child, 'ready');
    children.push(child);
  }
  const owned: number[][] = [];
  const m = await measure(ctx, {
    engineChildren: async () => children.map((c) => c.pid!),
    go: async () => {
      await Promise.all(
        children.map((c) => {
          const started = nextMessage(c, 'started');
          c.send({ type: 'start' });
          return started;
        }),
      );
      while ((await sentTotal(seeder)) < total) await sleep(50);
    },
    teardown: async () => {
      for (const c of children) {
        const exited = once(c, 'exit');
        const stopped = nextMessage<{ type: string; owned: number[] }>(c, 'stopped');
        c.send({ type: 'stop' });
        owned.push((await stopped).owned.sort((a, b) => a - b));
        await exited;
      }
      await seeder.close();
      await db.drop();
    },
  });
  return {
    rec: {
      config,
      value: total / m.seconds,
      seconds: m.seconds,
      messages: total,
      sinkAccepted: m.sinkAccepted,
      cpu: m.cpu,
      extra: { owned },
    },
  };
}

export async function runW1Multi(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  const perCampaign = ctx.quick ? 100 : 2000;
  const records: RunRecord[] = [];
  for (let run = 1; run <= runs; run++) {
    for (const config of ['one', 'two'] as MultiConfig[]) {
      const { rec } = await runOnce(ctx, config, perCampaign);
      records.push({ ...rec, run });
      const owned = (rec.extra as { owned: number[][] }).owned;
      ctx.log(
        `W1-multi run ${run} ${config === 'one' ? '1 process' : '2 processes'}: ${rec.value.toFixed(0)} msg/s (${rec.seconds!.toFixed(2)} s; CPU engine ${rec.cpu!.engine.toFixed(2)} s, sink ${rec.cpu!.sink.toFixed(2)} s, postgres ${rec.cpu!.postgres.toFixed(2)} s; services owned ${owned.map((o) => `[${o.join(',')}]`).join(' ')})`,
      );
    }
  }
  return records;
}

export function w1MultiRows(records: RunRecord[]): Row[] {
  const n = records[0]?.messages ?? 0;
  const rows: Row[] = [];
  const ownedOf = (rs: RunRecord[]) => (rs[0]?.extra as { owned: number[][] } | undefined)?.owned.map((o) => o.length).join(' + ') ?? '?';
  for (const config of ['one', 'two'] as MultiConfig[]) {
    const rs = records.filter((r) => r.config === config);
    if (!rs.length) continue;
    const cpuPerMsg = median(rs.map((r) => (r.cpu!.engine * 1000) / r.messages!));
    const ratios = rs.map((r) => r.value / (records.find((x) => x.config === 'one' && x.run === r.run)?.value ?? NaN));
    const ratio = median(ratios);
    // Each process must have had its share: 4 in one, 2 + 2 in two.
    const spreadOk = rs.every((r) => (r.extra as { owned: number[][] }).owned.every((o) => o.length === (config === 'one' ? 4 : 2)));
    rows.push(
      rowOf(rs, {
        workload: 'W1-multi',
        config: `${config === 'one' ? '1 process, 4 services' : '2 processes, services spread 2 and 2'}, SEND_WORKERS=1 each, ${CONNECTIONS} connections a service; ${fmt(n)} msgs; services owned ${ownedOf(rs)}; engine CPU ${cpuPerMsg.toFixed(3)} ms/msg`,
        unit: 'msg/s',
        digits: 0,
        ratio: config === 'two' ? `${ratio.toFixed(2)}x one process` : '',
        goal: config === 'two' ? '>= 1.15x one process (#18)' : '-',
        ...(config === 'two' ? { summary: 'w1Multi' as const } : {}),
        met:
          config === 'two'
            ? spreadOk
              ? verdict(ratio >= 1.15, `${ratio.toFixed(2)}x, median of the runs' ratios (${ratios.map((x) => x.toFixed(2)).join(', ')})`)
              : 'NOT met (the services were not spread 2 and 2)'
            : '-',
      }),
    );
  }
  return rows;
}
