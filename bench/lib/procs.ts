/**
 * CPU and memory accounting for one measured run, per party: the engine (this process, measured
 * with process.cpuUsage, plus any engine child processes, measured with pidusage), the SMTP sink
 * (its own process, pidusage) and PostgreSQL (every postgres process, pidusage).
 *
 * PostgreSQL backends come and go with connections, so the probe samples every SAMPLE_MS: a pid
 * seen for the first time counts from 0 if it was born during the run (its whole CPU is the run's),
 * from its first reading otherwise. A backend that exits between two samples loses at most one
 * interval of CPU; pools keep their connections through a run, so that is rare.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import pidusage from 'pidusage';

const SAMPLE_MS = 250;

export type PidSource = () => Promise<number[]>;

export interface CpuFigures {
  /** CPU seconds (user + system) during the run. */
  engine: number;
  sink: number;
  postgres: number;
  /** Peak resident set size in MB: the engine side (this process, plus engine children) and the sink. */
  engineRssMb: number;
  sinkRssMb: number;
}

function pgrep(args: string[]): Promise<number[]> {
  return new Promise((resolve) => {
    execFile('pgrep', args, (err, stdout) => {
      if (err) return resolve([]); // exit 1: nothing matched
      resolve(
        stdout
          .split('\n')
          .map((l) => Number(l.trim()))
          .filter((n) => n > 0),
      );
    });
  });
}

/*
 * The probe samples every SAMPLE_MS, in the process that runs the engine (W3, W2) or drives it.
 * Spawning pgrep there forks that process four times a second: measured in W3's CPU profile, 0.7 s
 * of the main thread's 13 s went to ChildProcess.spawn, stalls of several milliseconds in front of
 * a 2 ms schedule. /proc gives the same lists with a few reads; pgrep stays where /proc lacks them.
 */

/** The children of `pid` (Linux: /proc/<pid>/task/<pid>/children), or pgrep -P elsewhere. */
export async function childrenOf(pid: number): Promise<number[]> {
  try {
    const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
    return text
      .split(' ')
      .map(Number)
      .filter((n) => n > 0);
  } catch {
    return pgrep(['-P', String(pid)]);
  }
}

/**
 * Processes whose command line contains `needle` (Linux: /proc/<pid>/cmdline), or pgrep -f elsewhere.
 * Each pid's command line is read once, while the pid stays in /proc: a sample then costs one
 * readdir of /proc and a read for each new pid only. Reading every process's command line at every
 * sample (about 150 on the development machine, each an open, fstat, read and close through
 * libuv's threadpool, four times a second) cost W3's engine thread about 7 s of its 142 in a CPU
 * profile, in bursts in front of a 2 ms schedule. A pid that leaves /proc is forgotten, so a pid
 * reused later is read again; only a reuse within one sample interval would go unseen.
 */
export function commandMatcher(needle: string): () => Promise<number[]> {
  const known = new Map<number, boolean>();
  return async () => {
    let entries: string[];
    try {
      entries = await readdir('/proc');
    } catch {
      return pgrep(['-f', needle]);
    }
    const present = new Set<number>();
    for (const e of entries) if (/^\d+$/.test(e)) present.add(Number(e));
    for (const pid of known.keys()) if (!present.has(pid)) known.delete(pid);
    await Promise.all(
      [...present]
        .filter((pid) => !known.has(pid))
        .map(async (pid) => {
          try {
            known.set(pid, (await readFile(`/proc/${pid}/cmdline`, 'utf8')).includes(needle));
          } catch {
            // exited meanwhile: not known, read again should the pid come back
          }
        }),
    );
    return [...present].filter((pid) => known.get(pid) === true);
  };
}

/** The postgres processes of a server on this machine: every process whose command line holds `postgres`, minus ours. */
export function serverPostgresPids(exclude: () => number[]): PidSource {
  const postgres = commandMatcher('postgres');
  return async () => {
    const skip = new Set([process.pid, ...exclude()]);
    return (await postgres()).filter((p) => !skip.has(p));
  };
}

/** The postmaster of an embedded cluster (from its postmaster.pid) and its children. */
export function clusterPostgresPids(dataDir: string): PidSource {
  return async () => {
    const pid = Number((await readFile(`${dataDir}/postmaster.pid`, 'utf8')).split('\n')[0]);
    if (!(pid > 0)) return [];
    return [pid, ...(await childrenOf(pid))];
  };
}

interface Tracked {
  base: number;
  last: number;
  rss: number;
}

class PidGroup {
  private readonly tracked = new Map<number, Tracked>();
  peakRss = 0;
  constructor(
    private readonly source: PidSource,
    private readonly startedAt: number,
  ) {}

  async sample(initial = false): Promise<void> {
    const pids = await this.source().catch(() => [] as number[]);
    let rss = 0;
    await Promise.all(
      pids.map(async (pid) => {
        try {
          const s = await pidusage(pid);
          let t = this.tracked.get(pid);
          if (!t) {
            // Born during the run (elapsed shorter than the run so far): all of its CPU is ours.
            const bornDuringRun = !initial && s.elapsed < Date.now() - this.startedAt + SAMPLE_MS;
            t = { base: bornDuringRun ? 0 : s.ctime, last: s.ctime, rss: 0 };
            this.tracked.set(pid, t);
          }
          t.last = Math.max(t.last, s.ctime);
          rss += s.memory;
        } catch {
          /* exited between pgrep and the reading */
        }
      }),
    );
    this.peakRss = Math.max(this.peakRss, rss);
  }

  cpuSeconds(): number {
    let ms = 0;
    for (const t of this.tracked.values()) ms += t.last - t.base;
    return ms / 1000;
  }
}

/**
 * Measures one run. `engineChildren` and `sink` are pid lists read at every sample (children may
 * start after the probe); `postgres` finds the server's processes.
 */
export class RunProbe {
  private readonly startedAt = Date.now();
  private readonly selfCpu = process.cpuUsage();
  private readonly engine: PidGroup;
  private readonly sink: PidGroup;
  private readonly postgres: PidGroup;
  private timer: NodeJS.Timeout | undefined;
  private selfPeakRss = process.memoryUsage().rss;
  private sampling: Promise<void> | undefined;

  private constructor(sources: { engineChildren: PidSource; sink: PidSource; postgres: PidSource }) {
    this.engine = new PidGroup(sources.engineChildren, this.startedAt);
    this.sink = new PidGroup(sources.sink, this.startedAt);
    this.postgres = new PidGroup(sources.postgres, this.startedAt);
  }

  static async start(sources: { engineChildren?: PidSource; sink: PidSource; postgres: PidSource }): Promise<RunProbe> {
    const p = new RunProbe({ engineChildren: sources.engineChildren ?? (async () => []), ...sources });
    await Promise.all([p.engine.sample(true), p.sink.sample(true), p.postgres.sample(true)]);
    p.timer = setInterval(() => {
      p.sampling ??= p.sampleAll().finally(() => (p.sampling = undefined));
    }, SAMPLE_MS);
    p.timer.unref();
    return p;
  }

  private async sampleAll(): Promise<void> {
    this.selfPeakRss = Math.max(this.selfPeakRss, process.memoryUsage().rss);
    await Promise.all([this.engine.sample(), this.sink.sample(), this.postgres.sample()]);
  }

  async stop(): Promise<CpuFigures> {
    clearInterval(this.timer);
    await this.sampling;
    await this.sampleAll();
    const self = process.cpuUsage(this.selfCpu);
    return {
      engine: (self.user + self.system) / 1e6 + this.engine.cpuSeconds(),
      sink: this.sink.cpuSeconds(),
      postgres: this.postgres.cpuSeconds(),
      engineRssMb: (this.selfPeakRss + this.engine.peakRss) / 2 ** 20,
      sinkRssMb: this.sink.peakRss / 2 ** 20,
    };
  }
}
