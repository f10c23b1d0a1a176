/**
 * Provider webhooks, each tied to a sending service: its credentials are stored with the service
 * (webhook_credentials), a request is verified with them (providers.ts) before anything is read,
 * and its events are applied as reports for that service. A request that does not verify gets 401
 * and changes nothing.
 *
 * The secret parts of the credentials (a signing key, a basic-auth password) are stored sealed with
 * the secrets keyring (services/service-secrets.ts: WEBHOOK_SECRET_FIELDS), like a service's SMTP
 * password, and opened only to verify a request.
 */
import type { ServiceContext } from '../context.js';
import type { BounceResult, BouncesApi } from '../bounces.js';
import { NotFoundError, ValidationError } from '../kernel/errors.js';
import { queryRows } from '../kernel/db-query.js';
import { openWebhookSecrets, sealWebhookSecrets } from '../service-secrets.js';
import {
  mailgun,
  postmark,
  PROVIDERS,
  ses,
  sendgrid,
  sparkpost,
  type CertFetcher,
  type Provider,
  type WebhookCredentials,
  type WebhookParsed,
  type WebhookRequest,
} from './providers.js';

export interface WebhookDeps {
  bounces: BouncesApi;
  /** Fetches an SNS signing certificate (PEM). Default: an https GET of the (checked) URL. */
  fetchCert?: CertFetcher;
  /** Confirms an SNS subscription (GET of its SubscribeURL). Default: fetch. */
  confirmSubscription?: (url: string) => Promise<void>;
}

export type WebhookOutcome = { status: 401; reason: string } | { status: 200; confirmed?: string; result?: BounceResult };

const defaultFetchCert: CertFetcher = async (url) => {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`certificate fetch answered ${res.status}`);
  return res.text();
};

export function createWebhooksApi(ctx: ServiceContext, deps: WebhookDeps) {
  const db = ctx.apiDb;
  const certCache = new Map<string, Promise<string>>();
  const fetchCert: CertFetcher = (url) => {
    let p = certCache.get(url);
    if (!p) {
      p = (deps.fetchCert ?? defaultFetchCert)(url);
      p.catch(() => certCache.delete(url));
      certCache.set(url, p);
    }
    return p;
  };
  return {
    /** Ties a provider's webhook to a service, with the credentials that verify it (replaces any before). */
    async configure(serviceId: number, provider: Provider, credentials: WebhookCredentials): Promise<void> {
      if (!PROVIDERS.includes(provider))
        throw new ValidationError([{ path: 'provider', message: `must be one of ${PROVIDERS.join(', ')}` }]);
      const need: Record<Provider, (keyof WebhookCredentials)[]> = {
        mailgun: ['signingKey'],
        sendgrid: ['publicKey'],
        postmark: ['username', 'password'],
        sparkpost: ['username', 'password'],
        ses: [],
      };
      const missing = need[provider].filter((k) => !credentials[k]);
      if (missing.length)
        throw new ValidationError(missing.map((k) => ({ path: `credentials.${k}`, message: `is required for ${provider}` })));
      const rows = await queryRows(
        db,
        `INSERT INTO webhook_credentials (service_id, provider, credentials)
         SELECT id, $provider, $credentials::jsonb FROM email_services WHERE id = $serviceId
         ON CONFLICT (service_id, provider) DO UPDATE SET credentials = EXCLUDED.credentials, updated_at = now()
         RETURNING service_id`,
        { serviceId, provider, credentials: JSON.stringify(sealWebhookSecrets(ctx.secrets, credentials)) },
      );
      if (!rows.length) throw new NotFoundError('service', serviceId);
    },

    /** Verifies and applies one webhook request for `serviceId`. */
    async receive(provider: string, serviceId: number, req: WebhookRequest): Promise<WebhookOutcome> {
      if (!(PROVIDERS as readonly string[]).includes(provider)) return { status: 401, reason: 'unknown provider' };
      const [row] = await queryRows<{ credentials: WebhookCredentials }>(
        db,
        'SELECT credentials FROM webhook_credentials WHERE service_id = $serviceId AND provider = $provider',
        { serviceId, provider },
      );
      if (!row) return { status: 401, reason: 'no webhook of this provider is set up for this service' };
      const p = provider as Provider;
      const credentials = openWebhookSecrets(ctx.secrets, row.credentials);
      let ok: boolean;
      try {
        ok =
          p === 'ses'
            ? await ses.verify(req, credentials, fetchCert)
            : { mailgun, sendgrid, postmark, sparkpost }[p].verify(req, credentials);
      } catch {
        ok = false;
      }
      if (!ok) {
        ctx.logger.warn({ provider, serviceId }, 'webhook with a bad signature refused');
        return { status: 401, reason: 'bad signature' };
      }
      let parsed: WebhookParsed;
      try {
        parsed = { mailgun, sendgrid, postmark, sparkpost, ses }[p].parse(req.rawBody);
      } catch (err) {
        throw new ValidationError([{ path: 'body', message: `is not a ${provider} webhook payload: ${(err as Error).message}` }]);
      }
      if (parsed.confirmUrl) {
        await (deps.confirmSubscription ?? (async (u: string) => void (await fetch(u))))(parsed.confirmUrl);
        ctx.logger.info({ provider, serviceId }, 'SNS subscription confirmed');
        return { status: 200, confirmed: parsed.confirmUrl };
      }
      if (!parsed.events.length) return { status: 200 };
      const events = parsed.events.map((e) => ({ ...e, serviceId }));
      const result = await deps.bounces.record(events.slice(0, 1000), `webhook:${provider}`);
      return { status: 200, result };
    },
  };
}
export type WebhooksApi = ReturnType<typeof createWebhooksApi>;
