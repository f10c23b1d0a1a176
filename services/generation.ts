/**
 * Pre-generation of a campaign's queue: when a campaign is due, its whole list of subtasks (one per
 * recipient, ordered by contact id) is written by ONE statement, in one transaction per campaign:
 * an `INSERT ... SELECT` inside PostgreSQL, or for a large campaign (GENERATION_COPY_MIN recipients
 * and more) the same SELECT streamed by `COPY ... TO STDOUT` on a second connection into
 * `COPY subtasks FROM STDIN` on the transaction's own (queue-copy.ts): batched heap inserts, and
 * the read on the other core. Rows are never parsed in the engine; bench/generation.ts and W2 measure it.
 *
 * Exactly once, also with several engine processes: the due campaign is claimed with
 * `FOR UPDATE SKIP LOCKED` (a second generator skips it, and after commit it is no longer due).
 * The primary key (task_id, contact_id) is the backstop: a repeat would fail loudly, not duplicate.
 *
 * Mailbox providers: each subtask's `provider` comes from a hash join of the contact's stored domain
 * (contacts.domain, computed by PostgreSQL on write) to the small mail_domains table, filled just
 * before for the campaign's domains that have no fresh answer (services/deliverability/domains.ts:
 * found by a walk of the user's distinct domains on an index, not a scan of the recipients). No
 * function runs per recipient beyond the tag filter: on PostgreSQL 15 under load, 1,000,000
 * recipients cost the backend 2.2 s of CPU against 3.4 s when the domain was computed per row and
 * the recipients scanned once more before the INSERT (2.0 s without any provider).
 *
 * Credit: recipients were counted and reserved at creation. Contacts may have changed since: the
 * queue is capped at what the user's credit covers (reservation + remaining credit, the user row
 * locked for the statement), the difference is charged or refunded, and a cap that cut recipients
 * off is recorded in the campaign's wait_reason and logged: nothing is dropped silently.
 */
import { DateTime } from 'luxon';
import type { Transaction } from 'sequelize';
import type { StoredRecipientRule, StoredSendWindow } from '../models/index.js';
import type { ServiceContext } from './context.js';
import { recipientPredicate } from './recipients.js';
import { suppressionMode } from './suppressions.js';
import { nextSendTime } from './send-window.js';
import { queryRows } from './kernel/db-query.js';
import { createProviderResolver, type ProviderResolver } from './deliverability/providers.js';
import { DOMAIN_SQL, fillDomainProviders, providerSql } from './deliverability/domains.js';
import { copyRows } from './queue-copy.js';

const SUBTASK_COLUMNS = ['task_id', 'user_id', 'contact_id', 'email', 'template_id', 'not_before', 'timezone', 'provider'] as const;

export interface GenerationResult {
  taskId: number;
  generated: number;
  /** Recipients that matched but were beyond the user's credit. */
  cutOff: number;
  ms: number;
  /** How the queue was written: one INSERT ... SELECT, or COPY over a second connection (queue-copy.ts). */
  via: 'insert' | 'copy';
}

interface DueTask {
  id: string;
  created_by: number;
  contacts: number[];
  templates: number[];
  recipient_rule: StoredRecipientRule | null;
  send_window: StoredSendWindow | null;
  timezone: string;
  reserved_quota: number;
  user_timezone: string;
  user_remaining: string;
}

export interface GeneratorOptions {
  /** Resolves custom recipient domains to mailbox providers (MX); tests inject a fake one. */
  providers?: ProviderResolver;
  /**
   * false: the path before mailbox providers (no lookups, no join, `provider` left NULL, read from
   * the address by the scheduler). Only for measuring what resolving providers costs (bench W2).
   */
  resolveProviders?: boolean;
}

/**
 * The next due campaign to generate, locked, skipping those another engine is generating. It
 * walks tasks_due_idx (scheduled_at, id) in order and stops at the first it can take: it never
 * reads every due campaign (test/generation.test.ts reads the plan).
 */
export const DUE_TASK_SQL = `SELECT t.id, t.created_by, t.contacts, t.templates, t.recipient_rule, t.send_window, t.timezone, t.reserved_quota,
                u.timezone AS user_timezone, u.remaining_quota AS user_remaining
           FROM tasks t JOIN users u ON u.id = t.created_by
          WHERE t.status = 'scheduled' AND t.generated_at IS NULL AND t.scheduled_at <= $now
            AND u.paused_reason IS NULL -- a paused user's new campaigns wait (services/breakers.ts)
          ORDER BY t.scheduled_at, t.id
          LIMIT 1
          FOR UPDATE OF t SKIP LOCKED`;

export function createGenerator(ctx: ServiceContext, opts: GeneratorOptions = {}) {
  const db = ctx.schedulerDb;
  const providers = opts.providers ?? createProviderResolver({ timeoutMs: ctx.config.mxLookupTimeoutMs });
  const resolve = opts.resolveProviders !== false;
  const query = <T>(sql: string, bind: Record<string, unknown>, transaction: Transaction) => queryRows<T>(db, sql, bind, transaction);

  /** not_before per recipient zone, computed with luxon once per distinct zone (not per recipient). */
  async function windowTimes(task: DueTask, where: { sql: string; bind: Record<string, unknown> }, now: DateTime, t: Transaction) {
    const w = task.send_window!;
    const fixedZone = w.timezone !== 'recipient' ? w.timezone : undefined;
    const zones = fixedZone
      ? [fixedZone]
      : (
          await query<{ zone: string }>(
            `SELECT DISTINCT COALESCE(c.timezone, $userTz, $taskTz) AS zone FROM contacts c WHERE ${where.sql}`,
            { ...where.bind, userTz: task.user_timezone, taskTz: task.timezone },
            t,
          )
        ).map((r) => r.zone);
    const window = { start: w.start, end: w.end, ...(w.days ? { days: w.days } : {}) };
    return { zones, times: zones.map((z) => nextSendTime(window, z, now).toUTC().toISO()!) };
  }

  async function generateOne(now: DateTime): Promise<GenerationResult | undefined> {
    const started = performance.now();
    return db.transaction(async (t) => {
      const [task] = await query<DueTask>(DUE_TASK_SQL, { now: now.toJSDate() }, t);
      if (!task) return undefined;
      const recipients = recipientPredicate({
        userId: task.created_by,
        contacts: task.contacts.map(Number),
        rule: task.recipient_rule,
        suppression: await suppressionMode(db, task.created_by, t),
      });
      // A large queue goes by COPY over a second connection (queue-copy.ts), which needs a pool of
      // two; the recipients counted at creation tell its size.
      const viaCopy = task.reserved_quota >= ctx.config.generationCopyMin && ctx.config.schedulerPoolMax >= 2;
      // Mailbox providers of custom domains (MX lookups, bounded by the resolver's timeout) before
      // the user row is locked, so a slow DNS answer never holds up the user's other requests. For
      // COPY they are stored in a transaction of their own, so that its reader sees them.
      if (resolve) await fillDomainProviders(db, providers, task.created_by, recipients, viaCopy ? undefined : t);
      // Lock the user's credit for the statement: the cap below must not race a new campaign.
      const [user] = await query<{ remaining_quota: string }>(
        'SELECT remaining_quota FROM users WHERE id = $id FOR UPDATE',
        { id: task.created_by },
        t,
      );
      const cap = task.reserved_quota + Number(user!.remaining_quota);
      const where = recipients;
      const bind: Record<string, unknown> = {
        ...where.bind,
        taskId: task.id,
        templates: task.templates,
        nTemplates: task.templates.length,
        now: now.toJSDate(),
      };
      let notBefore = '$now::timestamptz';
      let zoneExpr = 'NULL::text';
      let join = '';
      if (task.send_window) {
        const w = await windowTimes(task, where, now, t);
        Object.assign(bind, { wZones: w.zones, wTimes: w.times });
        if (task.send_window.timezone !== 'recipient') {
          bind.fixedZone = task.send_window.timezone;
          zoneExpr = '$fixedZone::text';
        } else {
          Object.assign(bind, { userTz: task.user_timezone, taskTz: task.timezone });
          zoneExpr = 'COALESCE(c.timezone, $userTz, $taskTz)';
        }
        join = `JOIN unnest($wZones::text[], $wTimes::timestamptz[]) AS w(zone, at) ON w.zone = ${zoneExpr}`;
        notBefore = 'w.at';
      }
      // No ORDER BY / LIMIT: a sequential scan of contacts feeds the primary-key index (task_id,
      // contact_id) in nearly ascending order, which is the queue's order; an ORDER BY ... LIMIT
      // made the planner walk the contacts index instead (1.4 s against 0.3 s per million).
      // Every column is cast to its subtasks type, as the binary COPY needs.
      const select = `SELECT $taskId::bigint, c.user_id::int, c.id::bigint, c.email::text,
                -- deterministic template choice: the same contact always gets the same template
                ${task.templates.length === 1 ? '($templates::int[])[1]' : '($templates::int[])[1 + (c.id % $nTemplates)::int]'},
                ${notBefore}, ${task.send_window ? zoneExpr : 'NULL'}::text,
                ${resolve ? providerSql('c') : 'NULL'}::text
           FROM contacts c ${join}
           ${resolve ? `LEFT JOIN mail_domains md ON md.domain = ${DOMAIN_SQL('c')}` : ''}
          WHERE ${where.sql}`;
      let generated = viaCopy
        ? await copyRows(db, t, 'subtasks', SUBTASK_COLUMNS, select, bind)
        : Number(
            (
              (await db.query(`INSERT INTO subtasks (${SUBTASK_COLUMNS.join(', ')}) ${select}`, {
                bind,
                transaction: t,
                type: 'INSERT' as never,
              })) as unknown as [unknown, number]
            )[1],
          );
      let cutOff = 0;
      if (generated > cap) {
        // The credit covers fewer recipients than matched: keep the first `cap` by contact id.
        cutOff = generated - cap;
        await query(
          `DELETE FROM subtasks WHERE task_id = $taskId AND contact_id >= (
             SELECT contact_id FROM subtasks WHERE task_id = $taskId ORDER BY contact_id OFFSET $cap LIMIT 1)`,
          { taskId: task.id, cap },
          t,
        );
        generated = cap;
      }
      const status = generated === 0 ? 'completed' : 'sending';
      const reason = cutOff > 0 ? `${cutOff} recipients matched beyond the user's credit and were not queued` : null;
      await query(
        `UPDATE tasks SET generated_at = $now, status = $status, total_count = $n, reserved_quota = $n, wait_reason = $reason,
                completed_at = CASE WHEN $status = 'completed' THEN $now::timestamptz END, updated_at = now()
          WHERE id = $id`,
        { now: now.toJSDate(), status, n: generated, reason, id: task.id },
        t,
      );
      // Charge (negative) or refund (positive) the difference between reservation and queue.
      await query(
        'UPDATE users SET remaining_quota = remaining_quota + $delta, updated_at = now() WHERE id = $id',
        { delta: task.reserved_quota - generated, id: task.created_by },
        t,
      );
      const result = {
        taskId: Number(task.id),
        generated,
        cutOff,
        ms: Math.round(performance.now() - started),
        via: viaCopy ? ('copy' as const) : ('insert' as const),
      };
      if (cutOff > 0) ctx.logger.warn(result, 'campaign generated short: user credit exhausted');
      else ctx.logger.info(result, 'campaign queue generated');
      return result;
    });
  }

  return {
    /**
     * Generates the queues of up to `batchSize` due campaigns, one transaction each. Safe to call
     * from several processes at once: each campaign is generated exactly once.
     */
    async processScheduledTasks(batchSize = ctx.config.schedulerBatchSize, now: DateTime = ctx.clock()): Promise<GenerationResult[]> {
      const results: GenerationResult[] = [];
      for (let i = 0; i < batchSize; i++) {
        const r = await generateOne(now);
        if (!r) break;
        results.push(r);
      }
      return results;
    },
  };
}
export type Generator = ReturnType<typeof createGenerator>;
