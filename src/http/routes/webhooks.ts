/**
 * Provider webhooks: POST /webhooks/:provider/:service_id (public: the provider's own signature or
 * basic auth is the proof; a bad one is a 401 and changes nothing), and
 * PUT /api/services/:id/webhooks/:provider (admin) to set the credentials that verify it.
 * Providers: mailgun, sendgrid, postmark, sparkpost, ses (SNS). See services/webhooks/.
 */
import { z } from 'zod';
import { PROVIDERS } from '../../../services/webhooks/providers.js';
import type { App, RouteContext } from '../context.js';
import { HttpError } from '../errors.js';
import { errors, idParams } from '../schemas.js';

const credentialsSchema = z.strictObject({
  signingKey: z.string().min(1).max(500).optional(),
  publicKey: z.string().min(1).max(2000).optional(),
  username: z.string().min(1).max(200).optional(),
  password: z.string().min(1).max(500).optional(),
  topicArns: z.array(z.string().max(300)).max(20).optional(),
});

export function webhookRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  app.put(
    '/api/services/:id/webhooks/:provider',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['bounces'],
        summary: 'Set the credentials that verify a provider webhook of this service (admin)',
        params: idParams.extend({ provider: z.enum(PROVIDERS) }),
        body: credentialsSchema,
        response: { 204: z.null(), ...errors(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await engine.webhooks.configure(request.params.id, request.params.provider, request.body);
      return reply.code(204).send(null);
    },
  );
}

/** The public receiving end, registered outside the token-protected scope. */
export function webhookReceiver(app: App, ctx: RouteContext): void {
  // Signatures cover the exact bytes: keep the body as text (SNS posts JSON as text/plain).
  app.addContentTypeParser(['application/json', 'text/plain'], { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.post(
    '/webhooks/:provider/:serviceId',
    {
      schema: {
        hide: true,
        params: z.strictObject({ provider: z.string().max(20), serviceId: z.coerce.number().int().positive().max(2_147_483_647) }),
      },
    },
    async (request, reply) => {
      const out = await ctx.engine.webhooks.receive(request.params.provider, request.params.serviceId, {
        headers: request.headers,
        rawBody: typeof request.body === 'string' ? request.body : '',
        now: ctx.engine.clock().toJSDate(),
      });
      if (out.status === 401) throw new HttpError(401, 'UNAUTHORIZED', out.reason);
      return reply
        .code(200)
        .send({ ok: true, ...(out.confirmed ? { confirmed: true } : {}), ...(out.result ? { events: out.result.events } : {}) });
    },
  );
}
