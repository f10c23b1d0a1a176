/** `fairsend templates create | list`: a user's message templates, created from files. */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { ValidationError } from '../../services/kernel/errors.js';
import { table } from './format.js';
import { intArg, jsonOption, type CliContext } from './context.js';

async function fileText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

export function registerTemplates(program: Command, ctx: CliContext): void {
  const { out, json, withEngine } = ctx;
  const templates = program.command('templates').description("a user's message templates");
  templates
    .command('create')
    .description('create a template from files (the subject from --subject or --subject-file; a text part, an HTML part, or both)')
    .addOption(new Option('--user <id>', 'owner').argParser(intArg('user', 1)).makeOptionMandatory())
    .requiredOption('--name <name>', 'template name')
    .option('--subject <subject>', 'subject line')
    .option('--subject-file <path>', 'file holding the subject line')
    .option('--text-file <path>', 'plain-text part')
    .option('--html-file <path>', 'HTML part')
    .action(async (o: { user: number; name: string; subject?: string; subjectFile?: string; textFile?: string; htmlFile?: string }) => {
      if ((o.subject === undefined) === (o.subjectFile === undefined))
        throw new ValidationError([{ path: 'subject', message: 'give either --subject or --subject-file' }]);
      const subject = o.subject ?? (await fileText(o.subjectFile!)).trim();
      const text = o.textFile ? await fileText(o.textFile) : undefined;
      const html = o.htmlFile ? await fileText(o.htmlFile) : undefined;
      await withEngine(async (engine) => {
        const t = await engine.templates.create(o.user, {
          name: o.name,
          subject,
          ...(text !== undefined ? { text } : {}),
          ...(html !== undefined ? { html } : {}),
        });
        const parts = [t.text !== null ? 'text' : '', t.html !== null ? 'html' : ''].filter(Boolean).join(' + ');
        out(`template #${t.id} ${t.name} for user #${t.userId}: "${t.subject}" (${parts || 'no body'})\n`);
      });
    });
  templates
    .command('list')
    .description("a user's templates")
    .addOption(new Option('--user <id>', 'owner').argParser(intArg('user', 1)).makeOptionMandatory())
    .addOption(jsonOption())
    .action(async (o: { user: number; json?: boolean }) => {
      await withEngine(async (engine) => {
        const list = await engine.templates.list(o.user);
        if (o.json) return json(list);
        out(
          table(
            ['id', 'name', 'subject', 'parts'],
            list.map((t) => [
              t.id,
              t.name,
              t.subject,
              [t.text !== null ? 'text' : '', t.html !== null ? 'html' : ''].filter(Boolean).join('+'),
            ]),
          ),
        );
      });
    });
}
