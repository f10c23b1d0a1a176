/**
 * /api/contacts: bulk import (JSON or CSV, up to `importBodyLimit`, 10 MiB by default), background
 * imports (`/api/contacts/imports/:id`), and list.
 *
 * JSON: `{ "contacts": [{ "email": ..., "name": ..., "tags": [...], "attributes": {...}, "timezone": ... }] }`,
 * or the bare array. CSV (Content-Type: text/csv): see services/contact-csv.ts; the body is parsed
 * as a stream by the import, not here. Either way the rows are validated by the programmatic API's
 * rules and written in one transaction, or not at all; issues name the field, `contacts[1].email`
 * for JSON and `row 3.email` for CSV (the spreadsheet row: the header is row 1).
 *
 * A body above `backgroundImportBytes` (1 MiB by default) is imported in the background: 202 and
 * the import's state, polled at GET /api/contacts/imports/:id.
 */
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { LIMITS } from '../../../services/validation.js';
import { isAdmin, scopeUserId } from '../auth.js';
import type { App, RouteContext } from '../context.js';
import type { CsvRequestInfo } from '../errors.js';
import { camelizeKeys, depthOf, DuplicateKeyError, MAX_DEPTH } from '../casing.js';
import { JsonUpload } from '../json-body.js';
import { ValidationError } from '../../../services/kernel/errors.js';
import { campaignParams, contactSchema, errors, importJobSchema, importResultSchema, pageQuery, userQuery } from '../schemas.js';

declare module 'fastify' {
  interface FastifyRequest {
    csvImport?: CsvRequestInfo;
  }
}

/**
 * A CSV body as received: its bytes, parsed later as a stream by the import. A class with a
 * private field, so the request walks of the HTTP layer (nesting depth, key renaming) see nothing
 * inside it, not ten million bytes.
 */
export class CsvUpload {
  readonly #bytes: Buffer;
  constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }
  get bytes(): Buffer {
    return this.#bytes;
  }
}

// Rows are validated by the import itself, one at a time with pauses for the event loop (a zod
// pass over 100,000 rows here would hold the loop for a second); this only checks the envelope.
export const importBodySchema = z
  .strictObject({
    contacts: z
      .array(z.unknown())
      .min(1, 'must hold at least one contact')
      .max(LIMITS.contactsPerBatch, `must hold at most ${LIMITS.contactsPerBatch} contacts per call`)
      .describe('Contacts: { email, name?, tags?, attributes?, timezone?, status? } each')
      .optional(),
    csv: z
      .custom<CsvUpload>((v) => v instanceof CsvUpload, 'is set from a text/csv body only')
      .optional()
      .describe('(a text/csv body arrives here; not a JSON field)'),
    json: z
      .custom<JsonUpload>((v) => v instanceof JsonUpload, 'is set from a large JSON body only')
      .optional()
      .describe('(a JSON body above background_import_bytes arrives here, read contact by contact; not a JSON field)'),
  })
  .refine((b) => b.contacts !== undefined || b.csv !== undefined || b.json !== undefined, { message: 'is required', path: ['contacts'] });

/**
 * One contact of a large JSON body, as the HTTP layer treats a whole small one: nesting bounded,
 * snake_case keys renamed (one field given twice refused), errors naming `contacts[i]`.
 */
function contactFromWire(row: unknown, path: string): unknown {
  if (depthOf(row) > MAX_DEPTH - 2) throw new ValidationError([{ path, message: `is nested more than ${MAX_DEPTH} levels deep` }]);
  try {
    return camelizeKeys(row);
  } catch (err) {
    if (!(err instanceof DuplicateKeyError)) throw err;
    throw new ValidationError([{ path: `${path}.${err.path}`, message: `is given twice (${err.keys.join(' and ')})` }]);
  }
}

const importQuery = userQuery.extend({
  background: z
    .enum(['true', 'false'])
    .transform((v) => v === 'true')
    .optional()
    .describe('Force (true) or refuse (false) a background import; default: background above background_import_bytes'),
});

export function contactRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['contacts'];

  app.addContentTypeParser(['text/csv', 'application/csv'], { parseAs: 'buffer' }, (request: FastifyRequest, body, done) => {
    request.csvImport = { lines: [] };
    done(null, { csv: new CsvUpload(body as Buffer) });
  });

  app.post(
    '/api/contacts',
    {
      bodyLimit: ctx.options.importBodyLimit,
      // Above the background threshold, JSON is read contact by contact, never parsed whole.
      config: { streamJsonAbove: ctx.options.backgroundImportBytes },
      schema: {
        tags,
        summary: 'Import contacts (JSON or CSV); existing addresses are updated; large files run in the background',
        consumes: ['application/json', 'text/csv'],
        description:
          'application/json: `{ "contacts": [...] }` or the bare array. text/csv: a header row; columns email, name, tags (`;`-separated), ' +
          'timezone, status, and any other column as an attribute. Nothing is written unless every row is valid; issues name each row. ' +
          'A body above `background_import_bytes` (1 MiB by default), or `?background=true`, is imported in the background: ' +
          'the answer is 202 with the import, to poll at GET /api/contacts/imports/{id}.',
        querystring: importQuery,
        body: importBodySchema,
        response: { 200: importResultSchema, 202: z.object({ import: importJobSchema }), ...errors(400, 401, 403, 413, 415) },
      },
      preValidation: async (request) => {
        if (Array.isArray(request.body)) request.body = { contacts: request.body };
      },
    },
    async (request, reply) => {
      const userId = scopeUserId(request, request.query.userId);
      const csv = request.body.csv?.bytes;
      const json = request.body.json?.bytes;
      const contacts = (request.body.contacts ?? []) as never[];
      const size = csv ? csv.length : json ? json.length : Number(request.headers['content-length'] ?? 0);
      const background = request.query.background ?? size > ctx.options.backgroundImportBytes;
      if (background) {
        const job = await engine.contacts.startImport(userId, csv ? { csv } : json ? { json, mapRow: contactFromWire } : { contacts });
        return reply.code(202).header('location', `/api/contacts/imports/${job.id}`).send({ import: job });
      }
      if (csv) return engine.contacts.importCsv(userId, csv);
      return json ? engine.contacts.importJson(userId, json, { mapRow: contactFromWire }) : engine.contacts.bulkCreate(userId, contacts);
    },
  );

  app.get(
    '/api/contacts/imports/:id',
    {
      schema: {
        tags,
        summary: 'A background import: status (running, completed, failed), progress, result or error with its issues',
        params: campaignParams,
        response: { 200: z.object({ import: importJobSchema }), ...errors(400, 401, 404) },
      },
    },
    async (request) => ({
      import: await engine.contacts.getImport(request.params.id, isAdmin(request) ? {} : { userId: scopeUserId(request, undefined) }),
    }),
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
