/**
 * /api/campaigns: create (the programmatic API's input and validation), list (yours; an admin's
 * all or `user_id`'s), get with progress, pause, resume, cancel, its recipients page by page, retry
 * of its failed and unknown messages. Another user's campaign answers 404 everywhere, like a
 * missing one.
 */
import { Op } from 'sequelize';
import { z } from 'zod';
import { ValidationError } from '../../../services/kernel/errors.js';
import { toCampaignView, type CampaignForecast, type CampaignProgress, type CampaignView } from '../../../services/campaigns.js';
import { createCampaignSchema } from '../../../services/validation.js';
import { RETRYABLE_STATUSES, SUBTASK_STATUSES, retrySchema } from '../../../services/campaign-recipients.js';
import { scopeUserId, userOf } from '../auth.js';
import { camelizeKeys } from '../casing.js';
import { campaignFor, type App, type RouteContext } from '../context.js';
import { campaignCounts, percentDone, type Counts } from '../queries.js';
import { campaignListQuery, campaignParams, campaignSchema, campaignStateSchema, errors, userQuery } from '../schemas.js';

/** The HTTP shape of a campaign: its view, its stored recipient rule in the API's casing, its progress. */
export function campaignBody(
  c: CampaignView,
  p: Counts & { waitReason: string | null; pauseReason?: string | null; forecast?: CampaignForecast | null },
) {
  return {
    ...c,
    recipientRule: c.recipientRule ? (camelizeKeys(c.recipientRule) as z.infer<typeof campaignSchema>['recipientRule']) : null,
    progress: { ...p, percent: percentDone(p) },
  };
}

const fromProgress = (p: CampaignProgress) => ({
  total: p.total,
  queued: p.queued,
  sending: p.sending,
  sent: p.sent,
  failed: p.failed,
  cancelled: p.cancelled,
  unknown: p.unknown,
  waitReason: p.waitReason,
  pauseReason: p.pauseReason,
  forecast: p.forecast,
});

/** The list (polled by the dashboard every 1.5 s) may answer a forecast made this recently; GET /api/campaigns/{id} makes a new one. */
const LIST_FORECAST_MAX_AGE_MS = 5000;

const recipientsQuery = z.strictObject({
  status: z
    .string()
    .max(200)
    .optional()
    .describe(`Comma-separated statuses (${SUBTASK_STATUSES.join(', ')}); all when absent`),
  cursor: z.string().max(200).optional().describe('The previous page’s next_cursor'),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

const lastReplySchema = z
  .object({
    at: z.date(),
    serviceId: z.number().nullable(),
    provider: z.string().nullable().describe('The recipient’s domain'),
    result: z.string().describe('accepted, transient, permanent, ambiguous, or connection (the server was never reached)'),
    code: z.number().nullable().describe('SMTP reply code'),
    enhancedCode: z.string().nullable().describe('RFC 3463 enhanced status code, e.g. 5.1.1'),
    text: z.string().nullable().describe('The reply, one line, at most 300 characters'),
    durationMs: z.number().nullable(),
  })
  .nullable();

const recipientsPageSchema = z.object({
  recipients: z.array(
    z.object({
      contactId: z.number(),
      email: z.string(),
      status: z.enum(SUBTASK_STATUSES),
      attempts: z.number(),
      sentAt: z.date().nullable(),
      messageId: z.string().nullable(),
      lastError: z.string().nullable(),
      lastReply: lastReplySchema,
    }),
  ),
  nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page; null on the last page'),
});

const retryResultSchema = z.object({
  campaignId: z.number(),
  status: campaignSchema.shape.status,
  requeued: z.number(),
  failed: z.number(),
  unknown: z.number(),
  skippedSuppressed: z.number(),
  skippedInactive: z.number(),
  remainingCredit: z.number(),
});

export function campaignRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['campaigns'];

  app.post(
    '/api/campaigns',
    {
      schema: {
        tags,
        summary: 'Create a campaign',
        description:
          'Same input and validation as engine.campaigns.create, in snake_case. `user_id` defaults to you; only admins may name another user. ' +
          'Credit for every recipient is reserved at once: not enough credit is a 422 QUOTA_EXCEEDED.',
        querystring: userQuery,
        body: createCampaignSchema,
        response: { 201: campaignSchema, ...errors(400, 401, 403, 422) },
      },
      // user_id is filled in from the token before validation (it is required by the shared schema).
      preValidation: async (request) => {
        const body = request.body as Record<string, unknown> | null;
        if (body && typeof body === 'object' && !Array.isArray(body) && body.user_id === undefined && body.userId === undefined) {
          const fromQuery = (request.query as { user_id?: string }).user_id;
          body.user_id = fromQuery === undefined ? userOf(request).id : /^\d{1,10}$/.test(fromQuery) ? Number(fromQuery) : fromQuery;
        }
      },
    },
    async (request, reply) => {
      // A user may create campaigns only for themselves (403 otherwise); an admin for anyone.
      scopeUserId(request, request.body.userId);
      if (request.query.userId !== undefined && request.query.userId !== request.body.userId) {
        throw new ValidationError([{ path: 'user_id', message: 'differs between the query string and the body' }]);
      }
      const created = await engine.campaigns.create(request.body);
      const p = await engine.campaigns.progress(created.id);
      return reply.code(201).send(campaignBody(created, fromProgress(p)));
    },
  );

  app.get(
    '/api/campaigns',
    {
      schema: {
        tags,
        summary: 'List campaigns with their progress',
        description: 'Yours; for an admin every user’s, or `user_id`’s. Ordered by id; page with `after_id` and `limit`.',
        querystring: campaignListQuery,
        response: { 200: z.object({ campaigns: z.array(campaignSchema) }), ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const { afterId, status, limit } = request.query;
      const userId = scopeUserId(request, request.query.userId, true);
      const rows = await engine.models.Task.findAll({
        where: {
          ...(userId !== undefined ? { createdBy: userId } : {}),
          ...(afterId !== undefined ? { id: { [Op.gt]: afterId } } : {}),
          ...(status ? { status } : {}),
        },
        order: [['id', 'ASC']],
        limit,
      });
      const page = rows.map(toCampaignView);
      const ids = page.map((c) => c.id);
      const [counts, forecasts] = await Promise.all([
        campaignCounts(engine.apiDb, ids),
        engine.campaigns.forecasts(ids, { maxAgeMs: LIST_FORECAST_MAX_AGE_MS }),
      ]);
      return {
        campaigns: page.map((c) => {
          const final = c.status === 'completed' || c.status === 'cancelled';
          return campaignBody(c, { ...counts.get(c.id)!, forecast: final ? null : (forecasts.get(c.id) ?? null) });
        }),
      };
    },
  );

  app.get(
    '/api/campaigns/:id',
    {
      schema: {
        tags,
        summary: 'A campaign with its exact progress',
        params: campaignParams,
        response: { 200: campaignSchema, ...errors(400, 401, 404) },
      },
    },
    async (request) => {
      const c = await campaignFor(engine, request, request.params.id);
      return campaignBody(c, fromProgress(await engine.campaigns.progress(c.id)));
    },
  );

  const steer = (verb: 'pause' | 'resume' | 'cancel', summary: string) =>
    app.post(
      `/api/campaigns/:id/${verb}`,
      {
        schema: {
          tags,
          summary,
          params: campaignParams,
          response: {
            200: verb === 'cancel' ? campaignStateSchema.extend({ refunded: z.number() }) : campaignStateSchema,
            ...errors(400, 401, 404, 409),
          },
        },
      },
      async (request) => {
        const c = await campaignFor(engine, request, request.params.id);
        const result = verb === 'cancel' ? await engine.campaigns.cancel(c.id) : (await engine.campaigns[verb](c.id), {});
        const now = await engine.campaigns.get(c.id);
        return { id: now.id, status: now.status, ...result } as { id: number; status: CampaignView['status']; refunded: number };
      },
    );
  app.get(
    '/api/campaigns/:id/recipients',
    {
      schema: {
        tags,
        summary: 'A campaign’s recipients with their status and the server’s last reply, page by page',
        description:
          'Keyset pages in contact order (engine.campaigns.recipients): pass `next_cursor` as `cursor` until it is null. ' +
          '`status` filters (e.g. `failed,unknown`).',
        params: campaignParams,
        querystring: recipientsQuery,
        response: { 200: recipientsPageSchema, ...errors(400, 401, 404) },
      },
    },
    async (request) => {
      const c = await campaignFor(engine, request, request.params.id);
      const { status, cursor, limit } = request.query;
      const statuses = status
        ?.split(',')
        .map((x) => x.trim())
        .filter(Boolean) as (typeof SUBTASK_STATUSES)[number][] | undefined;
      const page = await engine.campaigns.recipients(c.id, {
        limit,
        ...(statuses?.length ? { status: statuses } : {}),
        ...(cursor !== undefined ? { cursor } : {}),
      });
      return { recipients: page.items, nextCursor: page.nextCursor };
    },
  );

  app.post(
    '/api/campaigns/:id/retry',
    {
      schema: {
        tags,
        summary: 'Re-queue a campaign’s failed and/or unknown messages',
        description:
          `\`statuses\` (default ${RETRYABLE_STATUSES.join(' and ')}). Needs the user’s credit for each message re-queued ` +
          '(422 QUOTA_EXCEEDED otherwise, nothing changed); suppressed addresses and inactive contacts are left out; ' +
          'the Message-ID stays the same. 409 for a cancelled campaign or one not generated yet.',
        params: campaignParams,
        body: retrySchema.optional(),
        response: { 200: retryResultSchema, ...errors(400, 401, 404, 409, 422) },
      },
    },
    async (request) => {
      const c = await campaignFor(engine, request, request.params.id);
      return engine.campaigns.retry(c.id, request.body ?? {});
    },
  );

  steer('pause', 'Pause a campaign (queued mail stays queued); 409 when it is not scheduled or sending');
  steer('resume', 'Resume a paused campaign; 409 when it is cancelled or completed');
  steer('cancel', 'Cancel a campaign: queued mail is cancelled and its credit refunded');
}
