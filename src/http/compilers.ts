/**
 * Fastify's validator and serializer compilers for zod schemas, at the snake_case edge (casing.ts).
 *
 * Validation: the request part is camelized, then parsed by the route's zod schema (the same
 * schemas the programmatic API uses); a failure is a ValidationError naming every field with its
 * wire path (`contacts[1].email`, `recipient_rule.include_tags[0]`), mapped to a 400 by errors.ts.
 *
 * Serialization: the handler's result is encoded by the route's response schema (which drops
 * anything the schema does not name: a credential added to a view by mistake never leaves), then
 * snake-cased and stringified. Response schemas are therefore both the OpenAPI documentation and
 * a whitelist.
 */
import type { FastifySchemaCompiler, FastifySerializerCompiler } from 'fastify';
import { z } from 'zod';
import { ValidationError } from '../../services/kernel/errors.js';
import { issuesFrom } from '../../services/validation.js';
import { camelizeKeys, depthOf, DuplicateKeyError, MAX_DEPTH, snakeKeys, toSnake } from './casing.js';

export const validatorCompiler: FastifySchemaCompiler<z.ZodType> =
  ({ schema, httpPart }) =>
  (data) => {
    // Deeply nested input would overflow the stack of every recursive walk after this one.
    if (depthOf(data) > MAX_DEPTH) {
      return { error: new ValidationError([{ path: '', message: `is nested more than ${MAX_DEPTH} levels deep` }]) };
    }
    let input: unknown;
    try {
      input = httpPart === 'headers' ? data : camelizeKeys(data);
    } catch (err) {
      if (!(err instanceof DuplicateKeyError)) throw err;
      return { error: new ValidationError([{ path: err.path, message: `is given twice (${err.keys.join(' and ')})` }]) };
    }
    const r = schema.safeParse(input);
    if (r.success) return { value: r.data };
    const prefix = httpPart === 'querystring' ? ['query'] : httpPart === 'params' ? ['params'] : [];
    const issues = issuesFrom(r.error, prefix).map((issue, i) => {
      const raw = r.error.issues[i]!;
      // Name unknown fields as the client wrote them (they were camelized for the schema).
      return raw.code === 'unrecognized_keys' ? { ...issue, message: `unknown field(s): ${raw.keys.map(toSnake).join(', ')}` } : issue;
    });
    return { error: new ValidationError(issues) };
  };

export class ResponseSchemaError extends Error {
  constructor(method: string, url: string, cause: z.ZodError) {
    super(`response of ${method} ${url} does not match its schema: ${cause.message}`, { cause });
    this.name = 'ResponseSchemaError';
  }
}

export const serializerCompiler: FastifySerializerCompiler<z.ZodType> =
  ({ schema, method, url }) =>
  (data) => {
    const r = z.safeEncode(schema, data);
    if (!r.success) throw new ResponseSchemaError(method, url, r.error);
    return JSON.stringify(snakeKeys(r.data));
  };
