/** GET /health, no auth: 200 when the database answers within `healthTimeoutMs` (2 s), else 503. */
import { z } from 'zod';
import type { App, RouteContext } from '../context.js';

export function healthRoutes(app: App, ctx: RouteContext): void {
  const body = z.object({ status: z.enum(['ok', 'unavailable']), database: z.enum(['ok', 'timeout', 'error']), version: z.string() });
  app.get(
    '/health',
    { schema: { tags: ['health'], summary: 'Liveness and database reachability (no auth)', response: { 200: body, 503: body } } },
    async (_request, reply) => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ctx.options.healthTimeoutMs)));
      const database = await Promise.race([
        ctx.engine.apiDb.query('SELECT 1').then(
          () => 'ok' as const,
          () => 'error' as const,
        ),
        timeout,
      ]).finally(() => clearTimeout(timer));
      const ok = database === 'ok';
      return reply
        .code(ok ? 200 : 503)
        .header('cache-control', 'no-store')
        .send({ status: ok ? 'ok' : 'unavailable', database, version: ctx.version });
    },
  );
}
