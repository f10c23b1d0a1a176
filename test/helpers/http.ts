import { Writable } from 'node:stream';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import type { Engine } from '../../src/engine.js';
import { createLogger } from '../../services/kernel/logger.js';
import { createHttpServer, type HttpServer, type HttpServerOptions } from '../../src/http/server.js';
import { createToken } from '../../services/auth.js';
import type { EngineOptions } from '../../src/engine.js';
import { createTestEngine } from './db.js';

/** Collects everything a pino logger writes, to assert what logs do (and do not) contain. */
export class LogSink extends Writable {
  chunks: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(chunk.toString('utf8'));
    cb();
  }
  get text(): string {
    return this.chunks.join('');
  }
  lines(): Record<string, unknown>[] {
    return this.text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

export const UNSUBSCRIBE_SECRET = 'test-unsubscribe-secret-0123456789';
export const WEBHOOK_SECRET = 'whsec-test-0123456789abcdef';

export interface HttpFixture {
  engine: Engine;
  server: HttpServer;
  logs: LogSink;
  adminId: number;
  adminToken: string;
  /** Sends a request with `token` (if any) as a bearer token. */
  call(
    method: InjectOptions['method'],
    url: string,
    token?: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<LightMyRequestResponse>;
  /** A new user (role user) with credit and a token. */
  user(name: string, quota?: number): Promise<{ id: number; token: string }>;
  close(): Promise<void>;
}

/** An engine on a fresh database, an admin with a token, and an HTTP server (not listening) logging into `logs`. */
export async function httpFixture(opts: { engine?: EngineOptions; http?: HttpServerOptions } = {}): Promise<HttpFixture> {
  const engine = await createTestEngine(opts.engine);
  const logs = new LogSink();
  const admin = await engine.users.create({ name: 'Admin', email: 'admin@example.test', quota: 1_000_000, role: 'admin' });
  const adminToken = await createToken(engine, admin.id);
  const server = await createHttpServer(engine, {
    logger: createLogger('info', logs),
    unsubscribeSecret: UNSUBSCRIBE_SECRET,
    bounceWebhookSecret: WEBHOOK_SECRET,
    processMetrics: false,
    ...opts.http,
  });
  const call: HttpFixture['call'] = (method, url, token, body, headers = {}) =>
    server.app.inject({
      method,
      url,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      ...(body === undefined ? {} : typeof body === 'string' || Buffer.isBuffer(body) ? { payload: body } : { payload: body as object }),
    });
  return {
    engine,
    server,
    logs,
    adminId: admin.id,
    adminToken,
    call,
    async user(name, quota = 1000) {
      const u = await engine.users.create({ name, email: `${name.toLowerCase()}@example.test`, quota });
      return { id: u.id, token: await createToken(engine, u.id) };
    },
    async close() {
      await server.close();
      await engine.close();
    },
  };
}

/** The `error` object of an error answer. */
export function errorOf(res: LightMyRequestResponse): { code: string; message: string; issues?: { path: string; message: string }[] } {
  return (res.json() as { error: { code: string; message: string; issues?: { path: string; message: string }[] } }).error;
}
