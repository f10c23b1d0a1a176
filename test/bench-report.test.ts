/**
 * The bench's verdicts from run records (pure logic; no timing is measured here): the goals of #18
 * are listed, each with the verdict of its row or "not measured"; W1-multi says NOT met when the
 * services were not spread 2 and 2; W4 compares per-run throughput and the engine's peak RSS; W2's
 * memory is flat when the big size's peak stays within 1.2x the small size's by the same path, and
 * the COPY / INSERT ratio reads the same whichever path the engine took.
 */
import { buildSummary, GOALS_18 } from '../bench/lib/report.js';
import type { RunRecord } from '../bench/lib/harness.js';
import { w1MultiRows } from '../bench/w1-multi.js';
import { w4Rows } from '../bench/w4-scale.js';
import { w2Rows } from '../bench/w2-generation.js';

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

function gen(config: string, value: number, messages: number, rss: number, extra: Record<string, unknown>): RunRecord {
  return { config, run: 1, value, seconds: value, messages, cpu: { ...cpu, engineRssMb: rss }, extra };
}

test('W2: memory flat is the 10,000,000 peak against the 1,000,000 one by the same path; COPY / INSERT either way', () => {
  const byCopy = { byCopy: true, copyMin: 100_000 };
  const rows = (bigRss: number, smallPath = byCopy) =>
    w2Rows(
      [
        gen('small', 2.4, 1e6, 150, { rssBeforeMb: 118, flat: 1.27, ...smallPath }),
        gen('smallOther', 3.0, 1e6, 120, { byCopy: !smallPath.byCopy }),
        gen('big', 19.4, 1e7, bigRss, { rssBeforeMb: 114, flat: bigRss / 114, ...byCopy }),
      ],
      false,
    );
  const big = (r: ReturnType<typeof rows>) => r.find((x) => x.summary === 'w2TenMillion')!.met;
  // A constant rise over the RSS before (the pipe's buffers) is not growth with the size.
  expect(big(rows(151))).toBe("met (10,000,000 in 19.40 s; peak RSS 1.01x the 1,000,000 run's (1.32x the RSS before))");
  expect(big(rows(190))).toMatch(/^NOT met .*peak RSS 1\.27x the 1,000,000 run's/);
  // The small size by INSERT: no same-path peak to compare with, so against the RSS before.
  expect(big(rows(151, { byCopy: false, copyMin: 5_000_000 }))).toMatch(/^NOT met .*peak RSS 1\.32x before\)$/);
  const ratio = (r: ReturnType<typeof rows>) => r.find((x) => x.config.startsWith('COPY against'))!.median;
  expect(ratio(rows(151))).toBeCloseTo(2.4 / 3.0);
  expect(ratio(rows(151, { byCopy: false, copyMin: 5_000_000 }))).toBeCloseTo(3.0 / 2.4);
  expect(rows(151)[0]!.met).toBe('met (1,000,000 in 2.40 s)');
});
