/**
 * The dashboard (plain HTML, CSS and JS in src/http/public/, no framework, no build step), served
 * from memory, and /metrics. The dashboard reads the same API as everyone else, with a token the
 * user enters once (kept in the browser's localStorage).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../../paths.js';
import type { App, RouteContext } from '../context.js';
import type { ServerMetrics } from '../metrics.js';

/** src/http/public next to this module (tsx, jest), else in the package (dist/ has no copy). */
export function publicDir(): string {
  const here = fileURLToPath(new URL('../public/', import.meta.url));
  return existsSync(join(here, 'index.html')) ? here : join(packageRoot, 'src', 'http', 'public');
}

const FILES: Record<string, [string, string]> = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/dashboard.js': ['dashboard.js', 'text/javascript; charset=utf-8'],
  '/dashboard.css': ['dashboard.css', 'text/css; charset=utf-8'],
};

const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

export function staticRoutes(app: App, _ctx: RouteContext): void {
  const dir = publicDir();
  for (const [url, [file, type]] of Object.entries(FILES)) {
    const content = readFileSync(join(dir, file));
    app.get(url, { schema: { hide: true } as object }, async (_request, reply) =>
      reply
        .type(type)
        .headers({
          'cache-control': 'no-cache',
          'content-security-policy': CSP,
          'x-content-type-options': 'nosniff',
          'referrer-policy': 'no-referrer',
        })
        .send(content),
    );
  }
}

export function metricsRoute(app: App, metrics: ServerMetrics): void {
  app.get(
    '/metrics',
    {
      config: { auth: 'metrics' },
      schema: {
        tags: ['metrics'],
        summary: 'Prometheus metrics (text exposition format); needs an admin or a metrics token unless METRICS_AUTH=false',
      },
    },
    async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
}
