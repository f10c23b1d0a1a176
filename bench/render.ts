/**
 * Rendering speed per message: LiquidJS (services/template-render.ts, compiled once) against the
 * hand-written `{{variable}}` renderer it replaced (kept in bench/lib/legacy-render.ts for this).
 * Pure CPU, no database, no SMTP: each case renders N messages for N different recipients, the
 * two renderers taking turns within each round, and the ratio is taken per round (same machine
 * state) before its median is reported, so a busy machine moves both sides together.
 *
 *   npm run build && node dist/bench/render.js [--rounds=9] [--n=20000]
 *
 * Cases:
 * - w1: W1's template (subject and ~300 bytes of text, `{{name}}`, `{{city | your town}}`);
 * - html: ~1 KB of html with four values and no text part, so the text part is derived from the
 *   rendered html per message (regex chain before, html-to-text now);
 * - liquid: what only Liquid can do (dotted paths, a filter, a conditional, a loop), new only.
 */
import { compileTemplate, renderMessage, type CompiledTemplate, type RenderVars } from '../services/template-render.js';
import { htmlToText } from '../services/delivery/message.js';
import * as legacy from './lib/legacy-render.js';
import { TEMPLATE } from './lib/fixtures.js';
import { median } from './lib/stats.js';

const args = process.argv.slice(2);
const arg = (name: string, def: number) => Number(args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? def);
const ROUNDS = arg('rounds', 9);
const N = arg('n', 20000);
/**
 * What one W1 message costs the engine, in µs of one core: the nodemailer-alone ceiling of a full
 * W1 on this machine (1,974 msg/s, docs/performance.md) is 507 µs a message. The renderer's share of
 * W1 is its time per message against that; fairsend itself spends more per message (0.75 ms of CPU),
 * so the ceiling's figure makes the share look larger, never smaller.
 */
const W1_US_PER_MESSAGE = arg('w1-us', 507);

interface Source {
  subject: string;
  html: string | null;
  text: string | null;
}

const HTML: Source = {
  subject: 'Your {{city | town}} letter, {{name}}',
  html:
    '<html><body><table width="100%"><tr><td><h1>Hello {{name}},</h1>' +
    '<p>This is the monthly letter for readers in {{city | your town}}. Nothing in it matters: it is a benchmark ' +
    'message of about one kilobyte of html, rendered per recipient like a real campaign, with a few ' +
    'paragraphs, a list and a link, so that the text part has something to derive.</p>' +
    '<ul><li>First point, about the weather in {{city | your town}}</li><li>Second point, about nothing</li>' +
    '<li>Third point, longer than the others so that lines wrap somewhere near the end of this item</li></ul>' +
    '<p>You receive this as {{email}}. <a href="{{unsubscribe_url}}">Unsubscribe</a> at any time.</p>' +
    '<p>Best regards,<br>The bench team</p></td></tr></table></body></html>',
  text: null,
};

const LIQUID: Source = {
  subject: 'News for {{ contact.name }} in {{ contact.attributes.city | upcase }}',
  html: null,
  text:
    'Hello {{ contact.name | default: "reader" }},\n\n{% if contact.attributes.plan == "pro" %}Thanks for going pro.{% else %}Try pro!{% endif %}\n' +
    '{% for item in contact.attributes.items %}- {{ item }}\n{% endfor %}\nThe {{ campaign.name }} team. {{ unsubscribe_url }}',
};

interface Recipient {
  name: string;
  email: string;
  attributes: Record<string, unknown>;
}

const recipients: Recipient[] = Array.from({ length: N }, (_, i) => ({
  name: `Reader ${i}`,
  email: `r${i}@example.test`,
  attributes: { city: i % 3 ? 'Lyon' : 'Osaka', plan: i % 5 ? 'free' : 'pro', items: ['a', 'b', 'c'] },
}));
const unsubscribe = (i: number) => `https://mail.example.test/u/${i}.1.abcdefghijklmnopqrstuv`;

/** The old path: the placeholder renderer, and the regex text part when there is only html. */
function oldRender(t: Source): number {
  let bytes = 0;
  for (let i = 0; i < N; i++) {
    const r = recipients[i]!;
    const vars = { ...r.attributes, email: r.email, name: r.name, unsubscribe_url: unsubscribe(i) };
    const m = legacy.renderMessage(t, vars);
    const text = m.text ?? (m.html ? legacy.htmlToText(m.html) : '');
    bytes += m.subject.length + text.length + (m.html?.length ?? 0);
  }
  return bytes;
}

/** The new path, as services/delivery/message.ts does it. */
function newRender(t: CompiledTemplate): number {
  let bytes = 0;
  for (let i = 0; i < N; i++) {
    const r = recipients[i]!;
    const vars: RenderVars = {
      contact: { name: r.name, email: r.email, attributes: r.attributes },
      campaign: { name: 'Bench' },
      unsubscribeUrl: unsubscribe(i),
    };
    const m = renderMessage(t, vars);
    const text = m.text ?? (m.html ? htmlToText(m.html) : '');
    bytes += m.subject.length + text.length + (m.html?.length ?? 0);
  }
  return bytes;
}

function time(fn: () => number): number {
  const started = process.hrtime.bigint();
  if (fn() <= 0) throw new Error('rendered nothing');
  return Number(process.hrtime.bigint() - started) / N / 1000; // microseconds per message
}

const fmt = (us: number) => `${us.toFixed(2)} µs`;

function main() {
  const cases: { id: string; source: Source; old: boolean }[] = [
    { id: 'w1', source: TEMPLATE, old: true },
    { id: 'html', source: HTML, old: true },
    { id: 'liquid', source: LIQUID, old: false },
  ];
  console.log(`rendering per message: ${ROUNDS} rounds of ${N.toLocaleString('en-US')} messages, old and new taking turns\n`);
  console.log(
    '| case | hand-written (median) | LiquidJS (median) | ratio new/old (median of rounds, min-max) | change in W1 time per message (goal: lose at most 2 %) |',
  );
  console.log('| --- | --- | --- | --- | --- |');
  for (const c of cases) {
    const compiled = compileTemplate(c.source);
    // Warm both paths (JIT) outside the figures.
    newRender(compiled);
    if (c.old) oldRender(c.source);
    const olds: number[] = [];
    const news: number[] = [];
    const ratios: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const n = time(() => newRender(compiled));
      news.push(n);
      if (c.old) {
        const o = time(() => oldRender(c.source));
        olds.push(o);
        ratios.push(n / o);
      }
    }
    const ratio = c.old ? `${median(ratios).toFixed(2)}x (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)})` : '-';
    const share = c.old ? (median(news) - median(olds)) / W1_US_PER_MESSAGE : null;
    const w1 =
      share === null
        ? '-'
        : `${share >= 0 ? '+' : ''}${(share * 100).toFixed(2)} % of ${W1_US_PER_MESSAGE} µs (${share <= 0.02 ? 'met' : 'NOT met'})`;
    console.log(`| ${c.id} | ${c.old ? fmt(median(olds)) : '-'} | ${fmt(median(news))} | ${ratio} | ${w1} |`);
  }
}

main();
