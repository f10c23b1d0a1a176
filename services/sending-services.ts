/**
 * Sending services (SMTP accounts, provider relays): each has its own rate (`sendingRate`,
 * seconds between sends), its own daily quota that resets at local midnight in `quotaTimezone`,
 * and a list of users allowed to use it (or open to all). Credentials never leave this module:
 * views carry the SMTP user name and AUTH method but never the password, the access token or the
 * private CA (only whether one is set). Views say how the session is protected: the TLS mode and
 * whether certificates are checked. Secrets (the password, the access token, the DKIM key, TLS
 * material) are stored encrypted with FAIRSEND_SECRET_KEY (see service-secrets.ts); without a key
 * a service that carries one is refused.
 */
import type { Transaction } from 'sequelize';
import { UniqueConstraintError } from 'sequelize';
import { NotFoundError, ValidationError } from './kernel/errors.js';
import type { EmailService, SmtpAuthMethod, TransportConfig } from '../models/index.js';
import { checksCertificates, effectiveRequireTls, tlsModeOf, type TlsMode } from './delivery/tls-policy.js';
import type { ServiceContext } from './context.js';
import type { ServiceShapingInput } from './deliverability/shaping.js';
import { nextQuotaReset, quotaDayExpired, quotaDayOf } from './quota-day.js';
import { sealServiceSecrets } from './service-secrets.js';
import {
  createServiceSchema,
  parseId,
  parseInput,
  updateServiceSchema,
  type CreateServiceInput,
  type UpdateServiceInput,
} from './validation.js';

export interface ServiceView {
  id: number;
  name: string;
  transport: TransportView;
  sendingRate: number;
  dailyQuota: number;
  quotaTimezone: string;
  maxConnections: number;
  /** null: open to every user. */
  userIds: number[] | null;
  enabled: boolean;
  dkim: { domainName: string; keySelector: string } | null;
  /** The service's deliverability settings as stored (docs/deliverability.md); null: the defaults. */
  deliverability: ServiceShapingInput | null;
  healthy: boolean;
  lastSentAt: Date | null;
  lastError: string | null;
}

export interface TransportView {
  host: string;
  port: number;
  secure: boolean;
  /** requireTLS as applied (the port-587 default filled in). */
  requireTLS: boolean;
  /** implicit TLS (`secure`), STARTTLS required, or opportunistic (STARTTLS when offered). */
  tlsMode: TlsMode;
  /** False when certificate checking is off (`tlsInsecure` or `tls.rejectUnauthorized: false`). */
  certificateChecking: boolean;
  /** The service trusts its own CA (`tls.ca`, never shown). */
  privateCa: boolean;
  servername?: string;
  minVersion?: string;
  /** The EHLO name, when set. */
  name?: string;
  timeoutMs?: number;
  auth?: { user: string; method?: SmtpAuthMethod };
}

export function toTransportView(t: TransportConfig): TransportView {
  return {
    host: t.host,
    port: t.port,
    secure: t.secure ?? false,
    requireTLS: effectiveRequireTls(t),
    tlsMode: tlsModeOf(t),
    certificateChecking: checksCertificates(t),
    privateCa: Boolean(t.tls?.ca),
    ...(t.tls?.servername ? { servername: t.tls.servername } : {}),
    ...(t.tls?.minVersion ? { minVersion: t.tls.minVersion } : {}),
    ...(t.name ? { name: t.name } : {}),
    ...(t.timeoutMs ? { timeoutMs: t.timeoutMs } : {}),
    ...(t.auth ? { auth: authView(t.auth) } : {}),
  };
}

function authView(a: NonNullable<TransportConfig['auth']>): NonNullable<TransportView['auth']> {
  const method = a.method ?? (a.accessToken !== undefined ? 'XOAUTH2' : undefined);
  return { user: a.user, ...(method ? { method } : {}) };
}

export interface ServiceQuota {
  id: number;
  name: string;
  dailyQuota: number;
  usedQuota: number;
  remainingQuota: number;
  /** The next local midnight in the service's quota time zone. */
  resetsAt: Date;
  healthy: boolean;
  enabled: boolean;
}

export function toServiceView(s: EmailService, userIds: number[] | null): ServiceView {
  return {
    id: s.id,
    name: s.name,
    transport: toTransportView(s.transport),
    sendingRate: s.sendingRate,
    dailyQuota: s.dailyQuota,
    quotaTimezone: s.quotaTimezone,
    maxConnections: s.maxConnections,
    userIds,
    enabled: s.enabled,
    dkim: s.dkim ? { domainName: s.dkim.domainName, keySelector: s.dkim.keySelector } : null,
    deliverability: (s.deliverability as ServiceShapingInput | null) ?? null,
    healthy: s.isHealthy,
    lastSentAt: s.lastSentAt,
    lastError: s.lastError,
  };
}

export function createSendingServicesApi(ctx: ServiceContext) {
  const { EmailService, UserService, User } = ctx.models;

  async function checkUsers(userIds: number[] | undefined | null, transaction: Transaction): Promise<void> {
    if (!userIds?.length) return;
    const found = await User.findAll({ where: { id: userIds }, attributes: ['id'], transaction });
    const known = new Set(found.map((u) => u.id));
    const missing = userIds.filter((id) => !known.has(id));
    if (missing.length) throw new ValidationError([{ path: 'userIds', message: `unknown user ids: ${missing.join(', ')}` }]);
  }

  async function userIdsOf(service: EmailService, transaction?: Transaction): Promise<number[] | null> {
    if (service.openToAll) return null;
    const rows = await UserService.findAll({ where: { serviceId: service.id }, order: [['userId', 'ASC']], transaction });
    return rows.map((r) => r.userId);
  }

  async function find(id: number, transaction?: Transaction): Promise<EmailService> {
    const s = await EmailService.findByPk(parseId(id, 'serviceId'), { transaction });
    if (!s) throw new NotFoundError('sending service', id);
    return s;
  }

  const uniqueName = (name: string | undefined) => (err: unknown) => {
    if (err instanceof UniqueConstraintError) throw new ValidationError([{ path: 'name', message: `a service named ${name} exists` }]);
    throw err;
  };

  return {
    async create(input: CreateServiceInput): Promise<ServiceView> {
      const v = parseInput(createServiceSchema, input);
      const zone = v.quotaTimezone ?? ctx.config.defaultTimezone;
      const sealed = sealServiceSecrets(ctx.secrets, { transport: v.transport, dkim: v.dkim ?? null });
      return ctx.apiDb
        .transaction(async (transaction) => {
          await checkUsers(v.userIds, transaction);
          const s = await EmailService.create(
            {
              name: v.name,
              transport: sealed.transport,
              sendingRate: v.sendingRate,
              dailyQuota: v.dailyQuota,
              quotaTimezone: zone,
              quotaDay: quotaDayOf(ctx.clock(), zone),
              maxConnections: v.maxConnections ?? 5,
              openToAll: v.userIds === undefined,
              enabled: v.enabled ?? true,
              dkim: sealed.dkim,
              deliverability: v.deliverability ?? null,
            },
            { transaction },
          );
          if (v.userIds?.length) {
            await UserService.bulkCreate(
              v.userIds.map((userId) => ({ userId, serviceId: s.id })),
              { transaction },
            );
          }
          return toServiceView(s, v.userIds ?? null);
        })
        .catch(uniqueName(v.name));
    },

    /** Changes a service; a running scheduler picks the change up within one tick. `userIds: null` opens it to all. */
    async update(id: number, patch: UpdateServiceInput): Promise<ServiceView> {
      const v = parseInput(updateServiceSchema, patch);
      const sealed = sealServiceSecrets(ctx.secrets, {
        ...(v.transport ? { transport: v.transport } : {}),
        ...(v.dkim !== undefined ? { dkim: v.dkim } : {}),
      });
      return ctx.apiDb
        .transaction(async (transaction) => {
          const s = await find(id, transaction);
          const { userIds, ...fields } = { ...v, ...sealed };
          if (userIds !== undefined) {
            await checkUsers(userIds, transaction);
            await UserService.destroy({ where: { serviceId: s.id }, transaction });
            if (userIds?.length) {
              await UserService.bulkCreate(
                userIds.map((userId) => ({ userId, serviceId: s.id })),
                { transaction },
              );
            }
            s.openToAll = userIds === null;
          }
          s.set(fields);
          await s.save({ transaction });
          return toServiceView(s, await userIdsOf(s, transaction));
        })
        .catch(uniqueName(v.name));
    },

    async get(id: number): Promise<ServiceView> {
      const s = await find(id);
      return toServiceView(s, await userIdsOf(s));
    },

    async list(): Promise<ServiceView[]> {
      const services = await EmailService.findAll({ order: [['id', 'ASC']] });
      const links = await UserService.findAll({ order: [['userId', 'ASC']] });
      return services.map((s) => toServiceView(s, s.openToAll ? null : links.filter((l) => l.serviceId === s.id).map((l) => l.userId)));
    },

    /** Deletes a service; a running scheduler stops it within one tick. */
    async remove(id: number): Promise<void> {
      const s = await find(id);
      await s.destroy();
    },

    /** Remaining quota per service, as of the engine's clock (a stale day counts as unused). */
    async quota(): Promise<ServiceQuota[]> {
      const now = ctx.clock();
      const services = await EmailService.findAll({ order: [['id', 'ASC']] });
      return services.map((s) => {
        const used = quotaDayExpired(s.quotaDay, now, s.quotaTimezone) ? 0 : s.usedQuota;
        return {
          id: s.id,
          name: s.name,
          dailyQuota: s.dailyQuota,
          usedQuota: used,
          remainingQuota: Math.max(0, s.dailyQuota - used),
          resetsAt: nextQuotaReset(now, s.quotaTimezone).toJSDate(),
          healthy: s.isHealthy,
          enabled: s.enabled,
        };
      });
    },
  };
}
export type SendingServicesApi = ReturnType<typeof createSendingServicesApi>;
