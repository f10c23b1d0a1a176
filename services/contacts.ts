/**
 * Contact import. A batch is validated whole before anything is written: one bad row fails the
 * call with an error that lists every offending row, and nothing of the batch is stored. Valid
 * batches are written set-based (jsonb_to_recordset, 5,000 rows a statement) in one transaction.
 *
 * A user's contacts are unique by email, case-insensitively (a unique index on lower(email)), so
 * importing the same address twice updates the contact instead of duplicating it: attributes
 * are merged, tags and name replaced when given, and an unsubscribed or bounced contact is never
 * reactivated by an import that does not say so.
 */
import { Op } from 'sequelize';
import { ValidationError, type FieldIssue } from './kernel/errors.js';
import type { ServiceContext } from './context.js';
import { LIMITS, contactInputSchema, issuesFrom, parseId, unstorableTextIssues, type ContactInput } from './validation.js';

export interface BulkCreateResult {
  created: number;
  updated: number;
  /** Contact ids in the order of the input rows (rows with the same email share an id). */
  ids: number[];
}

export interface ContactView {
  id: number;
  email: string;
  name: string | null;
  tags: string[];
  attributes: Record<string, unknown>;
  status: 'active' | 'unsubscribed' | 'bounced';
  timezone: string | null;
}

const CHUNK = 5000;

const UPSERT = `
INSERT INTO contacts (user_id, email, name, tags, attributes, timezone, status)
SELECT $userId, r.email, r.name, COALESCE(r.tags, '[]'), COALESCE(r.attributes, '{}'), r.timezone, COALESCE(r.status, 'active')
FROM jsonb_to_recordset($rows::jsonb) AS r(email text, name text, tags jsonb, attributes jsonb, timezone text, status text)
ON CONFLICT (user_id, lower(email)) DO UPDATE SET
  name       = COALESCE(EXCLUDED.name, contacts.name),
  tags       = CASE WHEN $tagsGiven::jsonb ? lower(EXCLUDED.email) THEN EXCLUDED.tags ELSE contacts.tags END,
  attributes = contacts.attributes || EXCLUDED.attributes,
  timezone   = COALESCE(EXCLUDED.timezone, contacts.timezone),
  status     = CASE WHEN $statusGiven::jsonb ? lower(EXCLUDED.email) THEN EXCLUDED.status ELSE contacts.status END,
  updated_at = now()
RETURNING id, lower(email) AS key, (xmax = 0) AS inserted`;

export function createContactsApi(ctx: ServiceContext) {
  return {
    async bulkCreate(userId: number, rows: ContactInput[]): Promise<BulkCreateResult> {
      parseId(userId, 'userId');
      if (!Array.isArray(rows)) throw new ValidationError([{ path: 'contacts', message: 'must be an array of contacts' }]);
      if (rows.length === 0) throw new ValidationError([{ path: 'contacts', message: 'must hold at least one contact' }]);
      if (rows.length > LIMITS.contactsPerBatch) {
        throw new ValidationError([{ path: 'contacts', message: `must hold at most ${LIMITS.contactsPerBatch} contacts per call` }]);
      }
      const issues: FieldIssue[] = [];
      const valid: ReturnType<typeof contactInputSchema.parse>[] = [];
      rows.forEach((row, i) => {
        const r = contactInputSchema.safeParse(row);
        const text = unstorableTextIssues(row, ['contacts', i]);
        if (r.success && !text.length) valid.push(r.data);
        else issues.push(...(r.success ? [] : issuesFrom(r.error, ['contacts', i])), ...text);
      });
      if (issues.length) throw new ValidationError(issues);

      // One row per address, so one statement never touches a row twice. Repeats inside a batch
      // merge as a re-import would: later values win, attributes are merged.
      const byKey = new Map<string, (typeof valid)[number]>();
      for (const r of valid) {
        const key = r.email.toLowerCase();
        const prev = byKey.get(key);
        byKey.set(
          key,
          prev
            ? {
                email: r.email,
                name: r.name ?? prev.name,
                tags: r.tags ?? prev.tags,
                attributes: prev.attributes || r.attributes ? { ...prev.attributes, ...r.attributes } : undefined,
                timezone: r.timezone ?? prev.timezone,
                status: r.status ?? prev.status,
              }
            : r,
        );
      }

      return ctx.apiDb.transaction(async (transaction) => {
        const [[owner]] = (await ctx.apiDb.query('SELECT id FROM users WHERE id = $1 FOR SHARE', {
          bind: [userId],
          transaction,
        })) as [unknown[], unknown];
        if (!owner) throw new ValidationError([{ path: 'userId', message: `user ${userId} not found` }]);
        const idByKey = new Map<string, number>();
        let created = 0;
        const unique = [...byKey.values()];
        for (let i = 0; i < unique.length; i += CHUNK) {
          const chunk = unique.slice(i, i + CHUNK);
          const tagsGiven = Object.fromEntries(chunk.filter((r) => r.tags).map((r) => [r.email.toLowerCase(), true]));
          const statusGiven = Object.fromEntries(chunk.filter((r) => r.status).map((r) => [r.email.toLowerCase(), true]));
          const payload = chunk.map((r) => ({
            email: r.email,
            name: r.name ?? null,
            tags: r.tags ? [...new Set(r.tags)] : null,
            attributes: r.attributes ?? null,
            timezone: r.timezone ?? null,
            status: r.status ?? null,
          }));
          const [result] = (await ctx.apiDb.query(UPSERT, {
            bind: { userId, rows: JSON.stringify(payload), tagsGiven: JSON.stringify(tagsGiven), statusGiven: JSON.stringify(statusGiven) },
            transaction,
          })) as [{ id: string; key: string; inserted: boolean }[], unknown];
          for (const r of result) {
            idByKey.set(r.key, Number(r.id));
            if (r.inserted) created++;
          }
        }
        return { created, updated: byKey.size - created, ids: valid.map((r) => idByKey.get(r.email.toLowerCase())!) };
      });
    },

    async list(userId: number, opts: { limit?: number; afterId?: number } = {}): Promise<ContactView[]> {
      const rows = await ctx.models.Contact.findAll({
        where: { userId: parseId(userId, 'userId'), id: { [Op.gt]: opts.afterId ?? 0 } },
        order: [['id', 'ASC']],
        limit: Math.min(opts.limit ?? 1000, 10_000),
      });
      return rows.map((c) => ({
        id: c.id,
        email: c.email,
        name: c.name,
        tags: c.tags,
        attributes: c.attributes,
        status: c.status,
        timezone: c.timezone,
      }));
    },

    /** Marks a contact unsubscribed; its queued mail in every campaign is cancelled by the scheduler. */
    async setStatus(userId: number, contactId: number, status: 'active' | 'unsubscribed' | 'bounced'): Promise<void> {
      const [, count] = (await ctx.apiDb.query(
        `UPDATE contacts SET status = $status, updated_at = now() WHERE id = $id AND user_id = $userId`,
        { bind: { status, id: parseId(contactId, 'contactId'), userId: parseId(userId, 'userId') } },
      )) as [unknown, number];
      if (!count) throw new ValidationError([{ path: 'contactId', message: `contact ${contactId} not found` }]);
    },
  };
}
export type ContactsApi = ReturnType<typeof createContactsApi>;
