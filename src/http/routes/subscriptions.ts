/**
 * Contact status by hand: an admin re-activates an unsubscribed or bounced contact, with a reason
 * (recorded with the admin's id); the owner (or an admin) unsubscribes a contact through the API
 * (recorded as `api`); the owner (or an admin) reads a contact's status history.
 */
import { z } from 'zod';
import { userOf } from '../auth.js';
import type { App, RouteContext } from '../context.js';
import { errors, idParams } from '../schemas.js';

const eventSchema = z.object({
  id: z.number(),
  contactId: z.number(),
  email: z.string(),
  fromStatus: z.enum(['active', 'unsubscribed', 'bounced']),
  toStatus: z.enum(['active', 'unsubscribed', 'bounced']),
  method: z.enum(['one_click', 'page', 'api', 'complaint', 'bounce', 'reactivation', 'merge']),
  taskId: z.number().nullable(),
  actorId: z.number().nullable(),
  reason: z.string().nullable(),
  at: z.date(),
});

export function subscriptionRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['contacts'];

  app.post(
    '/api/contacts/:id/reactivate',
    {
      config: { auth: 'admin' },
      schema: {
        tags,
        summary: 'Re-activate an unsubscribed or bounced contact, with a reason (admin; recorded)',
        description:
          "The only way back to `active`: the owner's suppression entries for the address (not manual ones) are lifted, and the change " +
          'is recorded with the admin and the reason. An active contact: 409.',
        params: idParams,
        body: z.strictObject({ reason: z.string().describe('Why the contact may be mailed again (1 to 1000 characters)') }),
        response: { 200: eventSchema, ...errors(400, 401, 403, 404, 409) },
      },
    },
    async (request) => engine.subscriptions.reactivate(request.params.id, { adminId: userOf(request).id, reason: request.body.reason }),
  );

  app.get(
    '/api/contacts/:id/status-history',
    {
      schema: {
        tags,
        summary: "A contact's status changes, oldest first: unsubscribes (when, from which campaign, how) and re-activations (who, why)",
        params: idParams,
        response: { 200: z.object({ events: z.array(eventSchema) }), ...errors(400, 401, 404) },
      },
    },
    async (request) => {
      const user = userOf(request);
      return { events: await engine.subscriptions.history(request.params.id, user.role === 'admin' ? undefined : user.id) };
    },
  );
}
