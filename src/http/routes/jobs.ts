/** /api/jobs (admins): the maintenance jobs, when the server was given a JobsApi; 404 otherwise. */
import { z } from 'zod';
import { NotFoundError } from '../../../services/kernel/errors.js';
import type { App, RouteContext } from '../context.js';
import type { JobsApi } from '../options.js';
import { errors, jobParams } from '../schemas.js';

export function jobRoutes(app: App, ctx: RouteContext): void {
  const tags = ['jobs'];
  const jobs = (): JobsApi => {
    if (!ctx.options.jobs) throw new NotFoundError('maintenance jobs API', 'in this server');
    return ctx.options.jobs;
  };
  const any = z.unknown();

  app.get(
    '/api/jobs',
    {
      config: { auth: 'admin' },
      schema: {
        tags,
        summary: 'Maintenance jobs: schedule, state, last run (admin)',
        response: { 200: z.object({ jobs: z.array(any) }), ...errors(401, 403, 404) },
      },
    },
    async () => ({ jobs: await jobs().list() }),
  );

  app.get(
    '/api/jobs/reports',
    {
      config: { auth: 'admin' },
      schema: {
        tags,
        summary: 'Latest performance reports, newest first (admin)',
        querystring: z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).default(10) }),
        response: { 200: z.object({ reports: z.array(any) }), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      const api = jobs();
      if (!api.reports) throw new NotFoundError('performance reports', 'in this server');
      return { reports: await api.reports(request.query.limit) };
    },
  );

  const act = (verb: 'pause' | 'resume' | 'run', summary: string) =>
    app.post(
      `/api/jobs/:name/${verb}`,
      {
        config: { auth: 'admin' },
        schema: { tags, summary, params: jobParams, response: { 200: z.object({ job: any }), ...errors(400, 401, 403, 404, 409) } },
      },
      async (request) => {
        const api = jobs();
        const name = request.params.name;
        return { job: verb === 'run' ? await api.runNow(name) : await api[verb](name) };
      },
    );
  act('pause', 'Stop scheduling a job (a run in progress finishes) (admin)');
  act('resume', 'Schedule a paused job again (admin)');
  act('run', 'Run a job now, outside its schedule, and return the run (admin)');
}
