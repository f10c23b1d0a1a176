/**
 * One mapping from errors to HTTP answers, so every route fails the same way:
 *
 *   { "error": { "code": "VALIDATION", "message": "...", "issues": [{ "path": "contacts[1].email", "message": "..." }] } }
 *
 * | error                                               | status | code                     |
 * | --------------------------------------------------- | ------ | ------------------------ |
 * | ValidationError (also EMPTY_RECIPIENTS, TEMPLATE_VARIABLE, HEADER_INJECTION) and schema failures | 400 | its code |
 * | malformed JSON or CSV, empty JSON body              | 400    | BAD_REQUEST              |
 * | malformed percent-encoding or overlong path param   | 400    | BAD_REQUEST              |
 * | no token, unknown token, wrong webhook secret       | 401    | UNAUTHORIZED             |
 * | admin-only route, another user's `user_id`          | 403    | FORBIDDEN                |
 * | NotFoundError, and what exists but is not yours     | 404    | NOT_FOUND                |
 * | ConflictError (resume a cancelled campaign, ...)    | 409    | CONFLICT                 |
 * | body over the route's limit                         | 413    | PAYLOAD_TOO_LARGE        |
 * | content type the route does not take                | 415    | UNSUPPORTED_MEDIA_TYPE   |
 * | QuotaExceededError                                  | 422    | QUOTA_EXCEEDED           |
 * | too many failed token attempts from one address     | 429    | RATE_LIMITED             |
 * | engine closing                                      | 503    | ENGINE_CLOSED            |
 * | anything else                                       | 500    | INTERNAL (message hidden, error logged) |
 *
 * QUOTA_EXCEEDED is 422 (Unprocessable Content), not 402: the request is well formed and
 * understood, but the user's sending credit cannot cover it; 402 is reserved for payment schemes
 * and some clients treat it specially. The body carries `required` and `available`.
 *
 * Bad input never yields a 500: besides the cases above, PostgreSQL data exceptions (class 22,
 * e.g. an id beyond the int range that slipped past a schema) answer 400, and integrity violations
 * (class 23) 400 or 409.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import {
  ConflictError,
  ErrorCodes,
  FairsendError,
  NotFoundError,
  QuotaExceededError,
  ValidationError,
  type FieldIssue,
} from '../../services/kernel/errors.js';
import { snakePath } from './casing.js';

export const HttpErrorCodes = {
  BAD_REQUEST: 'BAD_REQUEST',
  UNAUTHORIZED: 'UNAUTHORIZED',
  FORBIDDEN: 'FORBIDDEN',
  NOT_FOUND: 'NOT_FOUND',
  METHOD_NOT_ALLOWED: 'METHOD_NOT_ALLOWED',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  UNSUPPORTED_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  RATE_LIMITED: 'RATE_LIMITED',
  UNAVAILABLE: 'UNAVAILABLE',
  INTERNAL: 'INTERNAL',
} as const;

/** An answer decided by the HTTP layer itself (401, 403, 404 for hidden resources, 429...). */
export class HttpError extends Error {
  readonly statusCode: number;
  readonly code: string;
  readonly headers: Record<string, string>;
  constructor(statusCode: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = 'HttpError';
    this.statusCode = statusCode;
    this.code = code;
    this.headers = headers;
  }
}

export const unauthorized = (message = 'a valid API token is required (Authorization: Bearer <token>)') =>
  new HttpError(401, HttpErrorCodes.UNAUTHORIZED, message, { 'www-authenticate': 'Bearer realm="fairsend"' });
export const forbidden = (message = 'this needs an admin token') => new HttpError(403, HttpErrorCodes.FORBIDDEN, message);

export interface ErrorBody {
  error: { code: string; message: string; issues?: FieldIssue[]; required?: number; available?: number };
}

const FASTIFY_CODES: Record<string, [number, string, string?]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, HttpErrorCodes.PAYLOAD_TOO_LARGE],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, HttpErrorCodes.UNSUPPORTED_MEDIA_TYPE],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, HttpErrorCodes.BAD_REQUEST],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, HttpErrorCodes.BAD_REQUEST],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, HttpErrorCodes.BAD_REQUEST],
  // Refused by the router (frameworkErrors), before any route: fixed messages, the URL is not echoed.
  FST_ERR_BAD_URL: [400, HttpErrorCodes.BAD_REQUEST, 'the URL is not valid (malformed percent-encoding)'],
  FST_ERR_MAX_PARAM_LENGTH: [400, HttpErrorCodes.BAD_REQUEST, 'a path parameter is too long'],
};

/** What a CSV import recorded: the file line of each data row, to name rows in issues. */
export interface CsvRequestInfo {
  lines: number[];
}

function issuePaths(issues: FieldIssue[], csv: CsvRequestInfo | undefined): FieldIssue[] {
  return issues.map((i) => {
    // CSV: contacts[4].email -> row 6.email, the spreadsheet row of the record (the header is row 1).
    // Contact fields are single words and attribute names are the user's, so nothing is renamed.
    const path = csv
      ? i.path.replace(/^contacts\[(\d+)\]/, (_, n: string) => `row ${csv.lines[Number(n)] ?? Number(n) + 2}`)
      : snakePath(i.path);
    return { path, message: i.message };
  });
}

function pgCode(err: unknown): string | undefined {
  const original = (err as { original?: { code?: unknown } }).original;
  return typeof original?.code === 'string' ? original.code : undefined;
}

/** Maps any error to a status and body. Pure, so it can be tested and reused (CLI messages). */
export function toHttpError(err: unknown, csv?: CsvRequestInfo): { status: number; body: ErrorBody; headers: Record<string, string> } {
  const make = (status: number, code: string, message: string, extra: Partial<ErrorBody['error']> = {}, headers = {}) => ({
    status,
    body: { error: { code, message, ...extra } },
    headers,
  });
  if (err instanceof HttpError) return make(err.statusCode, err.code, err.message, {}, err.headers);
  if (err instanceof ValidationError) {
    const issues = issuePaths(err.issues, csv);
    const message = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
    return make(400, err.code, message, { issues });
  }
  if (err instanceof QuotaExceededError) {
    return make(422, err.code, err.message, { required: err.required, available: err.available });
  }
  if (err instanceof NotFoundError) return make(404, err.code, err.message);
  if (err instanceof ConflictError) return make(409, err.code, err.message);
  if (err instanceof FairsendError) {
    const status = err.code === ErrorCodes.FORBIDDEN ? 403 : err.code === ErrorCodes.ENGINE_CLOSED ? 503 : 400;
    return make(status, err.code, err.message);
  }
  const fe = err as Partial<FastifyError> & { validation?: unknown };
  const mapped = fe.code ? FASTIFY_CODES[fe.code] : undefined;
  if (mapped) {
    const [status, code, fixed] = mapped;
    const message = fixed
      ? fixed
      : status === 413
        ? 'request body is too large'
        : status === 415
          ? (fe.message ?? 'unsupported content type')
          : (fe.message ?? 'bad request');
    return make(status, code, message);
  }
  const pg = pgCode(err);
  if (pg?.startsWith('22')) return make(400, ErrorCodes.VALIDATION, 'a value is out of range or malformed');
  if (pg === '23505') return make(409, ErrorCodes.CONFLICT, 'that already exists');
  if (pg?.startsWith('23')) return make(400, ErrorCodes.VALIDATION, 'the request breaks a data constraint');
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return make(fe.statusCode, fe.statusCode === 404 ? HttpErrorCodes.NOT_FOUND : HttpErrorCodes.BAD_REQUEST, fe.message ?? 'bad request');
  }
  return make(500, HttpErrorCodes.INTERNAL, 'internal error');
}

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const { status, body, headers } = toHttpError(err, (request as FastifyRequest & { csvImport?: CsvRequestInfo }).csvImport);
  // A database outage is logged by the scheduler once per 5 s; each refused request is a warning,
  // not an error with a stack, or an outage would write one error per request.
  if (body.error.code === ErrorCodes.DATABASE_UNAVAILABLE) request.log.warn({ code: body.error.code, status }, body.error.message);
  else if (status >= 500) request.log.error({ err }, 'request failed');
  else if (status !== 401 && status !== 404) request.log.info({ code: body.error.code, status }, body.error.message);
  return reply.code(status).headers(headers).type('application/json; charset=utf-8').send(JSON.stringify(body));
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const body: ErrorBody = {
    error: { code: HttpErrorCodes.NOT_FOUND, message: `no route for ${request.method} ${request.url.split('?')[0]}` },
  };
  return reply.code(404).type('application/json; charset=utf-8').send(JSON.stringify(body));
}
