/** `fairsend jobs list | pause | resume | run`: maintenance jobs, in process or on a running server. */
import type { Command } from 'commander';
import type { JobsApi } from '../http/options.js';
import { table } from './format.js';
import { field, jsonOption, when, type CliContext } from './context.js';

export function registerJobs(program: Command, ctx: CliContext): void {
  const { out, json, withEngine, jobsOf, remote, urlOption, tokenOption } = ctx;
  const jobs = program.command('jobs').description('maintenance jobs');
  const withJobs = async (o: { url?: string; token?: string }, verb: string, fn: (api: JobsApi) => Promise<void>) => {
    const api = remote(o);
    if (api) {
      await fn({
        list: async () => (await api<{ jobs: unknown[] }>('GET', '/api/jobs')).jobs,
        pause: async (n) => (await api<{ job: unknown }>('POST', `/api/jobs/${encodeURIComponent(n)}/pause`)).job,
        resume: async (n) => (await api<{ job: unknown }>('POST', `/api/jobs/${encodeURIComponent(n)}/resume`)).job,
        runNow: async (n) => (await api<{ job: unknown }>('POST', `/api/jobs/${encodeURIComponent(n)}/run`)).job,
      });
      return;
    }
    if (verb === 'pause' || verb === 'resume') {
      throw new Error(`jobs ${verb} steers a running server's schedule: pass --url (or set FAIRSEND_URL) and a token`);
    }
    await withEngine(async (engine) => {
      const local = jobsOf(engine);
      if (!local) throw new Error('maintenance jobs are not available in this build; use --url to reach a running server');
      await fn(local);
    });
  };
  const printJob = (j: unknown) => {
    const outcome = field(j, 'outcome') ?? field(j, 'lastOutcome') ?? '-';
    const ms = field(j, 'durationMs') ?? field(j, 'lastDurationMs');
    const error = field(j, 'error') ?? field(j, 'lastError');
    out(
      `${String(field(j, 'name'))}: ${String(outcome)}${ms !== undefined && ms !== null ? ` in ${String(ms)} ms` : ''}${error ? ` (${String(error)})` : ''}\n`,
    );
  };
  jobs
    .command('list')
    .description('every job: schedule, state, next and last run')
    .addOption(urlOption())
    .addOption(tokenOption())
    .addOption(jsonOption())
    .action(async (o: { url?: string; token?: string; json?: boolean }) =>
      withJobs(o, 'list', async (api) => {
        const list = await api.list();
        if (o.json) return json(list);
        out(
          table(
            ['name', 'schedule', 'state', 'next run', 'last run', 'outcome'],
            list.map((j) => [
              String(field(j, 'name')),
              String(field(j, 'schedule') ?? '-'),
              field(j, 'running') ? 'running' : field(j, 'paused') ? 'paused' : field(j, 'enabled') === false ? 'disabled' : 'scheduled',
              when(field(j, 'nextRunAt')),
              when(field(j, 'lastRunAt')),
              String(field(j, 'lastOutcome') ?? '-'),
            ]),
          ),
        );
      }),
    );
  for (const [verb, desc] of [
    ['pause', 'stop scheduling a job (a run in progress finishes)'],
    ['resume', 'schedule a paused job again'],
    ['run', 'run a job now and print the outcome'],
  ] as const) {
    jobs
      .command(verb)
      .description(desc)
      .argument('<name>', 'job name')
      .addOption(urlOption())
      .addOption(tokenOption())
      .action(async (name: string, o: { url?: string; token?: string }) =>
        withJobs(o, verb, async (api) => {
          if (verb === 'run') printJob(await api.runNow(name));
          else {
            const j = await api[verb](name);
            out(
              `${name}: ${verb === 'pause' ? 'paused' : 'resumed'}${field(j ?? {}, 'nextRunAt') ? `, next run ${when(field(j, 'nextRunAt'))}` : ''}\n`,
            );
          }
        }),
      );
  }
}
