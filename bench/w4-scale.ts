/**
 * W4 scheduling cost at scale: 100, 1,000 and 10,000 active users x 3 campaigns. The decision is
 * measured in memory (w4-child.ts), many millions of times, in a fresh process per scale and run:
 * CPU microseconds per decision (process.cpuUsage) and the heap the rings and buffers take.
 * Goal: at 10,000 users no more than 1.5x the cost at 100. The end-to-end variant (the real
 * scheduler at each scale against the sink) is not implemented yet.
 */
import { forkBench, nextMessage } from './lib/children.js';
import type { BenchContext, RunRecord } from './lib/harness.js';
import { rowOf, verdict, type Row } from './lib/report.js';
import { fmt, median } from './lib/stats.js';

const SCALES = [100, 1_000, 10_000];

export async function runW4(ctx: BenchContext, runs: number): Promise<RunRecord[]> {
  const decisions = ctx.quick ? 1_000_000 : 20_000_000;
  const records: RunRecord[] = [];
  for (let run = 1; run <= runs; run++) {
    for (const users of SCALES) {
      const child = forkBench('w4-child.js', ['--expose-gc']);
      child.send({ users, decisions });
      const r = await nextMessage<{ type: string; usPerDecision: number; heapMb: number; bytesPerUser: number; perCampaign: number }>(
        child,
        'result',
      );
      records.push({
        config: String(users),
        run,
        value: r.usPerDecision,
        messages: decisions,
        extra: { heapMb: r.heapMb, bytesPerUser: r.bytesPerUser, perCampaign: r.perCampaign },
      });
      ctx.log(`W4 run ${run} ${fmt(users)} users: ${(r.usPerDecision * 1000).toFixed(1)} ns/decision, heap ${r.heapMb.toFixed(1)} MB`);
    }
  }
  return records;
}

export function w4Rows(records: RunRecord[]): Row[] {
  const rows: Row[] = [];
  const at = (users: number) => median(records.filter((r) => r.config === String(users)).map((r) => r.value));
  for (const users of SCALES) {
    const rs = records.filter((r) => r.config === String(users));
    if (!rs.length) continue;
    const heap = median(rs.map((r) => (r.extra as { heapMb: number }).heapMb));
    const perCampaign = (rs[0]!.extra as { perCampaign: number }).perCampaign;
    const ratio = at(users) / at(100);
    const r = rowOf(rs, {
      workload: 'W4 scheduling cost',
      config: `${fmt(users)} users x 3 campaigns (${perCampaign} buffered each), in memory, ${fmt(rs[0]!.messages!)} decisions: FairRing.next() + buffer take; heap ${heap.toFixed(1)} MB`,
      unit: 'µs/decision',
      digits: 3,
      ratio: `${ratio.toFixed(2)}x the 100-user cost`,
      goal: users === 10_000 ? '<= 1.5x the cost at 100 users' : '-',
      met: users === 10_000 ? verdict(ratio <= 1.5, `${ratio.toFixed(2)}x`) : '-',
    });
    rows.push(r);
  }
  return rows;
}
