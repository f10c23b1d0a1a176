/**
 * Who is asking, and may they. Every /api route declares its audience in `config.auth`:
 *
 * - 'user' (the default): any valid token; the route then scopes to the token's user (admins may
 *   act for a user with `user_id`);
 * - 'admin': an admin token, else 403;
 * - 'bounce': an admin token, or the bounce webhook secret in X-Fairsend-Webhook-Secret;
 * - 'metrics': an admin token or a metrics token (/metrics).
 *
 * A metrics token (role `metrics`) is refused with 403 everywhere but a 'metrics' route: it may only scrape.
 *
 * Order of answers: 429 (address blocked) before 401 (no or bad credentials) before 403 (not an
 * admin) before 400 (validation), so an anonymous caller learns nothing about a route's input.
 *
 * Guessing: presented credentials that fail (a wrong token, a wrong webhook secret) are counted per
 * client address in a fixed one-minute window; past `limit` failures the address is refused with 429
 * (and a Retry-After) for the rest of the window, valid token or not, so an attacker cannot tell a
 * hit from a miss while blocked. Requests without any credential are not counted (they guess nothing).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { authenticate, type AuthenticatedUser } from '../../services/auth.js';
import type { Engine } from '../engine.js';
import { forbidden, HttpError, HttpErrorCodes, unauthorized } from './errors.js';

export type Audience = 'user' | 'admin' | 'bounce' | 'metrics';

export interface RequestAuth {
  /** The token's user; absent when the bounce webhook secret was used. */
  user?: AuthenticatedUser;
  /** The bounce webhook secret matched; `serviceId` when it was a service's own secret. */
  webhook?: { serviceId: number | null };
}

declare module 'fastify' {
  interface FastifyRequest {
    auth?: RequestAuth;
  }
  interface FastifyContextConfig {
    auth?: Audience;
  }
}

/** Counts failed credential attempts per address in fixed windows (bounded memory). */
export class FailureLimiter {
  private readonly entries = new Map<string, { count: number; resetAt: number }>();
  constructor(
    private readonly limit: number,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
    private readonly maxEntries = 10_000,
  ) {}

  /** Seconds until the address may try again, or 0 when it is not blocked. */
  blockedFor(key: string): number {
    const e = this.entries.get(key);
    if (!e) return 0;
    const now = this.now();
    if (now >= e.resetAt) {
      this.entries.delete(key);
      return 0;
    }
    return e.count >= this.limit ? Math.ceil((e.resetAt - now) / 1000) : 0;
  }

  fail(key: string): void {
    const now = this.now();
    const e = this.entries.get(key);
    if (e && now < e.resetAt) {
      e.count++;
      return;
    }
    if (this.entries.size >= this.maxEntries) this.prune(now);
    this.entries.set(key, { count: 1, resetAt: now + this.windowMs });
  }

  private prune(now: number): void {
    for (const [k, e] of this.entries) if (now >= e.resetAt) this.entries.delete(k);
    // Still full (a flood of distinct addresses): forget the oldest windows first.
    for (const k of this.entries.keys()) {
      if (this.entries.size < this.maxEntries) break;
      this.entries.delete(k);
    }
  }
}

/** Constant-time comparison of two secrets of any length (both are hashed to 32 bytes first). */
export function secretsEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/**
 * Bounce webhook secrets: one shared secret, or one per sending service (`{ "3": "..." }`), in
 * which case a provider's secret can only report events for its own service.
 */
export type WebhookSecrets = string | Record<string, string>;

function matchWebhookSecret(given: string, secrets: WebhookSecrets | undefined): { serviceId: number | null } | undefined {
  if (!secrets) return undefined;
  if (typeof secrets === 'string') return secretsEqual(given, secrets) ? { serviceId: null } : undefined;
  let found: { serviceId: number | null } | undefined;
  // Every entry is compared (no early exit), so timing does not reveal which service matched.
  for (const [serviceId, secret] of Object.entries(secrets)) {
    if (secretsEqual(given, secret) && !found) found = { serviceId: Number(serviceId) };
  }
  return found;
}

function bearerToken(request: FastifyRequest): string | undefined {
  const h = request.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : h;
}

export interface AuthOptions {
  limiter: FailureLimiter;
  webhookSecrets?: WebhookSecrets;
}

/** Adds the audience check to every route of `app` (an encapsulated /api context). */
export function addAuthHook(app: FastifyInstance, engine: Engine, opts: AuthOptions): void {
  app.addHook('onRequest', async (request) => {
    const audience: Audience = request.routeOptions.config.auth ?? 'user';
    const token = bearerToken(request);
    const secret = request.headers['x-fairsend-webhook-secret'];
    const presented = token !== undefined || (audience === 'bounce' && typeof secret === 'string');
    if (presented) {
      const wait = opts.limiter.blockedFor(request.ip);
      if (wait > 0) {
        throw new HttpError(429, HttpErrorCodes.RATE_LIMITED, `too many failed authentication attempts; retry in ${wait} s`, {
          'retry-after': String(wait),
        });
      }
    }
    if (token !== undefined) {
      const user = await authenticate(engine, token);
      if (!user) {
        opts.limiter.fail(request.ip);
        throw unauthorized('the API token is not valid');
      }
      request.auth = { user };
    } else if (audience === 'bounce' && typeof secret === 'string') {
      const webhook = matchWebhookSecret(secret, opts.webhookSecrets);
      if (!webhook) {
        opts.limiter.fail(request.ip);
        throw unauthorized('the webhook secret is not valid');
      }
      request.auth = { webhook };
      return;
    } else {
      throw unauthorized();
    }
    const role = request.auth.user?.role;
    if (audience === 'metrics') {
      if (role !== 'admin' && role !== 'metrics') throw forbidden('/metrics needs an admin or a metrics token');
    } else if (role === 'metrics') {
      throw forbidden('a metrics token may only read /metrics');
    } else if ((audience === 'admin' || audience === 'bounce') && role !== 'admin') {
      throw forbidden();
    }
  });
}

/** The authenticated user of a 'user' or 'admin' route. */
export function userOf(request: FastifyRequest): AuthenticatedUser {
  const user = request.auth?.user;
  if (!user) throw unauthorized();
  return user;
}

export const isAdmin = (request: FastifyRequest) => request.auth?.user?.role === 'admin';

/**
 * Whose items a request reads: a user only their own (asking for another's `user_id` is a 403),
 * an admin anyone's, or everyone's when `userId` is absent and `allForAdmin` is set.
 */
export function scopeUserId(request: FastifyRequest, userId: number | undefined, allForAdmin: true): number | undefined;
export function scopeUserId(request: FastifyRequest, userId: number | undefined, allForAdmin?: false): number;
export function scopeUserId(request: FastifyRequest, userId: number | undefined, allForAdmin = false): number | undefined {
  const me = userOf(request);
  if (me.role === 'admin') return userId ?? (allForAdmin ? undefined : me.id);
  if (userId !== undefined && userId !== me.id) throw forbidden('user_id may name only yourself');
  return me.id;
}
