/**
 * The plain-text part derived from html (html-to-text), for templates that have only html. One
 * converter, compiled once, serves both ways of deriving it: from the template's html once at
 * compile time (services/template-render.ts, `derivedTextSource`) and, where that cannot be done
 * faithfully, from each rendered message's html.
 */
import { compile } from 'html-to-text';

const htmlConverter = compile({
  wordwrap: 78,
  selectors: [
    { selector: 'img', format: 'skip' },
    { selector: 'a', options: { hideLinkHrefIfSameAsText: true } },
    // Headings keep their case: html-to-text's capitals would also shout a recipient's name.
    ...(['h1', 'h2', 'h3', 'h4', 'h5', 'h6'] as const).map((selector) => ({ selector, options: { uppercase: false } })),
    { selector: 'table', options: { uppercaseHeaderCells: false } },
  ],
});

/** A readable text part from (rendered) html. */
export function htmlToText(html: string): string {
  return htmlConverter(html).trim();
}

/** Output tags only: `{{ ... }}`. A `{% ... %}` tag makes the html's text per message instead. */
const OUTPUT_TAG = /\{\{[\s\S]*?\}\}/g;
const MARK_OPEN = '\u27e6';
const MARK_CLOSE = '\u27e7';
const MARK = /\u27e6(\d+)\u27e7/g;

/**
 * The text part's template source, derived once from an html template's source: each `{{ ... }}`
 * tag stands in the html as a marker that html-to-text keeps as a word (`⟦3⟧`: no space, no case),
 * the html becomes text, and the markers become their tags again. Rendering that text template per
 * recipient costs what a text template costs, where html-to-text on each rendered message costs
 * about 5x the whole render (bench/render.ts, html case).
 *
 * Null, and the text is then derived from each rendered message, whenever that would not say the
 * same: a block tag (`{% if %}`, `{% for %}`: the text around a branch would be laid out once for
 * every branch), a tag that html-to-text drops or repeats (in an `img`, in a `style`, a link whose
 * text is its href), tags out of order, or text that already holds a marker or a `{{` of its own.
 */
export function derivedTextSource(htmlSource: string): string | null {
  if (htmlSource.includes('{%') || htmlSource.includes(MARK_OPEN) || htmlSource.includes(MARK_CLOSE)) return null;
  const tags: string[] = [];
  const marked = htmlSource.replace(OUTPUT_TAG, (tag) => `${MARK_OPEN}${tags.push(tag) - 1}${MARK_CLOSE}`);
  if (marked.includes('{{') || marked.includes('}}')) return null;
  const text = htmlToText(marked);
  // Entities in the html (&#123;&#123;) would become a tag of the text template: not ours.
  if (/\{\{|\{%|\}\}|%\}/.test(text)) return null;
  const seen = [...text.matchAll(MARK)].map((m) => Number(m[1]));
  if (seen.length !== tags.length || seen.some((n, i) => n !== i)) return null;
  // The proof: with a word in place of each tag, deriving first and converting first give the same
  // text (this catches any transformation html-to-text makes around a tag: case, joining, ...).
  // The same tag gets the same word, as it gets the same value (a link whose text is its href);
  // a word as long as a marker (lines wrap at the same places) and in lower case (capitals show).
  const probe = (tag: string) => `q${tags.indexOf(tag)}q`;
  const convertedFirst = htmlToText(htmlSource.replace(OUTPUT_TAG, probe));
  if (convertedFirst !== text.replace(MARK, (_, n: string) => probe(tags[Number(n)]!))) return null;
  return text.replace(MARK, (_, n: string) => tags[Number(n)]!);
}
