/**
 * Templates are Liquid (LiquidJS): `{{ contact.name }}`, filters (`{{ city | default: "there" }}`,
 * `upcase`, `date`...), conditionals and loops. LiquidJS never runs code from a template; the
 * tags that read files (`include`, `render`, `layout`) are refused here.
 *
 * Variables (the whole model; anything else is refused at creation):
 *
 * | variable                         | value                                            |
 * | -------------------------------- | ------------------------------------------------ |
 * | `contact.name`, `contact.email`  | the contact's fields                             |
 * | `contact.attributes.<key>...`    | the contact's attributes (any depth)             |
 * | `campaign.name`                  | the campaign's name                              |
 * | `unsubscribe_url`                | the recipient's one-click unsubscribe link       |
 * | `name`, `email`                  | short forms of `contact.name`, `contact.email`   |
 * | `<key>` (one word)               | short form of `contact.attributes.<key>`         |
 *
 * The first template syntax, `{{city | there}}` (a fallback after the bar), still works: a bar
 * followed by something that is not a Liquid filter is read as `{{ city | default: "there" }}`
 * (see `translateLegacy`). A fallback that is also a filter's name (`{{city | date}}`) is the
 * filter.
 *
 * A template is compiled once (`compileTemplate`: parse, and at creation the strict checks) and
 * rendered per recipient (`renderMessage`). The html part escapes every value (`outputEscape`);
 * the subject has CR and LF turned into spaces after rendering, so no value can fold or inject a
 * header.
 */
import { Liquid, Output, Tag, TokenKind, type Template, type Variable } from 'liquidjs';
import { ErrorCodes, ValidationError, type ErrorCode } from './kernel/errors.js';
import { derivedTextSource } from './html-text.js';

export type TemplatePart = 'subject' | 'text' | 'html';
export const TEMPLATE_PARTS: readonly TemplatePart[] = ['subject', 'text', 'html'];

/** One thing wrong in a template: where (part, line, column) and what. */
export interface TemplateProblem {
  part: TemplatePart;
  line: number;
  column: number;
  /** The variable at fault, e.g. `contact.phone` (absent for syntax errors). */
  variable?: string;
  message: string;
}

/**
 * A template refused at creation. `code` is TEMPLATE_SYNTAX when a part does not parse,
 * TEMPLATE_VARIABLE when it names a variable that no recipient can supply; `problems` says where.
 */
export class TemplateError extends ValidationError {
  readonly problems: TemplateProblem[];
  constructor(problems: TemplateProblem[], code: ErrorCode) {
    super(
      problems.map((p) => ({ path: p.part, message: `line ${p.line}, column ${p.column}: ${p.message}` })),
      code,
    );
    this.name = 'TemplateError';
    this.problems = problems;
  }
}

function toText(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(toText).join(', ');
  return JSON.stringify(v);
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);

/** Tags that would read files or print template text literally: refused in every template. */
const REFUSED_TAGS: Record<string, string> = {
  include: 'templates cannot include files',
  render: 'templates cannot include files',
  layout: 'templates cannot use layouts',
  raw: 'a raw block would send its {{ }} text literally to every recipient',
};

function makeLiquid(escape: boolean): Liquid {
  const liquid = new Liquid({
    strictFilters: true,
    ownPropertyOnly: true,
    // No file system: an in-memory, empty set of partials.
    templates: {},
    outputEscape: escape ? (v: unknown) => escapeHtml(toText(v)) : toText,
    // A template is the author's, but one must not stall the scheduler for everyone:
    // `{% for i in (1..100000000) %}` is stopped by the memory limit.
    memoryLimit: 1e7,
  });
  for (const [name, reason] of Object.entries(REFUSED_TAGS)) {
    liquid.registerTag(name, {
      parse() {
        throw new Error(`{% ${name} %} is not allowed: ${reason}`);
      },
      render() {
        return '';
      },
    });
  }
  return liquid;
}

const liquids = { plain: makeLiquid(false), html: makeLiquid(true) };
const liquidFor = (part: TemplatePart) => (part === 'html' ? liquids.html : liquids.plain);

/** `{{city | there}}` (the first syntax: a fallback after the bar), not a Liquid filter chain. */
const LEGACY_FALLBACK = /\{\{(\s*)([A-Za-z_][\w-]{0,63})(\s*)\|\s*([^}]*?)\s*\}\}/g;

/**
 * Rewrites the first syntax's fallbacks to Liquid's `default` filter. A bar followed by a
 * registered filter's name (`upcase`, `default: "x"`, `date: "%Y"`) is already Liquid and kept.
 */
export function translateLegacy(source: string): string {
  return source.replace(LEGACY_FALLBACK, (whole, pre: string, name: string, mid: string, fallback: string) => {
    // Already Liquid: a registered filter, or anything shaped like a filter with arguments or a
    // chain (`nofilter: 1`, `a | b`), which Liquid then refuses by name if it does not exist.
    const first = /^([A-Za-z_][\w-]*)\s*(:|\||$)/.exec(fallback);
    if (first && (liquids.plain.filters[first[1]!] || first[2])) return whole;
    if (fallback.includes('|')) return whole;
    return `{{${pre}${name}${mid}| default: ${JSON.stringify(fallback)} }}`;
  });
}

interface Position {
  line: number;
  column: number;
}

function positionOf(err: unknown): Position {
  const token = (err as { token?: { getPosition?: () => [number, number] } }).token;
  const pos = token?.getPosition?.();
  return pos ? { line: pos[0], column: pos[1] } : { line: 1, column: 1 };
}

/** LiquidJS's message without its own `, line:1, col:4` and source excerpt. */
function cleanMessage(err: unknown): string {
  const raw = err instanceof Error ? err.message : String(err);
  return raw.split('\n')[0]!.replace(/, line:\d+, col:\d+$/, '');
}

/** Is a postfix expression one value (`a`, `a == b`, `not a`) rather than `first name`? */
function oneValue(postfix: readonly { kind: number; operator?: string }[]): boolean {
  let depth = 0;
  for (const t of postfix) {
    if (t.kind === TokenKind.Operator) {
      if (t.operator === 'not') {
        if (depth < 1) return false;
      } else {
        if (depth < 2) return false;
        depth--;
      }
    } else depth++;
  }
  return depth === 1;
}

/** The templates nested in a tag (branches of if, body of for, ...). */
function childrenOf(t: Template): Template[] {
  if (!t.children) return [];
  const g = t.children(false, true);
  let r = g.next();
  while (!r.done) r = g.next(r.value as never);
  return r.value;
}

function* eachTemplate(templates: Template[]): Generator<Template> {
  for (const t of templates) {
    yield t;
    yield* eachTemplate(childrenOf(t));
  }
}

/** Variables read by one template node itself (not its children), as LiquidJS's analysis sees them. */
function variablesOf(t: Template): Variable[] {
  if (!t.arguments) return [];
  const node = { arguments: () => t.arguments!() } as unknown as Template;
  return Object.values(liquids.plain.analyzeSync([node], { partials: false }).variables).flat();
}

const at = (v: Variable) => `${v.location.row}:${v.location.col}`;

/** Properties Liquid gives a string or a list: `{{ name.size }}`, `{{ tags.first }}`. */
const SCALAR_PROPS = new Set(['size', 'first', 'last']);
const CONTACT_FIELDS = new Set(['name', 'email']);
export const SHORT_CONTACT_FIELDS = ['name', 'email'] as const;
const ROOTS = new Set(['contact', 'campaign', 'unsubscribe_url', ...SHORT_CONTACT_FIELDS]);

type Classified = { kind: 'attribute'; key: string | null } | { kind: 'known' } | { kind: 'unknown'; message: string };

const scalarTail = (segments: unknown[], from: number) =>
  segments.length === from || (segments.length === from + 1 && SCALAR_PROPS.has(String(segments[from])));

/** What a global variable path is in the model (see the table at the top). */
function classify(v: Variable): Classified {
  const s = v.segments;
  const root = String(s[0]);
  const name = v.toString();
  if (root === 'contact') {
    if (s.length === 1)
      return { kind: 'unknown', message: `contact is not a value: use contact.name, contact.email or contact.attributes.<key>` };
    const field = s[1];
    if (field === 'attributes') {
      if (s.length === 2) return { kind: 'attribute', key: null };
      return { kind: 'attribute', key: typeof s[2] === 'string' ? s[2] : null };
    }
    if (typeof field === 'string' && CONTACT_FIELDS.has(field) && scalarTail(s, 2)) return { kind: 'known' };
    const tail = s.slice(1).join('.');
    return {
      kind: 'unknown',
      message: `unknown variable ${name}: a contact has name, email and attributes (an attribute is contact.attributes.${tail})`,
    };
  }
  if (root === 'campaign') {
    if (s[1] === 'name' && scalarTail(s, 2)) return { kind: 'known' };
    return { kind: 'unknown', message: `unknown variable ${name}: a campaign has only campaign.name` };
  }
  if (root === 'unsubscribe_url' || CONTACT_FIELDS.has(root)) {
    if (scalarTail(s, 1)) return { kind: 'known' };
    return { kind: 'unknown', message: `unknown variable ${name}: ${root} is a text value` };
  }
  if (scalarTail(s, 1)) return { kind: 'attribute', key: root };
  return {
    kind: 'unknown',
    message:
      root === 'attributes'
        ? `unknown variable ${name}: did you mean contact.${name}?`
        : `unknown variable ${name}: a short form is one word (${root}); a path into an attribute is contact.attributes.${name}`,
  };
}

/**
 * The hot path. Most templates are text with `{{ path }}` and `{{ path | default: "text" }}`
 * only; for those a part compiles to a list of strings and lookups rendered by one loop, with
 * LiquidJS's semantics (own properties only, `default` for nil, false, "" and []) but without its
 * per-render context and generators (about 3x faster on W1's template; bench/render.ts). Anything
 * else (tags, other filters, `size`/`first`/`last`) renders through LiquidJS. test/template-render
 * checks that both give the same output on generated templates and data.
 */
type FastNode = string | { path: string[]; fallback: string | undefined };

const LIQUID_PROPS = new Set(['size', 'first', 'last']);

function fastKey(t: { kind: number; content?: unknown }): string | null {
  if ((t.kind === TokenKind.Word || t.kind === TokenKind.Quoted) && typeof t.content === 'string' && !LIQUID_PROPS.has(t.content)) {
    return t.content;
  }
  return null;
}

function fastOf(templates: Template[]): FastNode[] | null {
  const nodes: FastNode[] = [];
  for (const t of templates) {
    if (t.token.kind === TokenKind.HTML) {
      nodes.push((t as unknown as { str: string }).str);
      continue;
    }
    if (!(t instanceof Output)) return null;
    const postfix = t.value.initial.postfix as unknown as {
      kind: number;
      variable?: { kind: number; content?: unknown };
      props?: { kind: number; content?: unknown }[];
    }[];
    if (postfix.length !== 1 || postfix[0]!.kind !== TokenKind.PropertyAccess) return null;
    const access = postfix[0]!;
    const path: string[] = [];
    if (!access.props?.length && !access.variable) return null;
    for (const seg of access.variable ? [access.variable, ...access.props!] : access.props!) {
      const key = fastKey(seg);
      if (key === null) return null;
      path.push(key);
    }
    // The last filter is the output escape (toText, or escapeHtml(toText)); before it, at most `default: "literal"`.
    const filters = t.value.filters.slice(0, -1);
    let fallback: string | undefined;
    if (filters.length === 1) {
      const f = filters[0]!;
      const arg = f.args[0] as unknown as { kind: number; content?: unknown } | undefined;
      if (f.name !== 'default' || f.args.length !== 1 || !arg || arg.kind !== TokenKind.Quoted || typeof arg.content !== 'string')
        return null;
      fallback = arg.content;
    } else if (filters.length > 1) return null;
    nodes.push({ path, fallback });
  }
  return nodes;
}

const hasOwn = Object.prototype.hasOwnProperty;

function renderFast(nodes: FastNode[], scope: Record<string, unknown>, escape: boolean): string {
  let out = '';
  for (const n of nodes) {
    if (typeof n === 'string') {
      out += n;
      continue;
    }
    let v: unknown = scope;
    for (const key of n.path) {
      if (v === null || v === undefined) break;
      v = hasOwn.call(v, key) ? (v as Record<string, unknown>)[key] : undefined;
    }
    if (n.fallback !== undefined) {
      if (typeof v === 'string' || Array.isArray(v)) {
        if (!v.length) v = n.fallback;
      } else if (v === null || v === undefined || v === false) v = n.fallback;
    }
    const text = toText(v);
    out += escape ? escapeHtml(text) : text;
  }
  return out;
}

/** One part, parsed once: LiquidJS's templates, and the fast form when the part allows it. */
export interface CompiledPart {
  templates: Template[];
  fast: FastNode[] | null;
}

const partOf = (templates: Template[]): CompiledPart => ({ templates, fast: fastOf(templates) });

function renderPart(part: CompiledPart, scope: Record<string, unknown>, html: boolean): string {
  if (part.fast) return renderFast(part.fast, scope, html);
  return (html ? liquids.html : liquids.plain).renderSync(part.templates, scope) as string;
}

/** A template parsed once; render it per recipient with `renderMessage`. */
export interface CompiledTemplate {
  subject: CompiledPart;
  html: CompiledPart | null;
  text: CompiledPart | null;
  /**
   * For an html-only template, its text part derived once from the html's source (see
   * services/html-text.ts); null when the text must be derived from each rendered html instead.
   */
  derivedText: CompiledPart | null;
  /** Attribute keys used in short form (`{{ city }}`): put into the scope of each render. */
  shortForms: string[];
  /**
   * Attribute keys printed with no `default` and outside a conditional that tests them: a
   * recipient without one of these would get an empty value (checked at campaign creation).
   */
  required: string[];
}

export interface TemplateSource {
  subject: string;
  html?: string | null;
  text?: string | null;
}

export interface CompileOptions {
  /** Refuse unknown variables and malformed outputs (at creation). Stored templates compile without. */
  strict?: boolean;
}

interface PartResult {
  templates: Template[];
  shortForms: Set<string>;
  required: Set<string>;
}

function compilePart(
  part: TemplatePart,
  source: string,
  strict: boolean,
  problems: TemplateProblem[],
  syntax: { bad: boolean },
): PartResult | null {
  const liquid = liquidFor(part);
  let templates: Template[];
  try {
    templates = liquid.parse(translateLegacy(source));
  } catch (err) {
    syntax.bad = true;
    problems.push({ part, ...positionOf(err), message: cleanMessage(err) });
    return null;
  }
  const shortForms = new Set<string>();
  const required = new Set<string>();
  const analysis = liquid.analyzeSync(templates, { partials: false });
  const globals = Object.values(analysis.globals).flat();
  const globalAt = new Set(globals.map(at));
  for (const v of globals) {
    const c = classify(v);
    if (c.kind === 'attribute' && v.segments.length >= 1 && !ROOTS.has(String(v.segments[0]))) shortForms.add(String(v.segments[0]));
    if (strict && c.kind === 'unknown') {
      problems.push({ part, line: v.location.row, column: v.location.col, variable: v.toString(), message: c.message });
    }
  }
  if (strict) {
    for (const t of eachTemplate(templates)) {
      const token = t.token as { content?: string; getPosition(): number[] };
      const [line = 1, column = 1] = token.getPosition();
      const where = { part, line, column };
      if (t instanceof Output && !oneValue(t.value.initial.postfix as never)) {
        syntax.bad = true;
        problems.push({
          ...where,
          message: `{{ ${token.content ?? ''} }} is not one value (a variable name is one word or a dotted path)`,
        });
      }
      if (token.content && /\{\{|\{%|\}\}|%\}/.test(token.content)) {
        syntax.bad = true;
        problems.push({ ...where, message: 'a literal {{ or {% inside a tag would reach the recipient as text' });
      }
    }
  }
  collectRequired(templates, new Set(), globalAt, required);
  return { templates, shortForms, required };
}

/** The attribute key a variable reads, or null (a contact field, a built-in, a local). */
function attributeKey(v: Variable): string | null {
  const c = classify(v);
  return c.kind === 'attribute' ? c.key : null;
}

function collectRequired(templates: Template[], guarded: Set<string>, globalAt: Set<string>, out: Set<string>): void {
  for (const t of templates) {
    if (t instanceof Output) {
      if (t.value.filters.some((f) => f.name === 'default')) continue;
      for (const v of variablesOf(t)) {
        if (!globalAt.has(at(v))) continue;
        const key = attributeKey(v);
        if (key !== null && !guarded.has(key)) out.add(key);
      }
      continue;
    }
    let inner = guarded;
    if (t instanceof Tag && ['if', 'unless', 'case'].includes(t.name)) {
      inner = new Set(guarded);
      for (const v of variablesOf(t)) {
        const key = attributeKey(v);
        if (key !== null) inner.add(key);
      }
    }
    collectRequired(childrenOf(t), inner, globalAt, out);
  }
}

/**
 * Parses each part once. With `strict` (template creation), refuses syntax errors, unknown
 * variables, `{{ first name }}` and literal braces with a TemplateError naming each (part, line,
 * column). Without, only a part that does not parse is refused.
 */
export function compileTemplate(source: TemplateSource, opts: CompileOptions = {}): CompiledTemplate {
  const strict = opts.strict ?? false;
  const problems: TemplateProblem[] = [];
  const syntax = { bad: false };
  const parts: Partial<Record<TemplatePart, PartResult | null>> = {};
  for (const part of TEMPLATE_PARTS) {
    const src = source[part];
    if (src === undefined || src === null || src === '') continue;
    parts[part] = compilePart(part, src, strict, problems, syntax);
  }
  if (problems.length) throw new TemplateError(problems, syntax.bad ? ErrorCodes.TEMPLATE_SYNTAX : ErrorCodes.TEMPLATE_VARIABLE);
  const shortForms = new Set<string>();
  const required = new Set<string>();
  for (const p of Object.values(parts)) {
    for (const s of p!.shortForms) shortForms.add(s);
    for (const r of p!.required) required.add(r);
  }
  return {
    subject: partOf(parts.subject?.templates ?? []),
    html: parts.html ? partOf(parts.html.templates) : null,
    text: parts.text ? partOf(parts.text.templates) : null,
    derivedText: parts.html && !parts.text ? deriveText(source.html!) : null,
    shortForms: [...shortForms].sort(),
    required: [...required].sort(),
  };
}

/** The derived text part, parsed as a text part is (no escaping); null if it cannot be derived or parsed. */
function deriveText(htmlSource: string): CompiledPart | null {
  const text = derivedTextSource(translateLegacy(htmlSource));
  if (text === null) return null;
  try {
    return partOf(liquidFor('text').parse(text));
  } catch {
    return null; // derived per message instead
  }
}

/** What a message is rendered with. */
export interface RenderVars {
  contact: { name: string | null; email: string; attributes: Record<string, unknown> };
  campaign: { name: string | null };
  unsubscribeUrl: string;
}

export interface RenderedMessage {
  subject: string;
  html?: string;
  text?: string;
}

/** No value can fold or inject a header: CR/LF become spaces, other control characters go. */
export function headerSafe(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\r\n]+/g, ' ').replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, '');
}

export function renderMessage(t: CompiledTemplate, vars: RenderVars): RenderedMessage {
  const { contact } = vars;
  const scope: Record<string, unknown> = {
    contact,
    campaign: vars.campaign,
    unsubscribe_url: vars.unsubscribeUrl,
    name: contact.name,
    email: contact.email,
  };
  for (const key of t.shortForms) {
    if (Object.prototype.hasOwnProperty.call(contact.attributes, key)) scope[key] = contact.attributes[key];
  }
  const out: RenderedMessage = { subject: headerSafe(renderPart(t.subject, scope, false)) };
  if (t.html) out.html = renderPart(t.html, scope, true);
  if (t.text) out.text = renderPart(t.text, scope, false);
  else if (t.derivedText) out.text = renderPart(t.derivedText, scope, false).trim();
  return out;
}

/** Attribute keys the templates need from every recipient (see CompiledTemplate.required). */
export function requiredAttributes(templates: CompiledTemplate[]): string[] {
  return [...new Set(templates.flatMap((t) => t.required))].sort();
}
