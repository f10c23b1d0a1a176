/**
 * /api/services: sending services with their quota. Admins create and change them and see their
 * transport (never the password: engine views omit it, and the response schema would drop it);
 * users see the services they may send through, without transport, DKIM or user lists.
 */
import { z } from 'zod';
import { NotFoundError } from '../../../services/kernel/errors.js';
import type { ServiceQuota, ServiceView } from '../../../services/sending-services.js';
import { createServiceSchema, updateServiceSchema } from '../../../services/validation.js';
import { isAdmin, userOf } from '../auth.js';
import type { App, RouteContext } from '../context.js';
import { quotaView, usableServiceIds } from '../queries.js';
import { errors, idParams, serviceSchema } from '../schemas.js';

export function serviceBody(v: ServiceView, q: ServiceQuota | undefined, admin: boolean) {
  // quota() reads the same table: a service missing from it was deleted in between.
  if (!q) throw new NotFoundError('sending service', v.id);
  const quota = quotaView(q, v.lastSentAt);
  const common = { id: v.id, name: v.name, sendingRate: v.sendingRate, quotaTimezone: v.quotaTimezone, enabled: v.enabled, ...quota };
  if (!admin) return common;
  return {
    ...common,
    transport: v.transport,
    maxConnections: v.maxConnections,
    userIds: v.userIds,
    dkim: v.dkim,
    deliverability: v.deliverability,
    lastError: v.lastError,
  };
}

export function serviceRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['services'];

  const withQuota = async (v: ServiceView, admin: boolean) => {
    const q = (await engine.services.quota()).find((x) => x.id === v.id);
    return serviceBody(v, q, admin);
  };

  app.post(
    '/api/services',
    {
      config: { auth: 'admin' },
      schema: {
        tags,
        summary: 'Add a sending service (admin)',
        description: 'Same input as engine.services.create, in snake_case. Omit user_ids to open it to every user.',
        body: createServiceSchema,
        response: { 201: serviceSchema, ...errors(400, 401, 403) },
      },
    },
    async (request, reply) => reply.code(201).send(await withQuota(await engine.services.create(request.body), true)),
  );

  const update = (method: 'PATCH' | 'PUT') =>
    app.route({
      method,
      url: '/api/services/:id',
      config: { auth: 'admin' },
      schema: {
        tags,
        summary: method === 'PATCH' ? 'Change some fields of a service (admin)' : 'Replace a service’s settings (admin)',
        description:
          method === 'PATCH'
            ? 'A running scheduler picks the change up within one tick. `user_ids: null` opens the service to every user.'
            : 'Every field as in creation; omitted optional fields take their defaults (no user_ids: open to all).',
        params: idParams,
        body: method === 'PATCH' ? updateServiceSchema : createServiceSchema,
        response: { 200: serviceSchema, ...errors(400, 401, 403, 404) },
      },
      handler: async (request) => {
        const body = request.body as z.output<typeof createServiceSchema>;
        const patch =
          method === 'PUT'
            ? {
                ...body,
                userIds: body.userIds ?? null,
                dkim: body.dkim ?? null,
                deliverability: body.deliverability ?? null,
                maxConnections: body.maxConnections ?? 5,
                enabled: body.enabled ?? true,
                quotaTimezone: body.quotaTimezone ?? engine.config.defaultTimezone,
              }
            : body;
        return withQuota(await engine.services.update(request.params.id, patch), true);
      },
    });
  update('PATCH');
  update('PUT');

  app.get(
    '/api/services',
    {
      schema: {
        tags,
        summary: 'Sending services with remaining quota, reset time and health',
        description: 'Admins: every service with its transport (never the password). Users: the services they may send through.',
        response: { 200: z.object({ services: z.array(serviceSchema) }), ...errors(401) },
      },
    },
    async (request) => {
      const admin = isAdmin(request);
      const [views, quota, usable] = await Promise.all([
        engine.services.list(),
        engine.services.quota(),
        admin ? undefined : usableServiceIds(engine.apiDb, userOf(request).id),
      ]);
      const byId = new Map(quota.map((q) => [q.id, q]));
      // Read concurrently: a service added or removed in between is left out until the next call.
      return {
        services: views.filter((v) => byId.has(v.id) && (!usable || usable.has(v.id))).map((v) => serviceBody(v, byId.get(v.id), admin)),
      };
    },
  );

  app.get(
    '/api/services/:id',
    {
      schema: { tags, summary: 'One sending service', params: idParams, response: { 200: serviceSchema, ...errors(400, 401, 404) } },
    },
    async (request) => {
      const admin = isAdmin(request);
      if (!admin && !(await usableServiceIds(engine.apiDb, userOf(request).id)).has(request.params.id)) {
        throw new NotFoundError('sending service', request.params.id);
      }
      return withQuota(await engine.services.get(request.params.id), admin);
    },
  );
}
