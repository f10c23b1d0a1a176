/**
 * Contacts: import, list, status. The import pipeline is in contact-import.ts (validated row by
 * row, written in batches, one transaction, all or nothing), CSV parsing in contact-csv.ts (a
 * stream), background imports in import-jobs.ts.
 *
 * A user's contacts are unique by email, case-insensitively (a unique index on lower(email)), so
 * importing the same address twice updates the contact instead of duplicating it: attributes
 * are merged, tags and name replaced when given.
 */
import { jsonRows, type JsonRowsOptions } from './contact-json.js';
import { Op } from 'sequelize';
import { ConflictError, ValidationError } from './kernel/errors.js';
import { unsubscribeContact } from './unsubscribes.js';
import type { ServiceContext } from './context.js';
import { importContacts, type BulkCreateResult, type ImportOptions, type SourceRow } from './contact-import.js';
import { csvRows, type CsvSource } from './contact-csv.js';
import { createImportJobs, type ImportJobView } from './import-jobs.js';
import { parseId, type ContactInput } from './validation.js';

export type { BulkCreateResult, ImportOptions, ImportProgress } from './contact-import.js';
export type { ImportJobView } from './import-jobs.js';
export type { CsvSource } from './contact-csv.js';

export interface ContactView {
  id: number;
  email: string;
  name: string | null;
  tags: string[];
  attributes: Record<string, unknown>;
  status: 'active' | 'unsubscribed' | 'bounced';
  timezone: string | null;
}

/** What a background import reads: a CSV file (bytes, text or a stream), or contact rows. */
export type ImportInput =
  { csv: CsvSource; bytesTotal?: number } | { contacts: ContactInput[] } | { json: Uint8Array; mapRow?: JsonRowsOptions['mapRow'] };

function* arrayRows(rows: unknown[]): Generator<SourceRow> {
  for (let i = 0; i < rows.length; i++) yield { at: ['contacts', i], input: rows[i] };
}

function checkArray(rows: unknown): asserts rows is unknown[] {
  if (!Array.isArray(rows)) throw new ValidationError([{ path: 'contacts', message: 'must be an array of contacts' }]);
  if (rows.length === 0) throw new ValidationError([{ path: 'contacts', message: 'must hold at least one contact' }]);
}

export function createContactsApi(ctx: ServiceContext) {
  const jobs = createImportJobs(ctx);
  return {
    /**
     * Imports `rows` in one transaction (all or nothing); an invalid row fails the call with a
     * ValidationError naming each bad row and field (`contacts[3].email`).
     */
    async bulkCreate(userId: number, rows: ContactInput[], opts: ImportOptions = {}): Promise<BulkCreateResult> {
      parseId(userId, 'userId');
      checkArray(rows);
      return importContacts(ctx, userId, arrayRows(rows), opts);
    },

    /**
     * Imports a CSV file (bytes, text, or a stream of chunks: it is parsed as it streams) in one
     * transaction; issues name the spreadsheet row (`row 5.timezone`, the header is row 1).
     */
    async importCsv(userId: number, csv: CsvSource, opts: ImportOptions = {}): Promise<BulkCreateResult> {
      parseId(userId, 'userId');
      return importContacts(ctx, userId, csvRows(csv), opts);
    },

    /**
     * Imports a JSON body (`[...]` or `{ "contacts": [...] }`, as bytes) read contact by contact
     * (services/contact-json.ts): a large body never holds the event loop as a whole parse would.
     */
    async importJson(
      userId: number,
      json: Uint8Array,
      opts: ImportOptions & Pick<JsonRowsOptions, 'mapRow'> = {},
    ): Promise<BulkCreateResult> {
      parseId(userId, 'userId');
      return importContacts(ctx, userId, jsonRows(json, opts.mapRow ? { mapRow: opts.mapRow } : {}), opts);
    },

    /**
     * Starts a background import and resolves once it is recorded (status `running`); poll it with
     * getImport. Bad input is reported by the job (status `failed`, with its issues), not thrown.
     */
    async startImport(userId: number, input: ImportInput, opts: ImportOptions = {}): Promise<ImportJobView> {
      parseId(userId, 'userId');
      if ('json' in input) {
        const bytes = { bytes: 0 };
        const rows = jsonRows(input.json, { counter: bytes, ...(input.mapRow ? { mapRow: input.mapRow } : {}) });
        return jobs.start(userId, { format: 'json', rows, bytes, bytesTotal: input.json.length }, opts);
      }
      if ('csv' in input) {
        const bytes = { bytes: 0 };
        const total =
          input.bytesTotal ??
          (typeof input.csv === 'string' ? Buffer.byteLength(input.csv) : input.csv instanceof Uint8Array ? input.csv.length : undefined);
        return jobs.start(
          userId,
          { format: 'csv', rows: csvRows(input.csv, bytes), bytes, ...(total !== undefined ? { bytesTotal: total } : {}) },
          opts,
        );
      }
      checkArray(input.contacts);
      return jobs.start(userId, { format: 'json', rows: arrayRows(input.contacts), rowsTotal: input.contacts.length }, opts);
    },

    /**
     * Background import `id`: status, progress, and at the end its result or error. With `userId`,
     * another user's import is a NotFoundError, as a missing one.
     */
    getImport: (id: number, opts: { userId?: number } = {}): Promise<ImportJobView> => jobs.get(id, opts.userId),

    /** Resolves when background import `id` run by this engine has ended (at once if none). */
    waitForImport: (id: number): Promise<void> => jobs.settled(id),

    /** Aborts the background imports this engine runs (each rolls back); the engine calls it on close. */
    closeImports: (): Promise<void> => jobs.close(),

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

    /**
     * Sets a contact's status. `unsubscribed` is an unsubscribe through the API: recorded, queued
     * mail cancelled at once (services/unsubscribes.ts). Back to `active` from unsubscribed or
     * bounced only through `engine.subscriptions.reactivate` (an admin, with a reason): refused here.
     */
    async setStatus(userId: number, contactId: number, status: 'active' | 'unsubscribed' | 'bounced'): Promise<void> {
      const id = parseId(contactId, 'contactId');
      const [c] = (
        await ctx.apiDb.query('SELECT status FROM contacts WHERE id = $id AND user_id = $userId', {
          bind: { id, userId: parseId(userId, 'userId') },
        })
      )[0] as { status: string }[];
      if (!c) throw new ValidationError([{ path: 'contactId', message: `contact ${contactId} not found` }]);
      if (status === c.status) return;
      if (status === 'active') {
        throw new ConflictError(
          `contact ${contactId} is ${c.status}: only an admin re-activates it, with a reason (subscriptions.reactivate)`,
        );
      }
      if (status === 'unsubscribed') {
        await unsubscribeContact(ctx.apiDb, id, { method: 'api' });
        return;
      }
      await ctx.apiDb.query(`UPDATE contacts SET status = $status, updated_at = now() WHERE id = $id`, { bind: { status, id } });
    },
  };
}
export type ContactsApi = ReturnType<typeof createContactsApi>;
