/**
 * /api/suppressions: the suppression list (services/suppressions.ts). A user manages their own
 * list; an admin any user's (`user_id`) or the global one (`global=true`).
 *
 *   GET    /api/suppressions[?email=&after_id=&limit=]   one page, in id order
 *   POST   /api/suppressions  { "emails": [...], "reason": "manual", "detail": "..." }
 *   DELETE /api/suppressions/:email
 *   GET    /api/suppressions/export                     the whole list as CSV
 *   POST   /api/suppressions/import  (text/csv: a header row with email, optional reason and detail)
 */
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { SUPPRESSION_REASONS } from '../../../services/suppressions.js';
import { emailSchema } from '../../../services/validation.js';
import { ValidationError } from '../../../services/kernel/errors.js';
import { forbidden } from '../errors.js';
import { decodeUtf8Body } from '../json-body.js';
import { scopeUserId, userOf } from '../auth.js';
import type { App, RouteContext } from '../context.js';
import { errors } from '../schemas.js';

const intId = z.coerce.number().int().positive().max(2_147_483_647);
const scopeQuery = z.strictObject({
  userId: intId.optional().describe('Admins: whose list (default: yourself). Others: only your own id.'),
  global: z.enum(['true', 'false']).optional().describe('Admins: the global list, which applies to every user'),
});

const suppressionSchema = z.object({
  id: z.number(),
  userId: z.number().nullable(),
  email: z.string(),
  reason: z.enum(SUPPRESSION_REASONS),
  source: z.string(),
  detail: z.string().nullable(),
  createdAt: z.date(),
});
const addResultSchema = z.object({ added: z.number(), existing: z.number(), cancelled: z.number(), refunded: z.number() });

/** The list a request acts on: null is the global list (admins only). */
function scopeOf(request: FastifyRequest, q: z.infer<typeof scopeQuery>): number | null {
  if (q.global === 'true') {
    if (userOf(request).role !== 'admin') throw forbidden('only admins manage the global suppression list');
    return null;
  }
  return scopeUserId(request, q.userId);
}

export function suppressionRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['suppressions'];

  app.get(
    '/api/suppressions',
    {
      schema: {
        tags,
        summary: 'One page of a suppression list',
        querystring: scopeQuery.extend({
          email: z.string().max(320).optional(),
          afterId: z.coerce.number().int().nonnegative().optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
        }),
        response: {
          200: z.object({ suppressions: z.array(suppressionSchema), nextAfterId: z.number().nullable() }),
          ...errors(400, 401, 403),
        },
      },
    },
    async (request) => {
      const q = request.query;
      const page = await engine.suppressions.list({
        userId: scopeOf(request, q),
        limit: q.limit,
        ...(q.afterId !== undefined ? { cursor: q.afterId } : {}),
        ...(q.email !== undefined ? { email: q.email } : {}),
      });
      return { suppressions: page.items, nextAfterId: page.nextCursor };
    },
  );

  app.post(
    '/api/suppressions',
    {
      schema: {
        tags,
        summary: 'Add addresses to a suppression list (their queued mail is cancelled, credit refunded)',
        querystring: scopeQuery,
        body: z.strictObject({
          emails: z.array(emailSchema).min(1).max(10_000),
          reason: z.enum(SUPPRESSION_REASONS).optional(),
          detail: z.string().max(1000).optional(),
        }),
        response: { 200: addResultSchema, ...errors(400, 401, 403, 404) },
      },
    },
    async (request) =>
      engine.suppressions.add({
        userId: scopeOf(request, request.query),
        emails: request.body.emails,
        source: 'http',
        ...(request.body.reason ? { reason: request.body.reason } : {}),
        ...(request.body.detail ? { detail: request.body.detail } : {}),
      }),
  );

  app.delete(
    '/api/suppressions/:email',
    {
      schema: {
        tags,
        summary: 'Remove an address from a suppression list (contacts keep their status)',
        params: z.strictObject({ email: emailSchema }),
        querystring: scopeQuery,
        response: { 200: z.object({ removed: z.number() }), ...errors(400, 401, 403) },
      },
    },
    async (request) => engine.suppressions.remove({ userId: scopeOf(request, request.query), email: request.params.email }),
  );

  app.get(
    '/api/suppressions/export',
    {
      schema: {
        tags,
        summary: 'A suppression list as CSV (email,reason,source,detail,created_at)',
        querystring: scopeQuery,
        produces: ['text/csv'],
      },
    },
    async (request, reply) => {
      const csv = await engine.suppressions.exportCsv(scopeOf(request, request.query));
      return reply.header('content-type', 'text/csv; charset=utf-8').send(csv);
    },
  );

  app.register(async (scope) => {
    const csvScope = scope as App;
    // Bytes that are not UTF-8 are refused with their line, never decoded to U+FFFD.
    csvScope.addContentTypeParser(['text/csv', 'application/csv'], { parseAs: 'buffer' }, (_request, body, done) => {
      let text: string;
      try {
        text = decodeUtf8Body(body as Buffer);
      } catch (err) {
        done(err as Error, undefined);
        return;
      }
      done(null, text);
    });
    csvScope.post(
      '/api/suppressions/import',
      {
        schema: {
          tags,
          summary: 'Import a CSV into a suppression list (header row: email, optional reason and detail); all rows or none',
          consumes: ['text/csv'],
          querystring: scopeQuery,
          response: { 200: addResultSchema.extend({ rows: z.number() }), ...errors(400, 401, 403, 404, 415) },
        },
      },
      async (request) => {
        if (typeof request.body !== 'string')
          throw new ValidationError([{ path: 'body', message: 'must be a CSV file (Content-Type: text/csv)' }]);
        return engine.suppressions.importCsv(scopeOf(request, request.query as z.infer<typeof scopeQuery>), request.body, {
          source: 'http-import',
        });
      },
    );
  });
}
