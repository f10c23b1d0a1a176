/**
 * /api/users (admins): create a user, which returns the user's API token once, list users, and
 * rotate a user's token. /api/me: the token's own user, for any token.
 */
import { z } from 'zod';
import { createToken } from '../../../services/auth.js';
import { createUserSchema } from '../../../services/validation.js';
import { userOf } from '../auth.js';
import type { App, RouteContext } from '../context.js';
import { errors, idParams, userSchema } from '../schemas.js';

export function userRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['users'];
  const tokenField = z.string().describe('The API token, shown this once: fairsend stores only its SHA-256');

  app.post(
    '/api/users',
    {
      config: { auth: 'admin' },
      schema: {
        tags,
        summary: 'Create a user and their API token (admin)',
        body: createUserSchema,
        response: { 201: z.object({ user: userSchema, token: tokenField }), ...errors(400, 401, 403) },
      },
    },
    async (request, reply) => {
      const user = await engine.users.create(request.body);
      return reply
        .code(201)
        .header('cache-control', 'no-store')
        .send({ user, token: await createToken(engine, user.id) });
    },
  );

  app.get(
    '/api/users',
    {
      config: { auth: 'admin' },
      schema: { tags, summary: 'List users (admin)', response: { 200: z.object({ users: z.array(userSchema) }), ...errors(401, 403) } },
    },
    async () => ({ users: await engine.users.list() }),
  );

  app.post(
    '/api/users/:id/token',
    {
      config: { auth: 'admin' },
      schema: {
        tags,
        summary: 'Give a user a new API token; the old one stops working (admin)',
        params: idParams,
        response: { 200: z.object({ token: tokenField }), ...errors(400, 401, 403, 404) },
      },
    },
    async (request, reply) => reply.header('cache-control', 'no-store').send({ token: await createToken(engine, request.params.id) }),
  );

  app.get(
    '/api/me',
    { schema: { tags, summary: 'The user of this token', response: { 200: userSchema, ...errors(401) } } },
    async (request) => engine.users.get(userOf(request).id),
  );
}
