/**
 * /api/contacts: bulk import (JSON or CSV, up to `importBodyLimit`, 10 MiB by default) and list.
 *
 * JSON: `{ "contacts": [{ "email": ..., "name": ..., "tags": [...], "attributes": {...}, "timezone": ... }] }`,
 * or the bare array. CSV (Content-Type: text/csv): a header row naming the columns; `email`,
 * `name`, `tags` (separated by `;`), `timezone` and `status` are fields, every other column is an
 * attribute (an empty cell leaves the attribute out). Either way the batch is validated whole by the
 * programmatic API's rules and written in one transaction, or not at all; issues name the field,
 * `contacts[1].email` for JSON and `row 3.email` for CSV (the spreadsheet row: the header is row 1).
 */
import type { FastifyRequest } from 'fastify';
import { parse } from 'csv-parse/sync';
import { z } from 'zod';
import { ValidationError, type FieldIssue } from '../../../services/kernel/errors.js';
import { contactInputSchema, LIMITS } from '../../../services/validation.js';
import { scopeUserId } from '../auth.js';
import type { App, RouteContext } from '../context.js';
import type { CsvRequestInfo } from '../errors.js';
import { contactSchema, errors, importResultSchema, pageQuery, userQuery } from '../schemas.js';

declare module 'fastify' {
  interface FastifyRequest {
    csvImport?: CsvRequestInfo;
  }
}

const FIELDS = new Set(['email', 'name', 'tags', 'timezone', 'status']);
const ATTRIBUTE_RE = /^[A-Za-z_][\w-]{0,63}$/;

export const importBodySchema = z.strictObject({
  contacts: z
    .array(contactInputSchema)
    .min(1, 'must hold at least one contact')
    .max(LIMITS.contactsPerBatch, `must hold at most ${LIMITS.contactsPerBatch} contacts per call`),
});

/** Turns a CSV file into the JSON import body, recording each record's first line for error paths. */
export function csvToContacts(text: string, info: CsvRequestInfo): { contacts: Record<string, unknown>[] } {
  let records: { record: Record<string, string>; info: { lines: number } }[];
  // A column named twice would be one key of each record: the last cell would silently win.
  const repeated = new Set<string>();
  const header = (names: string[]) => {
    names.forEach((n, i) => names.indexOf(n) !== i && repeated.add(n));
    return names;
  };
  try {
    records = parse(text, { columns: header, info: true, bom: true, skip_empty_lines: true, trim: true }) as typeof records;
  } catch (err) {
    const e = err as { message?: string; lines?: number };
    throw new ValidationError([{ path: e.lines ? `row ${e.lines}` : 'csv', message: e.message ?? 'is not valid CSV' }]);
  }
  if (!records.length) throw new ValidationError([{ path: 'csv', message: 'needs a header row and at least one contact row' }]);
  const columns = Object.keys(records[0]!.record);
  const issues: FieldIssue[] = [...repeated].map((c) => ({
    path: `row 1.${c}`,
    message: 'names a column that the header row already has',
  }));
  if (!columns.includes('email')) issues.push({ path: 'row 1', message: 'the header row needs an email column' });
  for (const c of columns) {
    if (!FIELDS.has(c) && !ATTRIBUTE_RE.test(c)) {
      issues.push({ path: `row 1.${c}`, message: 'attribute columns are named with letters, digits, _ and - (64 at most)' });
    }
  }
  if (issues.length) throw new ValidationError(issues);
  const contacts = records.map(({ record, info: i }) => {
    // A record spanning lines (a quoted newline) is named by its first line.
    const inner = Object.values(record).reduce((n, v) => n + (v.match(/\n/g)?.length ?? 0), 0);
    info.lines.push(i.lines - inner);
    const contact: Record<string, unknown> = { email: record.email ?? '' };
    const attributes: Record<string, string> = {};
    for (const [k, v] of Object.entries(record)) {
      if (k === 'email') continue;
      if (k === 'tags')
        contact.tags = v
          .split(';')
          .map((t) => t.trim())
          .filter(Boolean);
      else if (FIELDS.has(k)) {
        if (v !== '') contact[k] = v;
      } else if (v !== '') attributes[k] = v;
    }
    if (Object.keys(attributes).length) contact.attributes = attributes;
    return contact;
  });
  return { contacts };
}

export function contactRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['contacts'];

  app.addContentTypeParser(['text/csv', 'application/csv'], { parseAs: 'string' }, (request: FastifyRequest, body, done) => {
    const info: CsvRequestInfo = { lines: [] };
    request.csvImport = info;
    try {
      done(null, csvToContacts(body as string, info));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  app.post(
    '/api/contacts',
    {
      bodyLimit: ctx.options.importBodyLimit,
      schema: {
        tags,
        summary: 'Import contacts (JSON or CSV); existing addresses are updated',
        consumes: ['application/json', 'text/csv'],
        description:
          'application/json: `{ "contacts": [...] }` or the bare array. text/csv: a header row; columns email, name, tags (`;`-separated), ' +
          'timezone, status, and any other column as an attribute. Nothing is written unless every row is valid; issues name each row.',
        querystring: userQuery,
        body: importBodySchema,
        response: { 200: importResultSchema, ...errors(400, 401, 403, 413, 415) },
      },
      preValidation: async (request) => {
        if (Array.isArray(request.body)) request.body = { contacts: request.body };
      },
    },
    async (request) => engine.contacts.bulkCreate(scopeUserId(request, request.query.userId), request.body.contacts),
  );

  app.get(
    '/api/contacts',
    {
      schema: {
        tags,
        summary: 'List contacts (yours, or `user_id`’s for an admin), by id',
        querystring: pageQuery,
        response: { 200: z.object({ contacts: z.array(contactSchema) }), ...errors(400, 401, 403) },
      },
    },
    async (request) => ({
      contacts: await engine.contacts.list(scopeUserId(request, request.query.userId), {
        limit: request.query.limit,
        ...(request.query.afterId !== undefined ? { afterId: request.query.afterId } : {}),
      }),
    }),
  );
}
