/**
 * The hand-written `{{variable}}` renderer fairsend used before LiquidJS (services/template-render.ts
 * up to the Liquid change), kept verbatim here only so bench/render.ts can compare rendering speed
 * per message. Not used by fairsend. Its text-from-html regex chain is appended, as the old
 * services/delivery/message.ts had it.
 *
 * `{{variable}}` templates. A placeholder names a contact field (`email`, `name`), a key of the
 * contact's `attributes`, or a built-in (`unsubscribe_url`); `{{city | there}}` gives a fallback
 * used when the value is missing. Values are HTML-escaped in the html part, and CR/LF are folded
 * to spaces in the subject, so a contact's data can never inject a header.
 */

export const CONTACT_FIELDS = ['email', 'name'] as const;
export const BUILTIN_VARIABLES = ['unsubscribe_url'] as const;

const PLACEHOLDER = /\{\{\s*([A-Za-z_][\w-]{0,63})\s*(?:\|\s*([^}]*?)\s*)?\}\}/g;

export interface Placeholder {
  name: string;
  fallback?: string;
}

export function extractPlaceholders(source: string | null | undefined): Placeholder[] {
  if (!source) return [];
  const out: Placeholder[] = [];
  for (const m of source.matchAll(PLACEHOLDER)) {
    out.push(m[2] !== undefined ? { name: m[1]!, fallback: m[2] } : { name: m[1]! });
  }
  return out;
}

/**
 * Variables a recipient must supply from `attributes`: placeholders that are not contact fields
 * or built-ins and have no fallback.
 */
export function requiredAttributes(...sources: (string | null | undefined)[]): string[] {
  const names = new Set<string>();
  for (const s of sources) {
    for (const p of extractPlaceholders(s)) {
      if (p.fallback !== undefined) continue;
      if ((CONTACT_FIELDS as readonly string[]).includes(p.name) || (BUILTIN_VARIABLES as readonly string[]).includes(p.name)) continue;
      names.add(p.name);
    }
  }
  return [...names].sort();
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);

export type RenderMode = 'text' | 'html' | 'header';

function stringify(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

export function render(source: string, vars: Record<string, unknown>, mode: RenderMode): string {
  return source.replace(PLACEHOLDER, (_m, name: string, fallback: string | undefined) => {
    let v = stringify(vars[name]) ?? fallback ?? '';
    if (mode === 'html') v = escapeHtml(v);
    else if (mode === 'header') v = v.replace(/[\r\n]+/g, ' ');
    return v;
  });
}

/** A compiled template: parts rendered per recipient, with the constant work done once. */
export interface RenderedMessage {
  subject: string;
  html?: string;
  text?: string;
}

export function renderMessage(
  template: { subject: string; html?: string | null; text?: string | null },
  vars: Record<string, unknown>,
): RenderedMessage {
  const out: RenderedMessage = { subject: render(template.subject, vars, 'header') };
  if (template.html) out.html = render(template.html, vars, 'html');
  if (template.text) out.text = render(template.text, vars, 'text');
  return out;
}

/** A readable text part from html, for templates that have only html. */
export function htmlToText(html: string): string {
  return html
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, '')
    .replace(/<br\s*\/?>/gi, '\n')
    .replace(/<\/(p|div|h[1-6]|li|tr)>/gi, '\n')
    .replace(/<li[^>]*>/gi, '- ')
    .replace(/<[^>]+>/g, '')
    .replace(/&nbsp;/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}
