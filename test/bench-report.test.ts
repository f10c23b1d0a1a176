/**
 * The bench's verdicts from run records (pure logic; no timing is measured here): the goals of #18
 * are listed, each with the verdict of its row or "not measured"; W1-multi says NOT met when the
 * services were not spread 2 and 2; W4 compares per-run throughput and the engine's peak RSS.
 */
import { buildSummary, GOALS_18 } from '../bench/lib/report.js';
import type { RunRecord } from '../bench/lib/harness.js';
import { w1MultiRows } from '../bench/w1-multi.js';
import { w4Rows } from '../bench/w4-scale.js';

const cpu = { engine: 1, sink: 1, postgres: 1, engineRssMb: 100, sinkRssMb: 50 };

function multi(two: number, owned: number[][]): RunRecord[] {
  return [
    { config: 'one', run: 1, value: 1000, messages: 5000, cpu, extra: { owned: [[1, 2, 3, 4]] } },
    { config: 'two', run: 1, value: two, messages: 5000, cpu, extra: { owned } },
  ];
}

test('W1-multi: the ratio against one process decides, and only when the services were spread 2 and 2', () => {
  const met = w1MultiRows(
    multi(1200, [
      [1, 2],
      [3, 4],
    ]),
  ).find((r) => r.summary === 'w1Multi')!;
  expect(met.met).toMatch(/^met \(1\.20x/);
  expect(
    w1MultiRows(
      multi(1100, [
        [1, 2],
        [3, 4],
      ]),
    ).find((r) => r.summary === 'w1Multi')!.met,
  ).toMatch(/^NOT met \(1\.10x/);
  expect(w1MultiRows(multi(1300, [[1, 2, 3], [4]])).find((r) => r.summary === 'w1Multi')!.met).toBe(
    'NOT met (the services were not spread 2 and 2)',
  );
});

function e2e(users: number, run: number, value: number, maxRssMb: number): RunRecord {
  return {
    config: `e2e:${users}`,
    run,
    value,
    messages: 60_000,
    cpu,
    extra: { users, firstSentMs: 100, maxRssMb, heapMiddleMb: 40, heapEndMb: 40, seedSeconds: 1 },
  };
}

test('W4: at the large scale, >= 0.9x the per-run throughput at 10 users and peak RSS <= 300 MB', () => {
  const verdict = (records: RunRecord[]) => w4Rows(records).find((r) => r.summary === 'w4')!.met;
  expect(verdict([e2e(10, 1, 1000, 150), e2e(10_000, 1, 950, 200)])).toMatch(/^met \(10,000 users: 0\.95x/);
  expect(verdict([e2e(10, 1, 1000, 150), e2e(10_000, 1, 850, 200)])).toMatch(/^NOT met \(10,000 users: 0\.85x/);
  expect(verdict([e2e(10, 1, 1000, 150), e2e(10_000, 1, 990, 301)])).toMatch(/^NOT met .*peak RSS 301 MB/);
});

test('the summary lists every goal of #18, "not measured" where no row carries it', () => {
  const rows = w1MultiRows(
    multi(1200, [
      [1, 2],
      [3, 4],
    ]),
  );
  const summary = buildSummary(rows, false).split('\n');
  expect(summary).toHaveLength(2 + Object.keys(GOALS_18).length);
  expect(summary.find((l) => l.includes('W1-multi'))).toMatch(/\| met \(1\.20x/);
  expect(summary.filter((l) => l.endsWith('| not measured in this run |'))).toHaveLength(Object.keys(GOALS_18).length - 1);
});
