/**
 * MJML: an html part that starts with `<mjml>` is compiled to responsive HTML once, at template
 * creation, with the `mjml` package (loaded on first use: about 150 packages that the sending path
 * never needs). The stored html is the compiled HTML; the Liquid inside (`{{ contact.name }}`,
 * `{% if %}`) passes through as text and is rendered per recipient like any html.
 *
 * MJML drops what it does not understand, for example a `{% for %}` placed directly between two
 * `<mj-section>`s. Every Liquid tag and output of the source must therefore appear verbatim in
 * the compiled HTML, or the template is refused naming the first one lost: nothing is sent that
 * the author did not mean.
 */
import { Tokenizer, TokenKind } from 'liquidjs';
import { ErrorCodes } from './kernel/errors.js';
import { TemplateError } from './template-render.js';

export function isMjml(html: string | null | undefined): html is string {
  return !!html && /^\s*<mjml[\s>]/i.test(html);
}

type Mjml2Html = typeof import('mjml-core').default;
let mjml2html: Mjml2Html | undefined;

const refuse = (line: number, message: string) =>
  new TemplateError([{ part: 'html', line, column: 1, message }], ErrorCodes.TEMPLATE_SYNTAX);

/** Compiles MJML to HTML, or refuses it (TemplateError on the html part, with the line). */
export async function compileMjml(source: string): Promise<string> {
  const include = /<mj-include\b/i.exec(source);
  if (include)
    throw refuse(source.slice(0, include.index).split('\n').length, 'MJML: <mj-include> is not allowed (templates cannot read files)');
  mjml2html ??= ((await import('mjml')) as unknown as { default: Mjml2Html }).default;
  let html: string;
  try {
    // strict: an unknown element or attribute is an error, not a warning. No mj-include (no
    // file reads), no .mjmlconfig.
    const out = await mjml2html(source, { validationLevel: 'strict', ignoreIncludes: true, keepComments: false });
    html = out.html;
  } catch (err) {
    const first = (err as { errors?: { line?: number; message?: string }[] }).errors?.[0];
    throw refuse(first?.line ?? 1, `MJML: ${first?.message ?? (err instanceof Error ? err.message : String(err))}`);
  }
  for (const token of new Tokenizer(source).readTopLevelTokens()) {
    if (token.kind !== TokenKind.Output && token.kind !== TokenKind.Tag) continue;
    const text = source.slice(token.begin, token.end);
    if (!html.includes(text)) {
      const [line = 1] = token.getPosition();
      throw refuse(line, `MJML dropped or changed ${text}: put Liquid inside <mj-text> or <mj-raw>`);
    }
  }
  return html;
}
