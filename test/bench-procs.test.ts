/**
 * The benchmark's process finder (bench/lib/procs.ts, commandMatcher): real processes on this
 * machine, found by their command line, forgotten when they exit, found again when a new one
 * starts, with each pid's command line read once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { commandMatcher } from '../bench/lib/procs.js';

const NEEDLE = `fairsend-procs-test-${process.pid}`;

function sleeper(): ChildProcess {
  return spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)', NEEDLE], { stdio: 'ignore' });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

test('finds processes by command line, forgets those that exit, finds new ones', async () => {
  const find = commandMatcher(NEEDLE);
  expect(await find()).toEqual([]);
  const a = sleeper();
  let b: ChildProcess | undefined;
  try {
    await once(a, 'spawn');
    expect(await find()).toEqual([a.pid]);
    // A second sample reads no command line again, and still finds it.
    expect(await find()).toEqual([a.pid]);
    b = sleeper();
    await once(b, 'spawn');
    expect((await find()).sort()).toEqual([a.pid, b.pid].sort());
    await stop(a);
    expect(await find()).toEqual([b.pid]);
  } finally {
    await stop(a);
    if (b) await stop(b);
  }
  expect(await find()).toEqual([]);
});
