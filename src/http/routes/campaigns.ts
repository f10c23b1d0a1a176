/**
 * /api/campaigns: create (the programmatic API's input and validation), list (yours; an admin's
 * all or `user_id`'s), get with progress, pause, resume, cancel. Another user's campaign answers
 * 404 everywhere, like a missing one.
 */
import { Op } from 'sequelize';
import { z } from 'zod';
import { ValidationError } from '../../../services/kernel/errors.js';
import { toCampaignView, type CampaignProgress, type CampaignView } from '../../../services/campaigns.js';
import { createCampaignSchema } from '../../../services/validation.js';
import { scopeUserId, userOf } from '../auth.js';
import { camelizeKeys } from '../casing.js';
import { campaignFor, type App, type RouteContext } from '../context.js';
import { campaignCounts, percentDone, type Counts } from '../queries.js';
import { campaignListQuery, campaignParams, campaignSchema, campaignStateSchema, errors, userQuery } from '../schemas.js';

/** The HTTP shape of a campaign: its view, its stored recipient rule in the API's casing, its progress. */
export function campaignBody(c: CampaignView, p: Counts & { waitReason: string | null; pauseReason?: string | null }) {
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
      const counts = await campaignCounts(
        engine.apiDb,
        page.map((c) => c.id),
      );
      return { campaigns: page.map((c) => campaignBody(c, counts.get(c.id)!)) };
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
  steer('pause', 'Pause a campaign (queued mail stays queued); 409 when it is not scheduled or sending');
  steer('resume', 'Resume a paused campaign; 409 when it is cancelled or completed');
  steer('cancel', 'Cancel a campaign: queued mail is cancelled and its credit refunded');
}
