/** /api/templates: create, list, get; a user's own (an admin may act for `user_id`). */
import { z } from 'zod';
import { createTemplateSchema } from '../../../services/validation.js';
import { scopeUserId } from '../auth.js';
import type { App, RouteContext } from '../context.js';
import { errors, idParams, templateSchema, userQuery } from '../schemas.js';

export function templateRoutes(app: App, ctx: RouteContext): void {
  const { engine } = ctx;
  const tags = ['templates'];

  app.post(
    '/api/templates',
    {
      schema: {
        tags,
        summary: 'Create a template',
        description:
          'Liquid: `{{ contact.name }}`, `{{ contact.email }}`, `{{ contact.attributes.city }}` (short forms `{{ name }}`, `{{ email }}`, `{{ city }}`), `{{ campaign.name }}`, `{{ unsubscribe_url }}`; filters such as `{{ city | default: "there" }}`; `{% if %}` and `{% for %}`. An unknown variable or a syntax error is refused (TEMPLATE_VARIABLE, TEMPLATE_SYNTAX) naming the part and line.',
        querystring: userQuery,
        body: createTemplateSchema,
        response: { 201: templateSchema, ...errors(400, 401, 403) },
      },
    },
    async (request, reply) => reply.code(201).send(await engine.templates.create(scopeUserId(request, request.query.userId), request.body)),
  );

  app.get(
    '/api/templates',
    {
      schema: {
        tags,
        summary: 'List templates',
        querystring: userQuery,
        response: { 200: z.object({ templates: z.array(templateSchema) }), ...errors(401, 403) },
      },
    },
    async (request) => ({ templates: await engine.templates.list(scopeUserId(request, request.query.userId)) }),
  );

  app.get(
    '/api/templates/:id',
    {
      schema: {
        tags,
        summary: 'One template (404 when it is not yours)',
        params: idParams,
        querystring: userQuery,
        response: { 200: templateSchema, ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => engine.templates.get(scopeUserId(request, request.query.userId), request.params.id),
  );
}
