/**
 * POST /api/bounces: bounce and complaint reports, from an admin or a provider's webhook presenting
 * X-Fairsend-Webhook-Secret. The JSON form (snake_case on the wire):
 *
 *   { "events": [
 *       { "type": "hard_bounce", "email": "gone@example.org", "campaign_id": 12, "service_id": 3, "reason": "550 5.1.1 no such user" },
 *       { "type": "complaint",   "email": "angry@example.org" },
 *       { "type": "soft_bounce", "email": "full@example.org", "reason": "452 mailbox full" } ] }
 *
 * hard_bounce marks the contact bounced, complaint unsubscribed; both cancel its queued mail at
 * once (credit refunded). soft_bounce is counted in error_logs ('soft_bounce'). With campaign_id the
 * address is matched among that campaign owner's contacts, else among every user's. An event with an
 * `event_id` is applied once: sent again with the same id (a retried delivery), it is counted in
 * `duplicates` and skipped. A service's own
 * webhook secret may report only for that service. See services/bounces.ts.
 */
import { z } from 'zod';
import { ValidationError } from '../../../services/kernel/errors.js';
import { bounceReportSchema } from '../../../services/bounces.js';
import type { App, RouteContext } from '../context.js';
import { errors } from '../schemas.js';

export function bounceRoutes(app: App, ctx: RouteContext): void {
  app.post(
    '/api/bounces',
    {
      config: { auth: 'bounce' },
      schema: {
        tags: ['bounces'],
        summary: 'Report bounces and complaints (admin token, or X-Fairsend-Webhook-Secret)',
        description:
          'hard_bounce: the contact becomes bounced; complaint: unsubscribed; both cancel its queued mail and refund the credit. ' +
          'soft_bounce: counted in error_logs. With campaign_id the address is matched among that campaign owner’s contacts, else every user’s.',
        body: bounceReportSchema,
        response: {
          200: z.object({
            events: z.number(),
            duplicates: z.number().describe('Events skipped: one with the same event_id (from the same sender) was applied before'),
            contactsMarked: z.number(),
            unmatched: z.array(z.string()),
            cancelled: z.number(),
            refunded: z.number(),
            softBounces: z.number(),
            suppressed: z.number(),
            breakers: z.array(z.object({ campaignId: z.number(), reason: z.string() })),
          }),
          ...errors(400, 401, 403, 429),
        },
      },
    },
    async (request) => {
      const serviceId = request.auth?.webhook?.serviceId ?? null;
      const events = request.body.events.map((e, i) => {
        if (serviceId === null) return e;
        if (e.serviceId !== undefined && e.serviceId !== serviceId) {
          throw new ValidationError([
            { path: `events[${i}].serviceId`, message: `this webhook secret reports for service ${serviceId} only` },
          ]);
        }
        return { ...e, serviceId };
      });
      const r = await ctx.engine.bounces.record(events, serviceId === null ? 'api' : `webhook:service-${serviceId}`);
      return { ...r, breakers: r.breakers };
    },
  );
}
