/**
 * /api/failures (admins): the latest delivery failures, from error_logs (one row per error type and
 * message, with how often it happened and when first and last), newest first. error_logs names a
 * sending service, not a user, so it is for admins only.
 */
import { z } from 'zod';
import { queryRows } from '../../../services/kernel/db-query.js';
import type { App, RouteContext } from '../context.js';
import { errors } from '../schemas.js';

const LATEST_FAILURES = `
SELECT e.id, e.error_type, e.message, e.count, e.service_id, s.name AS service_name, e.first_seen_at, e.last_seen_at
  FROM error_logs e LEFT JOIN email_services s ON s.id = e.service_id
 ORDER BY e.last_seen_at DESC, e.id DESC
 LIMIT $limit`;

const failureSchema = z.object({
  id: z.number(),
  errorType: z.string().describe('A stable label: smtp_550, connection, timeout, soft_bounce, ...'),
  message: z.string(),
  count: z.number().describe('Times it happened between first_seen_at and last_seen_at'),
  serviceId: z.number().nullable(),
  serviceName: z.string().nullable(),
  firstSeenAt: z.date(),
  lastSeenAt: z.date(),
});

export function failureRoutes(app: App, ctx: RouteContext): void {
  app.get(
    '/api/failures',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['scheduler'],
        summary: 'Latest delivery failures (error_logs), newest first (admin)',
        querystring: z.strictObject({ limit: z.coerce.number().int().min(1).max(200).default(10) }),
        response: { 200: z.object({ failures: z.array(failureSchema) }), ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const rows = await queryRows<{
        id: string;
        error_type: string;
        message: string;
        count: number;
        service_id: number | null;
        service_name: string | null;
        first_seen_at: Date;
        last_seen_at: Date;
      }>(ctx.engine.apiDb, LATEST_FAILURES, { limit: request.query.limit });
      return {
        failures: rows.map((r) => ({
          id: Number(r.id),
          errorType: r.error_type,
          message: r.message,
          count: r.count,
          serviceId: r.service_id,
          serviceName: r.service_name,
          firstSeenAt: r.first_seen_at,
          lastSeenAt: r.last_seen_at,
        })),
      };
    },
  );
}
