/**
 * One-click unsubscribe (RFC 8058), no login: the token in the URL is the capability.
 *
 * - GET /u/:token shows a small confirmation page with a button. It changes nothing: mail
 *   scanners and link previewers follow GET links, and must not unsubscribe anyone.
 * - POST /u/:token with the body `List-Unsubscribe=One-Click` (application/x-www-form-urlencoded,
 *   or multipart/form-data as RFC 8058 allows) unsubscribes the contact and cancels its queued
 *   mail in every live campaign at once (services/unsubscribes.ts). This is what mailbox providers
 *   call from the List-Unsubscribe-Post header, and what the page's button sends.
 *
 * A forged or altered token (HMAC check in services/delivery/unsubscribe.ts), or one naming a
 * campaign that does not exist, gets 400 and changes nothing; any other body type (JSON) 415.
 * Each unsubscribe is recorded with its campaign and how it came: `one_click` (a mailbox
 * provider's POST) or `page` (the confirmation page's button, which adds `via=page`). Without a
 * configured secret the routes answer 404.
 */
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { describeUnsubscribeToken, unsubscribeByToken } from '../../../services/unsubscribes.js';
import type { App, RouteContext } from '../context.js';

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function page(reply: FastifyReply, status: number, title: string, body: string): FastifyReply {
  return reply
    .code(status)
    .type('text/html; charset=utf-8')
    .headers({
      'cache-control': 'no-store',
      'referrer-policy': 'no-referrer',
      'x-robots-tag': 'noindex',
      'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    })
    .send(
      `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">` +
        `<title>${escapeHtml(title)}</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}` +
        `button{font:inherit;padding:.5rem 1.25rem;border:0;border-radius:.4rem;background:#b42318;color:#fff;cursor:pointer}</style></head>` +
        `<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`,
    );
}

const INVALID = 'This unsubscribe link is not valid';
const FORM_TYPES = ['application/x-www-form-urlencoded', 'multipart/form-data'];
const invalidBody = '<p>The link may have been altered or cut short. Copy the whole link from the message and try again.</p>';

/** Parses a small multipart/form-data body into its text fields (enough for RFC 8058's one field). */
export function multipartFields(body: string, contentType: string): Record<string, string> {
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType)?.[1];
  if (!boundary) return {};
  const out: Record<string, string> = {};
  for (const part of body.split(`--${boundary}`)) {
    const m = /name="([^"]+)"[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n([\s\S]*?)\r?\n?$/.exec(part);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

export function unsubscribeRoutes(app: App, ctx: RouteContext): void {
  const secret = ctx.options.unsubscribeSecret;
  const db = ctx.engine.apiDb;
  const params = z.strictObject({ token: z.string().max(200) });
  const small = { bodyLimit: 4096 };

  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', ...small }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)));
  });
  app.addContentTypeParser('multipart/form-data', { parseAs: 'string', ...small }, (req, body, done) => {
    done(null, multipartFields(body as string, String(req.headers['content-type'])));
  });

  const notConfigured = (reply: FastifyReply) =>
    page(reply, 404, 'Unsubscribe is not available', '<p>This server does not handle unsubscribe links.</p>');

  app.get(
    '/u/:token',
    { schema: { tags: ['unsubscribe'], summary: 'Confirmation page of a one-click unsubscribe link (changes nothing)', params } },
    async (request, reply) => {
      if (!secret) return notConfigured(reply);
      const target = await describeUnsubscribeToken(db, secret, request.params.token);
      if (!target) return page(reply, 400, INVALID, invalidBody);
      if (target.status !== 'active') {
        return page(reply, 200, 'You are unsubscribed', `<p>${escapeHtml(target.email)} receives no more messages from this sender.</p>`);
      }
      const from = target.campaignName ? ` (&ldquo;${escapeHtml(target.campaignName)}&rdquo;)` : '';
      return page(
        reply,
        200,
        'Unsubscribe?',
        `<p>Stop all messages to <strong>${escapeHtml(target.email)}</strong> from this sender${from}?</p>` +
          `<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><input type="hidden" name="via" value="page">` +
          `<button type="submit">Unsubscribe</button></form>`,
      );
    },
  );

  app.post(
    '/u/:token',
    {
      bodyLimit: 4096,
      // RFC 8058: the one-click body is a form; any other type (a JSON body naming the same field) is refused before validation.
      preValidation: async (request, reply) => {
        const type = String(request.headers['content-type'] ?? '')
          .split(';')[0]!
          .trim()
          .toLowerCase();
        if (!FORM_TYPES.includes(type)) {
          return page(reply, 415, 'Not a one-click unsubscribe', '<p>Send List-Unsubscribe=One-Click as a form (RFC 8058).</p>');
        }
      },
      schema: {
        tags: ['unsubscribe'],
        summary: 'RFC 8058 one-click unsubscribe',
        consumes: ['application/x-www-form-urlencoded', 'multipart/form-data'],
        description:
          'Body `List-Unsubscribe=One-Click` (form-urlencoded or multipart). The contact is unsubscribed and its queued mail in every live campaign ' +
          'cancelled at once, with the credit refunded, and the unsubscribe recorded with its campaign. Any other body type (JSON): 415. ' +
          'A forged or altered token, or one naming a campaign that does not exist: 400, nothing changes.',
        params,
        body: z.looseObject({ 'List-Unsubscribe': z.literal('One-Click', { error: 'must be One-Click (RFC 8058)' }) }),
      },
    },
    async (request, reply) => {
      if (!secret) return notConfigured(reply);
      const via = (request.body as Record<string, unknown>).via === 'page' ? 'page' : 'one_click';
      const done = await unsubscribeByToken(db, secret, request.params.token, via);
      if (!done) return page(reply, 400, INVALID, invalidBody);
      request.log.info({ contactId: done.contactId, cancelled: done.cancelled, refunded: done.refunded }, 'unsubscribed');
      return page(reply, 200, 'You are unsubscribed', `<p>${escapeHtml(done.email)} receives no more messages from this sender.</p>`);
    },
  );
}
