/**
 * fastify and its plugins, loaded with Node's own `require`.
 *
 * Why: they are CommonJS packages whose dependencies have become ESM-only (light-my-request, behind
 * `app.inject()`, requires cookie 1.x; @fastify/static, behind /docs, requires content-disposition
 * 3). Node >= 20.19 loads those through require(esm); jest's module runtime does not ("Must use
 * import to load ES Module"), so under jest `inject()` and /docs would fail. In Node, `import
 * Fastify from 'fastify'` loads the CommonJS package through this very require, so production
 * behaves the same either way; under jest these packages simply live outside jest's module
 * registry. Types still come from the packages' declarations.
 */
import { createRequire } from 'node:module';
import type FastifyDefault from 'fastify';
import type FastifySwaggerDefault from '@fastify/swagger';
import type FastifySwaggerUiDefault from '@fastify/swagger-ui';

// process.getBuiltinModule (Node >= 20.16) returns Node's module API even inside jest's sandbox.
const nodeModule = (process.getBuiltinModule?.('node:module') as typeof import('node:module') | undefined) ?? { createRequire };
const nodeRequire = nodeModule.createRequire(import.meta.url);

const load = <T>(id: string): T => {
  const m = nodeRequire(id) as T & { default?: T };
  return m.default ?? m;
};

export const Fastify = load<typeof FastifyDefault>('fastify');
export const fastifySwagger = load<typeof FastifySwaggerDefault>('@fastify/swagger');
export const fastifySwaggerUi = load<typeof FastifySwaggerUiDefault>('@fastify/swagger-ui');
