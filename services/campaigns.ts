/**
 * Campaigns (the `tasks` table). Creation validates everything and writes everything in one
 * transaction, or nothing: templates and explicit contacts must be the user's own, the recipient
 * set must not be empty, every attribute a template prints without a `default` must be supplied by
 * every recipient (MissingAttributesError counts who lacks it, with an example), and the user's
 * sending credit must cover every recipient. The credit is reserved with one conditional UPDATE
 * (`remaining_quota >= n`), so two concurrent creations that together exceed it cannot both pass.
 *
 * States: scheduled -> sending -> completed, or paused / cancelled from either; a paused campaign
 * resumes to where it was. Cancelling refunds the credit of everything not yet sent.
 */
import { DateTime } from 'luxon';
import type { Transaction } from 'sequelize';
import { ConflictError, ErrorCodes, NotFoundError, QuotaExceededError, ValidationError, type FieldIssue } from './kernel/errors.js';
import type { StoredRecipientRule, StoredSendWindow, Task, TaskStatus } from '../models/index.js';
import type { ServiceContext } from './context.js';
import { recipientPredicate, type RecipientSpec } from './recipients.js';
import { compileTemplate, requiredAttributes } from './template-render.js';
import { createCampaignSchema, parseId, parseInput, type CreateCampaignInput } from './validation.js';
import { queryRows } from './kernel/db-query.js';
import { createRecipientsApi } from './campaign-recipients.js';
import { applyCounters } from './scheduler/sql/counters.js';
import { createForecaster, type CampaignForecast, type LiveDeliverability } from './campaign-forecast.js';

export type { CampaignForecast, LiveDeliverability } from './campaign-forecast.js';

/** An attribute a template prints without a `default`, and the recipients who lack it. */
export interface MissingAttribute {
  attribute: string;
  /** Recipients without it (absent, null or empty). */
  count: number;
  /** All recipients of the campaign. */
  total: number;
  /** One of those recipients' address. */
  example: string;
}

/** A campaign refused because some recipients lack an attribute its templates print (TEMPLATE_VARIABLE). */
export class MissingAttributesError extends ValidationError {
  readonly missing: MissingAttribute[];
  constructor(missing: MissingAttribute[]) {
    super(
      missing.map((m) => ({
        path: 'templates',
        message:
          `{{ ${m.attribute} }} is printed without a default, and ${m.count} of ${m.total} recipients have no "${m.attribute}" ` +
          `attribute (e.g. ${m.example}): give one with {{ ${m.attribute} | default: "..." }}, or test it with {% if ${m.attribute} %}`,
      })),
      ErrorCodes.TEMPLATE_VARIABLE,
    );
    this.name = 'MissingAttributesError';
    this.missing = missing;
  }
}

export interface CampaignView {
  id: number;
  userId: number;
  name: string;
  status: TaskStatus;
  scheduledAt: Date;
  timezone: string;
  from: { address: string; name: string | null };
  templates: number[];
  contacts: number[];
  recipientRule: StoredRecipientRule | null;
  sendWindow: StoredSendWindow | null;
  priority: number;
  /** Recipients counted (and credit reserved) at creation. */
  recipients: number;
  generatedAt: Date | null;
  createdAt: Date;
}

export interface CampaignProgress {
  id: number;
  status: TaskStatus;
  total: number;
  queued: number;
  sending: number;
  sent: number;
  failed: number;
  cancelled: number;
  unknown: number;
  /** Why a campaign with queued work is not sending (no service left, quota exhausted, ...). */
  waitReason: string | null;
  /** Why the campaign paused itself (a safety breaker, a user pause); null when paused by hand or not paused. */
  pauseReason: string | null;
  /**
   * When the rest is expected to be sent, from the rates, fair share, quotas, caps, windows and
   * warm-up in force (services/forecast.ts; an estimate, its assumptions in docs/deliverability.md).
   * Null for a completed or cancelled campaign, or when not asked for.
   */
  forecast: CampaignForecast | null;
}

export function toCampaignView(t: Task): CampaignView {
  return {
    id: t.id,
    userId: t.createdBy,
    name: t.name,
    status: t.status,
    scheduledAt: t.scheduledAt,
    timezone: t.timezone,
    from: { address: t.fromAddress, name: t.fromName },
    templates: t.templates,
    contacts: t.contacts,
    recipientRule: t.recipientRule,
    sendWindow: t.sendWindow,
    priority: t.priority,
    recipients: t.reservedQuota,
    generatedAt: t.generatedAt,
    createdAt: t.createdAt,
  };
}

function parseScheduledAt(value: Date | string | undefined, zone: string, now: DateTime): Date {
  if (value === undefined) return now.toJSDate();
  const dt = value instanceof Date ? DateTime.fromJSDate(value) : DateTime.fromISO(value, { zone, setZone: true });
  if (!dt.isValid) {
    throw new ValidationError([
      { path: 'scheduledAt', message: `is not a valid ISO 8601 date-time (${dt.invalidExplanation ?? dt.invalidReason})` },
    ]);
  }
  return dt.toJSDate();
}

type Query = (sql: string, bind: Record<string, unknown>, transaction: Transaction) => Promise<Record<string, unknown>[]>;

export interface CampaignsApiOptions {
  /** The live throttles of the services this process runs, for the forecast (the engine passes its scheduler's). */
  live?: LiveDeliverability;
}

export function createCampaignsApi(ctx: ServiceContext, opts: CampaignsApiOptions = {}) {
  const { Task } = ctx.models;
  const forecaster = createForecaster(ctx, opts.live);
  const q: Query = (sql, bind, transaction) => queryRows(ctx.apiDb, sql, bind, transaction);

  async function checkOwnership(spec: RecipientSpec, templates: number[], transaction: Transaction): Promise<FieldIssue[]> {
    const issues: FieldIssue[] = [];
    const owned = await q(
      'SELECT id FROM templates WHERE user_id = $u AND id = ANY($ids::int[])',
      { u: spec.userId, ids: templates },
      transaction,
    );
    const ownedIds = new Set(owned.map((r) => Number(r.id)));
    templates.forEach((id, i) => {
      if (!ownedIds.has(id)) issues.push({ path: `templates[${i}]`, message: `template ${id} not found for user ${spec.userId}` });
    });
    if (spec.contacts.length) {
      const missing = await q(
        `SELECT want.id FROM unnest($ids::bigint[]) AS want(id)
          WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = want.id AND c.user_id = $u) ORDER BY want.id LIMIT 20`,
        { u: spec.userId, ids: spec.contacts },
        transaction,
      );
      if (missing.length) {
        issues.push({ path: 'contacts', message: `contacts not found for user ${spec.userId}: ${missing.map((r) => r.id).join(', ')}` });
      }
    }
    return issues;
  }

  /**
   * Recipient count, and for each required attribute how many recipients lack it (absent, null
   * or empty), with the first such address as an example.
   */
  async function countRecipients(spec: RecipientSpec, needed: string[], transaction: Transaction) {
    const p = recipientPredicate(spec);
    const [row] = await q(
      `SELECT count(*)::int AS n,
              COALESCE((SELECT jsonb_object_agg(v, jsonb_build_object('count', missing, 'example', example)) FROM (
                 SELECT v, count(*) FILTER (WHERE COALESCE(c2.attributes->>v, '') = '')::int AS missing,
                        min(c2.email) FILTER (WHERE COALESCE(c2.attributes->>v, '') = '') AS example
                 FROM contacts c2, unnest($needed::text[]) AS v
                 WHERE c2.id IN (SELECT c.id FROM contacts c WHERE ${p.sql})
                 GROUP BY v) m WHERE missing > 0), '{}') AS missing
         FROM contacts c WHERE ${p.sql}`,
      { ...p.bind, needed },
      transaction,
    );
    return { count: Number(row!.n), missing: row!.missing as Record<string, { count: number; example: string }> };
  }

  async function load(id: number, transaction?: Transaction): Promise<Task> {
    const t = await Task.findByPk(parseId(id, 'campaignId'), { transaction });
    if (!t) throw new NotFoundError('campaign', id);
    return t;
  }

  /** Moves a campaign from one of `from` to `to`, or explains why it cannot. */
  async function transition(id: number, from: TaskStatus[], to: (t: { generated: boolean }) => TaskStatus, verb: string) {
    const [rows] = (await ctx.apiDb.query(
      // Leaving 'paused' clears why it paused: a safety breaker re-arms on resume (services/breakers.ts).
      `UPDATE tasks SET status = CASE WHEN generated_at IS NULL THEN $ifNotGenerated ELSE $ifGenerated END, updated_at = now(),
              pause_reason = CASE WHEN $ifGenerated = 'paused' THEN pause_reason END
        WHERE id = $id AND status = ANY($from::text[]) RETURNING id`,
      { bind: { id: parseId(id, 'campaignId'), from, ifNotGenerated: to({ generated: false }), ifGenerated: to({ generated: true }) } },
    )) as [unknown[], unknown];
    if (!rows.length) {
      const t = await load(id);
      throw new ConflictError(`cannot ${verb} campaign ${id}: it is ${t.status}`);
    }
  }

  return {
    /** recipients(id, { status, cursor, limit }) and retry(id, { statuses }): services/campaign-recipients.ts. */
    ...createRecipientsApi(ctx),

    async create(input: CreateCampaignInput): Promise<CampaignView> {
      const v = parseInput(createCampaignSchema, input);
      const now = ctx.clock();
      const rule: StoredRecipientRule | null = !v.recipientRule
        ? null
        : v.recipientRule.type === 'all'
          ? { type: 'all' }
          : {
              type: 'tag_based',
              ...(v.recipientRule.includeTags?.length ? { include_tags: [...new Set(v.recipientRule.includeTags)] } : {}),
              ...(v.recipientRule.excludeTags?.length ? { exclude_tags: [...new Set(v.recipientRule.excludeTags)] } : {}),
            };
      const contacts = [...new Set(v.contacts ?? [])];
      const spec: RecipientSpec = { userId: v.userId, contacts, rule };
      const from = typeof v.from === 'string' ? { address: v.from, name: null } : { address: v.from.address, name: v.from.name ?? null };

      return ctx.apiDb.transaction(async (transaction) => {
        const [user] = await q('SELECT id, timezone FROM users WHERE id = $id', { id: v.userId }, transaction);
        if (!user) throw new ValidationError([{ path: 'userId', message: `user ${v.userId} not found` }]);
        const zone = v.timezone ?? String(user.timezone);
        const scheduledAt = parseScheduledAt(v.scheduledAt, zone, now);

        const ownership = await checkOwnership(spec, v.templates, transaction);
        if (ownership.length) throw new ValidationError(ownership);

        const templates = await ctx.models.Template.findAll({ where: { id: v.templates }, transaction });
        const needed = requiredAttributes(templates.map((t) => compileTemplate(t)));
        const { count, missing } = await countRecipients(spec, needed, transaction);
        if (count === 0) {
          throw new ValidationError(
            [{ path: v.contacts?.length ? 'contacts' : 'recipientRule', message: 'matches no active contact: the recipient set is empty' }],
            ErrorCodes.EMPTY_RECIPIENTS,
          );
        }
        const lacking = Object.entries(missing).map(([attribute, m]) => ({ attribute, count: m.count, total: count, example: m.example }));
        if (lacking.length) throw new MissingAttributesError(lacking);

        const reserved = await q(
          `UPDATE users SET remaining_quota = remaining_quota - $n, updated_at = now()
            WHERE id = $id AND remaining_quota >= $n RETURNING remaining_quota`,
          { id: v.userId, n: count },
          transaction,
        );
        if (!reserved.length) {
          const [u] = await q('SELECT remaining_quota FROM users WHERE id = $id', { id: v.userId }, transaction);
          throw new QuotaExceededError(count, Number(u!.remaining_quota));
        }

        const t = await Task.create(
          {
            name: v.name,
            createdBy: v.userId,
            status: 'scheduled',
            scheduledAt,
            timezone: zone,
            fromAddress: from.address,
            fromName: from.name,
            contacts,
            templates: v.templates,
            recipientRule: rule,
            sendWindow: v.sendWindow
              ? {
                  start: v.sendWindow.start,
                  end: v.sendWindow.end,
                  ...(v.sendWindow.days ? { days: [...new Set(v.sendWindow.days)].sort() } : {}),
                  timezone: v.sendWindow.timezone ?? 'recipient',
                }
              : null,
            priority: v.priority ?? 0,
            reservedQuota: count,
          },
          { transaction },
        );
        return toCampaignView(t);
      });
    },

    async get(id: number): Promise<CampaignView> {
      return toCampaignView(await load(id));
    },

    async list(filter: { userId?: number } = {}): Promise<CampaignView[]> {
      const rows = await Task.findAll({ where: filter.userId ? { createdBy: filter.userId } : {}, order: [['id', 'ASC']] });
      return rows.map(toCampaignView);
    },

    /**
     * Completion forecasts of the given campaigns that are scheduled, sending or paused, in one go
     * (the campaign list and the dashboard ask for a page at a time). `maxAgeMs`: a forecast made
     * that recently (real time) may be answered again, for pollers; progress() always makes a new one.
     */
    forecasts: (ids: number[], opts: { maxAgeMs?: number } = {}): Promise<Map<number, CampaignForecast>> =>
      forecaster.forecast(
        ids.map((id) => parseId(id, 'campaignId')),
        opts,
      ),

    /** Counts by state and the completion forecast (`{ forecast: false }`: not made, null, for pollers that do not show it). */
    async progress(id: number, opts: { forecast?: boolean } = {}): Promise<CampaignProgress> {
      const [rows] = (await ctx.apiDb.query(
        `SELECT t.id, t.status, t.generated_at, t.reserved_quota, t.wait_reason, t.pause_reason, t.total_count,
                t.sent_count, t.failed_count, t.cancelled_count, t.unknown_count,
                (p.task_id IS NOT NULL) AS purged,
                count(s.task_id)::int AS total,
                count(s.task_id) FILTER (WHERE s.status = 'queued')::int AS queued,
                count(s.task_id) FILTER (WHERE s.status = 'sending')::int AS sending,
                count(s.task_id) FILTER (WHERE s.status = 'sent')::int AS sent,
                count(s.task_id) FILTER (WHERE s.status = 'failed')::int AS failed,
                count(s.task_id) FILTER (WHERE s.status = 'cancelled')::int AS cancelled,
                count(s.task_id) FILTER (WHERE s.status = 'unknown')::int AS unknown
           FROM tasks t
           LEFT JOIN purged_campaigns p ON p.task_id = t.id
           LEFT JOIN subtasks s ON s.task_id = t.id AND p.task_id IS NULL
          WHERE t.id = $id GROUP BY t.id, p.task_id`,
        { bind: { id: parseId(id, 'campaignId') } },
      )) as [Record<string, unknown>[], unknown];
      const r = rows[0];
      if (!r) throw new NotFoundError('campaign', id);
      const status = r.status as TaskStatus;
      const final = status === 'completed' || status === 'cancelled' || Boolean(r.purged);
      const base = {
        id: Number(r.id),
        status,
        waitReason: (r.wait_reason as string | null) ?? null,
        pauseReason: (r.pause_reason as string | null) ?? null,
        forecast: final || opts.forecast === false ? null : ((await forecaster.forecast([Number(r.id)])).get(Number(r.id)) ?? null),
      };
      if (r.purged) {
        // Finished long ago and cleaned up by retention: the totals were saved on the campaign first.
        return {
          ...base,
          total: Number(r.total_count),
          queued: 0,
          sending: 0,
          sent: Number(r.sent_count),
          failed: Number(r.failed_count),
          cancelled: Number(r.cancelled_count),
          unknown: Number(r.unknown_count),
        };
      }
      const generated = r.generated_at !== null;
      // Before generation the queue is the recipient count reserved at creation.
      const pending = generated ? 0 : r.status === 'cancelled' ? 0 : Number(r.reserved_quota);
      const cancelledBefore = !generated && r.status === 'cancelled' ? Number(r.reserved_quota) : 0;
      return {
        ...base,
        total: generated ? Number(r.total) : Number(r.reserved_quota),
        queued: Number(r.queued) + pending,
        sending: Number(r.sending),
        sent: Number(r.sent),
        failed: Number(r.failed),
        cancelled: Number(r.cancelled) + cancelledBefore,
        unknown: Number(r.unknown),
      };
    },

    /** Stops sending (within one scheduler tick); queued mail stays queued. */
    pause: (id: number) => transition(id, ['scheduled', 'sending'], () => 'paused', 'pause'),

    /** Sends again from where it stopped. A cancelled or completed campaign cannot resume (ConflictError). */
    resume: (id: number) => transition(id, ['paused'], ({ generated }) => (generated ? 'sending' : 'scheduled'), 'resume'),

    /** Cancels every queued message and refunds the user's credit for everything not sent. */
    async cancel(id: number): Promise<{ refunded: number }> {
      parseId(id, 'campaignId');
      return ctx.apiDb.transaction(async (transaction) => {
        const [t] = await q(
          `UPDATE tasks SET status = 'cancelled', updated_at = now()
            WHERE id = $id AND status IN ('scheduled', 'sending', 'paused')
            RETURNING generated_at, reserved_quota, created_by`,
          { id },
          transaction,
        );
        if (!t) {
          const existing = await load(id, transaction);
          throw new ConflictError(`cannot cancel campaign ${id}: it is ${existing.status}`);
        }
        let refunded: number;
        if (t.generated_at === null) {
          refunded = Number(t.reserved_quota);
        } else {
          const [c] = await q(
            `WITH c AS (UPDATE subtasks SET status = 'cancelled'
                         WHERE task_id = $id AND status = 'queued' RETURNING 1)
             SELECT count(*)::int AS n FROM c`,
            { id },
            transaction,
          );
          refunded = Number(c!.n);
        }
        // The shared counters fragment (no completion here: the campaign is cancelled already).
        await q(
          applyCounters(`(SELECT $id::bigint AS task_id, 0 AS sent, 0 AS failed, $n::int AS cancelled, 0 AS unknown)`),
          { id, n: refunded },
          transaction,
        );
        await q(
          'UPDATE users SET remaining_quota = remaining_quota + $n, updated_at = now() WHERE id = $u',
          { u: t.created_by, n: refunded },
          transaction,
        );
        return { refunded };
      });
    },
  };
}
export type CampaignsApi = ReturnType<typeof createCampaignsApi>;
