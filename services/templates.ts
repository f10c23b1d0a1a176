import { NotFoundError, ValidationError } from './kernel/errors.js';
import type { Template } from '../models/index.js';
import type { ServiceContext } from './context.js';
import { compileTemplate } from './template-render.js';
import { compileMjml, isMjml } from './template-mjml.js';
import { createTemplateSchema, parseId, parseInput, type CreateTemplateInput } from './validation.js';

export interface TemplateView {
  id: number;
  userId: number;
  name: string;
  subject: string;
  html: string | null;
  text: string | null;
}

const toView = (t: Template): TemplateView => ({
  id: t.id,
  userId: t.userId,
  name: t.name,
  subject: t.subject,
  html: t.html,
  text: t.text,
});

export function createTemplatesApi(ctx: ServiceContext) {
  const { Template, User } = ctx.models;
  return {
    async create(userId: number, input: CreateTemplateInput): Promise<TemplateView> {
      parseId(userId, 'userId');
      const v = parseInput(createTemplateSchema, input);
      if (!(await User.findByPk(userId, { attributes: ['id'] }))) {
        throw new ValidationError([{ path: 'userId', message: `user ${userId} not found` }]);
      }
      // Refuses (TemplateError, nothing written) a syntax error or a variable no recipient can supply.
      compileTemplate(v, { strict: true });
      let html = v.html ?? null;
      if (isMjml(html)) {
        // Responsive HTML from MJML, once; the check above ran on the source, so lines are the author's.
        html = await compileMjml(html);
        compileTemplate({ subject: v.subject, html }, { strict: true });
      }
      const t = await Template.create({ userId, name: v.name, subject: v.subject, html, text: v.text ?? null });
      return toView(t);
    },
    async get(userId: number, id: number): Promise<TemplateView> {
      const t = await Template.findOne({ where: { id: parseId(id, 'templateId'), userId: parseId(userId, 'userId') } });
      if (!t) throw new NotFoundError('template', id);
      return toView(t);
    },
    async list(userId: number): Promise<TemplateView[]> {
      return (await Template.findAll({ where: { userId: parseId(userId, 'userId') }, order: [['id', 'ASC']] })).map(toView);
    },
  };
}
export type TemplatesApi = ReturnType<typeof createTemplatesApi>;
