/**
 * fairsend's HTTP server (fastify): the REST API under /api, one-click unsubscribe under /u/,
 * /health, /metrics, the OpenAPI document (/openapi.json, browsable at /docs) and the dashboard (/).
 *
 *   const http = await createHttpServer(engine, { port: 3000 });
 *   await http.listen();           // http.app.inject(...) works without listening
 *   ...
 *   await http.close();            // the engine stays open: close it yourself
 *
 * Layout: casing.ts (snake_case wire, camelCase code), compilers.ts (zod validation and response
 * whitelists), errors.ts (one error mapping), auth.ts (tokens, roles, guessing limit), queries.ts
 * (read-side SQL), metrics.ts, send-history.ts, routes/*.ts (one file per resource), public/ (the dashboard).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { isConnectionError } from '../../services/kernel/db.js';
import type { Engine } from '../engine.js';
import { ErrorCodes, ValidationError } from '../../services/kernel/errors.js';
import { componentLogger, REDACT_PATHS } from '../../services/kernel/logger.js';
import { packageRoot } from '../paths.js';
import { addAuthHook, FailureLimiter } from './auth.js';
import { serializerCompiler, validatorCompiler } from './compilers.js';
import type { App, RouteContext } from './context.js';
import { errorHandler, HttpError, notFoundHandler } from './errors.js';
import { createMetrics, type ServerMetrics } from './metrics.js';
import { Fastify } from './native.js';
import { registerOpenApi } from './openapi.js';
import { queuedCount } from './queries.js';
import { attachSendHistory } from './send-history.js';
import { HTTP_DEFAULTS, type HttpServerOptions, type JobsApi, type ResolvedHttpOptions } from './options.js';
import { bounceRoutes } from './routes/bounces.js';
import { campaignRoutes } from './routes/campaigns.js';
import { contactRoutes } from './routes/contacts.js';
import { failureRoutes } from './routes/failures.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { schedulerRoutes } from './routes/scheduler.js';
import { serviceRoutes } from './routes/services.js';
import { suppressionRoutes } from './routes/suppressions.js';
import { webhookReceiver, webhookRoutes } from './routes/webhooks.js';
import { metricsRoute, staticRoutes } from './routes/static.js';
import { templateRoutes } from './routes/templates.js';
import { unsubscribeRoutes } from './routes/unsubscribe.js';
import { userRoutes } from './routes/users.js';
import { subscriptionRoutes } from './routes/subscriptions.js';
import { addUtf8JsonParser } from './json-body.js';

export type { JobsApi, HttpServerOptions } from './options.js';
export { HTTP_DEFAULTS } from './options.js';

export interface HttpServer {
  /** The fastify instance (ready, not listening): `app.inject()` for tests. */
  readonly app: App;
  /** Listens on options.port / options.host; resolves to the address, e.g. http://127.0.0.1:3000. */
  listen(): Promise<string>;
  /** Stops listening, answers in-flight requests, detaches the metrics from the scheduler. The engine stays open. */
  close(): Promise<void>;
}

/** Headers the HTTP logger never writes, on top of the engine's redaction paths. */
const HTTP_REDACT = ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-fairsend-webhook-secret"]'];

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/**
 * While the database is away, requests answer at once with 503 DATABASE_UNAVAILABLE and a
 * Retry-After, not with a 500 (and not by hanging: a refused or lost connection fails at once).
 * Returns undefined for every other error.
 */
export function databaseUnavailable(err: unknown): HttpError | undefined {
  if (!isConnectionError(err)) return undefined;
  return new HttpError(503, ErrorCodes.DATABASE_UNAVAILABLE, 'the database is unavailable right now; try again shortly', {
    'retry-after': '5',
  });
}

/** The request as logged: no headers at all, and the capability token of /u/ links masked. */
/**
 * The request as logged: unsubscribe tokens in /u/ paths, API tokens pasted anywhere in the URL,
 * and the values of query parameters that name a secret are replaced.
 */
export function redactUrl(url: string): string {
  return url
    .replace(/^\/u\/[^/?#]+/, '/u/[redacted]')
    .replace(/fst_[A-Za-z0-9_-]+/g, '[redacted]')
    .replace(/([?&][^=&#]*(?:token|secret|password|key)[^=&#]*=)[^&#]*/gi, '$1[redacted]');
}

function logRequest(req: FastifyRequest) {
  return { method: req.method, url: redactUrl(req.url), remoteAddress: req.ip };
}

/**
 * A read that succeeded: dashboard and status polling, /health probes, /metrics scrapes. An open
 * dashboard alone makes several a second, so they log at debug; changes, refusals and failures at info.
 */
export function isRoutineRequest(method: string, statusCode: number): boolean {
  return (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') && statusCode < 400;
}

/**
 * fastify's request lines, at the level a person wants on a terminal: "incoming request" at debug,
 * "request completed" (with the request, so one line tells what was asked and how it ended) at
 * debug for routine reads and at info for the rest. Errors keep fastify's own handling.
 */
class RequestLogController extends Fastify.LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request');
  }
  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) return super.requestCompleted(error, request, reply);
    const level = isRoutineRequest(request.method, reply.statusCode) ? 'debug' : 'info';
    reply.log[level]({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}

export async function createHttpServer(engine: Engine, options: HttpServerOptions = {}): Promise<HttpServer> {
  const o: ResolvedHttpOptions = {
    ...HTTP_DEFAULTS,
    metricsAuth: engine.config.metricsAuth,
    ...(Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as HttpServerOptions),
  };
  o.unsubscribeSecret ??= engine.config.unsubscribeSecret;
  o.unsubscribeBaseUrl ??= engine.config.unsubscribeUrlBase;
  if (o.jobs === undefined) o.jobs = (engine as { jobs?: JobsApi }).jobs ?? null;

  const logger = componentLogger(o.logger ?? engine.logger, 'http').child(
    {},
    { redact: { paths: [...REDACT_PATHS, ...HTTP_REDACT], censor: '[redacted]' }, serializers: { req: logRequest } },
  );
  const app = Fastify({
    loggerInstance: logger,
    logController: new RequestLogController(),
    bodyLimit: o.bodyLimit,
    trustProxy: o.trustProxy,
    // Ids of int4 and bigint columns are checked by the schemas; this only caps a path parameter's length.
    routerOptions: { maxParamLength: 200 },
    return503OnClosing: true,
    // A malformed or overlong path parameter is refused before routing: same error shape as the rest.
    frameworkErrors: errorHandler,
    // Our validator returns a ValidationError, which fastify passes on as it is; when fastify runs in
    // another realm (jest, see native.ts) its `instanceof Error` fails and it asks this formatter.
    schemaErrorFormatter: (errors, dataVar) =>
      (errors as unknown) instanceof ValidationError ? (errors as unknown as Error) : new Error(`${dataVar} is not valid`),
  }).withTypeProvider<ZodTypeProvider>() as unknown as App;
  // Validation errors reach the error handler through preHandler (attachValidation + rethrow), the
  // path every other error takes. Sent directly, fastify would serialize them as a payload whenever
  // its `instanceof Error` check fails across realms (under jest, see native.ts).
  app.addHook('onRoute', (route) => {
    route.attachValidation = true;
  });
  app.addHook('preHandler', async (request) => {
    if (request.validationError) throw request.validationError;
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler((err: unknown, request: FastifyRequest, reply: FastifyReply) =>
    errorHandler(databaseUnavailable(err) ?? err, request, reply),
  );
  app.setNotFoundHandler(notFoundHandler);

  // subtasks has no index on status (each costs a million-row queue generation), so counting the
  // queue scans it: at most one count a second (queueCountCacheMs), however many dashboards poll and
  // Prometheus scrapes.
  let cached: { at: number; value: Promise<number> } | undefined;
  const cachedQueuedCount = () => {
    const now = Date.now();
    if (!cached || now - cached.at >= o.queueCountCacheMs) {
      const value = queuedCount(engine.apiDb);
      value.catch(() => (cached = undefined));
      cached = { at: now, value };
    }
    return cached.value;
  };

  const sent = attachSendHistory(engine);
  const ctx: RouteContext = { engine, options: o, version: packageVersion(), queuedCount: cachedQueuedCount, sendHistory: sent.history };
  const metrics = createMetrics(engine, { queuedCount: cachedQueuedCount, processMetrics: o.processMetrics });
  app.addHook('onClose', async () => {
    metrics.detach();
    sent.detach();
  });
  try {
    await registerRoutes(app, engine, ctx, o, metrics);
    await app.ready();
  } catch (err) {
    metrics.detach();
    sent.detach();
    await app.close().catch(() => undefined);
    throw err;
  }
  warnAboutUnsubscribe(app, o);

  let closed: Promise<void> | undefined;
  return {
    app,
    async listen() {
      return app.listen({ port: o.port, host: o.host });
    },
    close: () => (closed ??= app.close()),
  };
}

async function registerRoutes(app: App, engine: Engine, ctx: RouteContext, o: ResolvedHttpOptions, metrics: ServerMetrics): Promise<void> {
  await registerOpenApi(app, ctx.version);

  // Public: health, one-click unsubscribe (own content types), the dashboard.
  await app.register(async (scope) => healthRoutes(scope as App, ctx));
  await app.register(async (scope) => unsubscribeRoutes(scope as App, ctx));
  await app.register(async (scope) => staticRoutes(scope as App, ctx));
  await app.register(async (scope) => webhookReceiver(scope as App, ctx));

  // Token-protected: everything under /api, and /metrics.
  const limiter = new FailureLimiter(o.authFailureLimit);
  await app.register(async (api) => {
    const scope = api as App;
    // JSON bodies that are not UTF-8: a 400 naming the field, never U+FFFD stored (json-body.ts).
    addUtf8JsonParser(scope);
    addAuthHook(scope, engine, { limiter, ...(o.bounceWebhookSecret !== undefined ? { webhookSecrets: o.bounceWebhookSecret } : {}) });
    schedulerRoutes(scope, ctx);
    serviceRoutes(scope, ctx);
    campaignRoutes(scope, ctx);
    templateRoutes(scope, ctx);
    userRoutes(scope, ctx);
    subscriptionRoutes(scope, ctx);
    bounceRoutes(scope, ctx);
    suppressionRoutes(scope, ctx);
    webhookRoutes(scope, ctx);
    jobRoutes(scope, ctx);
    failureRoutes(scope, ctx);
    await scope.register(async (csv) => contactRoutes(csv as App, ctx));
    if (o.metricsAuth) metricsRoute(scope, metrics);
  });
  if (!o.metricsAuth) await app.register(async (scope) => metricsRoute(scope as App, metrics));
}

/** One-click links reach this server only if UNSUBSCRIBE_URL_BASE points at its /u route and a secret is set. */
function warnAboutUnsubscribe(app: App, o: ResolvedHttpOptions): void {
  if (!o.unsubscribeBaseUrl) return;
  if (!o.unsubscribeSecret) {
    app.log.warn('UNSUBSCRIBE_URL_BASE is set but no unsubscribe secret: /u/ links will answer 404');
  } else if (!URL.canParse(o.unsubscribeBaseUrl) || !/\/u\/?$/.test(new URL(o.unsubscribeBaseUrl).pathname)) {
    app.log.warn(
      { unsubscribeBaseUrl: o.unsubscribeBaseUrl },
      'UNSUBSCRIBE_URL_BASE should end with /u: this server answers one-click links at /u/<token>',
    );
  }
}
