/**
 * The template language (services/template-render.ts) as pure code: what renders, what is refused
 * at creation and where, and what no value can do to the message.
 */
import fc from 'fast-check';
import { ErrorCodes } from '../services/kernel/errors.js';
import {
  compileTemplate,
  renderMessage,
  requiredAttributes,
  TemplateError,
  translateLegacy,
  type CompiledTemplate,
  type RenderVars,
  type TemplateSource,
} from '../services/template-render.js';
import { buildMessage, compileForSending, htmlToText } from '../services/delivery/message.js';

const vars = (over: Partial<RenderVars['contact']> = {}, attributes: Record<string, unknown> = {}): RenderVars => ({
  contact: { name: 'Ada', email: 'ada@example.test', attributes: { city: 'Lyon', ...attributes }, ...over },
  campaign: { name: 'Spring news' },
  unsubscribeUrl: 'https://mail.example.test/u/1.2.x',
});

const render = (src: TemplateSource, v: RenderVars = vars()) => renderMessage(compileTemplate(src, { strict: true }), v);
const text = (t: string, v?: RenderVars) => render({ subject: 's', text: t }, v).text;

function refusal(src: TemplateSource): TemplateError {
  try {
    compileTemplate(src, { strict: true });
  } catch (err) {
    expect(err).toBeInstanceOf(TemplateError);
    return err as TemplateError;
  }
  throw new Error('template was accepted');
}

describe('rendering', () => {
  it('reads dotted paths, the short forms, the campaign and the unsubscribe link', () => {
    expect(
      text(
        '{{ contact.name }} <{{ contact.email }}> in {{ contact.attributes.city }} / {{ name }} {{ email }} {{ city }} / {{ campaign.name }} / {{ unsubscribe_url }}',
      ),
    ).toBe('Ada <ada@example.test> in Lyon / Ada ada@example.test Lyon / Spring news / https://mail.example.test/u/1.2.x');
    expect(text('{{ contact.attributes.address.zip }}', vars({}, { address: { zip: '69001' } }))).toBe('69001');
    expect(text('{{ contact.attributes["city"] }}')).toBe('Lyon');
  });

  it('applies filters', () => {
    expect(text('{{ name | upcase }} {{ city | downcase }} {{ name | size }} {{ "2026-11-30T10:00:00Z" | date: "%Y-%m-%d" }}')).toBe(
      'ADA lyon 3 2026-11-30',
    );
    expect(text('{{ contact.attributes.tags | join: ", " }}', vars({}, { tags: ['a', 'b'] }))).toBe('a, b');
  });

  it('gives a default for a missing, null or empty value', () => {
    const t = '{{ zip | default: "none" }} {{ contact.attributes.zip | default: "none" }} {{ name | default: "friend" }}';
    expect(text(t)).toBe('none none Ada');
    expect(text(t, vars({ name: null }, { zip: '' }))).toBe('none none friend');
    expect(text(t, vars({ name: '' }, { zip: null }))).toBe('none none friend');
    expect(text(t, vars({}, { zip: '75001' }))).toBe('75001 75001 Ada');
  });

  it('keeps the first syntax: {{city | there}} is a default', () => {
    expect(translateLegacy('{{city | your town}}')).toBe('{{city | default: "your town" }}');
    expect(translateLegacy('{{ city | upcase }}')).toBe('{{ city | upcase }}');
    expect(translateLegacy('{{ x | nofilter: 1 }}')).toBe('{{ x | nofilter: 1 }}');
    expect(text('{{zip | your "town"}} {{ city | there }}')).toBe('your "town" Lyon');
  });

  it('runs conditionals and loops', () => {
    const t =
      '{% if contact.attributes.plan == "pro" %}PRO{% elsif plan %}{{ plan }}{% else %}free{% endif %}:' +
      '{% for item in contact.attributes.items %}[{{ forloop.index }} {{ item.name }}]{% endfor %}' +
      '{% unless vip %}!{% endunless %}{% assign greeting = "Hi" %}{{ greeting }}';
    expect(text(t, vars({}, { plan: 'pro', items: [{ name: 'a' }, { name: 'b' }] }))).toBe('PRO:[1 a][2 b]!Hi');
    expect(text(t, vars({}, { plan: 'basic', vip: true }))).toBe('basic:Hi');
    expect(text(t)).toBe('free:!Hi');
  });

  it('escapes every value in the html part, and only there', () => {
    const v = vars({ name: 'Linus <script>alert(1)</script>' }, { city: `"Q" & 'A'` });
    const m = render({ subject: '{{ name }}', html: '<p title="{{ city }}">{{ name }} {{ city | upcase }}</p>', text: '{{ name }}' }, v);
    expect(m.html).toBe(
      '<p title="&quot;Q&quot; &amp; &#39;A&#39;">Linus &lt;script&gt;alert(1)&lt;/script&gt; &quot;Q&quot; &amp; &#39;A&#39;</p>',
    );
    expect(m.text).toBe('Linus <script>alert(1)</script>');
    expect(m.subject).toBe('Linus <script>alert(1)</script>');
  });

  it('never lets a value fold or inject a header', () => {
    const v = vars({ name: 'Ada\r\nBcc: victim@example.test' }, { city: 'Lyon\n\nX-Injected: 1\u0000' });
    const m = render({ subject: 'Hi {{ name }} from {{ city }}{{ "\r\n" }}x', text: '{{ name }}' }, v);
    expect(m.subject).toBe('Hi Ada Bcc: victim@example.test from Lyon X-Injected: 1 x');
    expect([...m.subject].filter((c) => c === '\r' || c === '\n' || c === '\u0000')).toEqual([]);
    // Through nodemailer's options too: the To name is a structured address, never raw header text.
    const mail = buildMessage(
      compileForSending({ subject: 'Hi {{ name }}', html: null, text: 'x' }),
      { id: 1, fromAddress: 'a@example.test', fromName: null },
      {
        taskId: 1,
        contactId: 2,
        email: 'ada@example.test',
        name: v.contact.name,
        attributes: {},
      },
      {},
    );
    expect(mail.subject).toBe('Hi Ada Bcc: victim@example.test');
  });

  it('renders an object attribute as JSON and a missing one as nothing, never as braces', () => {
    expect(text('[{{ meta }}][{{ nothing }}]', vars({}, { meta: { a: 1 } }))).toBe('[{"a":1}][]');
  });
});

describe('strict checks at creation', () => {
  it('refuses an unknown variable, naming it, the part, line and column', () => {
    const e = refusal({ subject: 'Hi {{ name }}', text: 'Hi {{name}}\nfrom {{attributes.city}}', html: '<p>{{ contact.phone }}</p>' });
    expect(e.code).toBe(ErrorCodes.TEMPLATE_VARIABLE);
    expect(e.problems).toEqual([
      expect.objectContaining({
        part: 'text',
        line: 2,
        column: 8,
        variable: 'attributes.city',
        message: expect.stringMatching(/did you mean contact\.attributes\.city/),
      }),
      expect.objectContaining({ part: 'html', line: 1, column: 7, variable: 'contact.phone' }),
    ]);
    expect(e.issues.map((i) => i.path)).toEqual(['text', 'html']);
    expect(refusal({ subject: '{{ campaign.owner }}', text: 'x' }).problems[0]).toMatchObject({
      part: 'subject',
      variable: 'campaign.owner',
    });
    expect(refusal({ subject: 's', text: '{{ contact }}' }).problems[0]).toMatchObject({ variable: 'contact' });
    expect(refusal({ subject: 's', text: '{{ address.city }}' }).problems[0]!.message).toMatch(/contact\.attributes\.address\.city/);
  });

  it('refuses a syntax error the same way', () => {
    const unclosed = refusal({ subject: 's', text: 'one\ntwo {{ name' });
    expect(unclosed.code).toBe(ErrorCodes.TEMPLATE_SYNTAX);
    expect(unclosed.problems[0]).toMatchObject({ part: 'text', line: 2, message: expect.stringMatching(/not closed/) });
    expect(refusal({ subject: 's', html: '<p>\n{% if %}x{% endif %}</p>' }).problems[0]).toMatchObject({ part: 'html', line: 2 });
    expect(refusal({ subject: 's', text: '{% if a %}x' }).problems[0]!.message).toMatch(/not closed/);
    expect(refusal({ subject: 's', text: '{{ name | nofilter: 1 }}' }).problems[0]!.message).toMatch(/undefined filter: nofilter/);
    const spaced = refusal({ subject: 's', text: 'Hi {{ first name }}' });
    expect(spaced.code).toBe(ErrorCodes.TEMPLATE_SYNTAX);
    expect(spaced.problems[0]).toMatchObject({ line: 1, column: 4, message: expect.stringMatching(/not one value/) });
  });

  it('refuses what would read files or send braces literally', () => {
    expect(refusal({ subject: 's', text: '{% include "secrets" %}' }).problems[0]!.message).toMatch(/cannot include files/);
    expect(refusal({ subject: 's', text: '{% render "x" %}' }).problems[0]!.message).toMatch(/cannot include files/);
    expect(refusal({ subject: 's', text: '{% raw %}{{ name }}{% endraw %}' }).problems[0]!.message).toMatch(/literally/);
    expect(refusal({ subject: 's', text: '{{ "{{ name" }}' }).problems[0]!.message).toMatch(/literal/);
  });

  it('lists the attributes every recipient must supply: printed, without default, untested', () => {
    const t = compileTemplate(
      {
        subject: '{{ city }}',
        text: '{{ contact.attributes.plan }} {{ zip | default: "-" }} {% if vip %}{{ vip }}{% endif %} {% for i in items %}{{ i }}{% endfor %} {{ name }}',
        html: '{% unless contact.attributes.country %}{% else %}{{ country }}{% endunless %}{{ contact.attributes.address.street }}',
      },
      { strict: true },
    );
    expect(t.required).toEqual(['address', 'city', 'plan']);
    expect(requiredAttributes([t, compileTemplate({ subject: '{{ zip }}', text: 'x' })])).toEqual(['address', 'city', 'plan', 'zip']);
  });

  it('compiles stored templates leniently: an unknown variable renders empty, never as braces', () => {
    const t = compileTemplate({ subject: 'Hi {{name}}', html: null, text: 'from {{attributes.city}}.' });
    expect(renderMessage(t, vars()).text).toBe('from .');
    const sendable = compileForSending({ subject: 'Hi {{name}}', html: null, text: 'from {{attributes.city}}.' });
    const mail = buildMessage(
      sendable,
      { id: 1, fromAddress: 'a@example.test', fromName: null },
      { taskId: 1, contactId: 2, email: 'ada@example.test', name: 'Ada', attributes: {} },
      {},
    );
    expect([mail.subject, mail.text]).toEqual(['Hi Ada', 'from .']);
    const broken = compileForSending({ subject: 's', html: null, text: '{{ x' });
    expect(broken).toEqual({ broken: expect.any(TemplateError) });
    const campaign = { id: 1, fromAddress: 'a@example.test', fromName: null };
    const r = { taskId: 1, contactId: 2, email: 'ada@example.test', name: null, attributes: {} };
    expect(() => buildMessage(broken, campaign, r, {})).toThrow(/text: line 1, column 1: output "\{\{ x" not closed/);
  });
});

describe('the fast path', () => {
  const liquidOnly = (t: CompiledTemplate): CompiledTemplate => ({
    ...t,
    subject: { ...t.subject, fast: null },
    html: t.html && { ...t.html, fast: null },
    text: t.text && { ...t.text, fast: null },
  });

  it('takes simple templates only', () => {
    expect(
      compileTemplate({ subject: 'Hi {{ name }}', text: '{{ city | there }} {{ contact.attributes["a b"] | default: "x" }}' }).text!.fast,
    ).not.toBeNull();
    for (const text of [
      '{{ name | upcase }}',
      '{% if a %}x{% endif %}',
      '{{ name.size }}',
      '{{ "x" }}',
      '{{ a | default: b }}',
      '{{ a[b] }}',
    ]) {
      expect([text, compileTemplate({ subject: 's', text }).text!.fast]).toEqual([text, null]);
    }
  });

  it('renders exactly as LiquidJS does, on generated templates and data', () => {
    const path = fc.constantFrom(
      'name',
      'email',
      'city',
      'zip',
      'unsubscribe_url',
      'campaign.name',
      'contact.name',
      'contact.email',
      'contact.attributes.city',
      'contact.attributes.obj.k',
      'contact.attributes["we ird"]',
      'contact.attributes.arr',
    );
    const output = fc
      .tuple(path, fc.option(fc.constantFrom('fb', '', '<&>"'), { nil: undefined }))
      .map(([p, d]) => (d === undefined ? `{{ ${p} }}` : `{{ ${p} | default: ${JSON.stringify(d)} }}`));
    const source = fc
      .array(fc.oneof(output, fc.constantFrom('text ', '<b>&amp;</b>', '\n', ' "q" ')), { minLength: 1, maxLength: 6 })
      .map((a) => a.join(''));
    const value = fc.oneof(
      fc.constantFrom('', 'Lyon', '<script>&"\'', 'a\r\nb'),
      fc.integer({ min: -2, max: 2 }),
      fc.boolean(),
      fc.constant(null),
      fc.constant(undefined),
      fc.array(fc.constantFrom('x', 'y', ''), { maxLength: 2 }),
      fc.constant({ k: 'v' }),
    );
    const attributes = fc.record(
      { city: value, zip: value, obj: fc.oneof(fc.constant({ k: 'deep' }), value), 'we ird': value, arr: value },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(
        source,
        source,
        fc.option(fc.constantFrom('Ada', '', 'A <b>'), { nil: null }),
        attributes,
        (subject, body, name, attrs) => {
          const t = compileTemplate({ subject: subject.replace(/\n/g, ' '), text: body, html: body });
          expect(t.text!.fast).not.toBeNull();
          const v: RenderVars = {
            contact: { name, email: 'e@example.test', attributes: attrs },
            campaign: { name: 'C' },
            unsubscribeUrl: 'https://u/1',
          };
          expect(renderMessage(t, v)).toEqual(renderMessage(liquidOnly(t), v));
        },
      ),
      { numRuns: 300, seed: 15 },
    );
  });
});

describe('the text part of an html-only template', () => {
  const html = (h: string) => compileTemplate({ subject: 's', html: h }, { strict: true });
  /** What the text part would be if derived from this recipient's rendered html. */
  const perMessage = (t: CompiledTemplate, v: RenderVars) => htmlToText(renderMessage(t, v).html!);

  it('is derived once from the html and renders as the rendered html would convert', () => {
    const t = html(
      '<h1>Dear {{ name }},</h1><p>News from {{ city | default: "your town" }} &amp; more.</p>' +
        '<ul><li>{{ contact.email }}</li></ul><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    );
    expect(t.derivedText).not.toBeNull();
    for (const v of [vars(), vars({ name: 'A <b>&' }, { city: '' }), vars({ name: null }, { city: 'Bad "Ems"' })]) {
      const out = renderMessage(t, v);
      expect(out.text).toBe(perMessage(t, v));
    }
    expect(renderMessage(t, vars()).text).toBe(
      'Dear Ada,\n\nNews from Lyon & more.\n\n * ada@example.test\n\nUnsubscribe [https://mail.example.test/u/1.2.x]',
    );
  });

  it('is derived per message where deriving once would not say the same', () => {
    for (const h of [
      '<p>{% if city %}In {{ city }}{% endif %}</p>', // a block tag
      '<p>Hi</p><img src="https://x.test/{{ contact.email }}">', // a tag html-to-text drops
      '<a href="{{ unsubscribe_url }}">{{ unsubscribe_url }}</a>', // a link whose text is its href
      '<p>&#123;&#123; name }} {{ name }}</p>', // braces from entities would become a tag
      '<style>p { color: red } /* {{ name }} */</style><p>{{ city }}</p>',
    ]) {
      const t = html(h);
      expect([h, t.derivedText]).toEqual([h, null]);
      expect([h, renderMessage(t, vars()).text]).toEqual([h, undefined]); // buildMessage converts the rendered html
    }
    // Sent, it still gets its text part: converted from the rendered html (no unsubscribe URL here).
    const m = buildMessage(
      compileForSending({ subject: 's', html: '<p>Hi {{ name }}</p><img src="https://x.test/{{ contact.email }}">', text: null }),
      { id: 1, fromAddress: 'a@example.test', fromName: null },
      { taskId: 1, contactId: 2, email: 'ada@example.test', name: 'Ada', attributes: {} },
      {},
    );
    expect(m.text).toBe('Hi Ada');
  });

  it('agrees with converting each rendered html, on generated templates and values', () => {
    const output = fc.constantFrom(
      '{{ name }}',
      '{{ city }}',
      '{{ contact.email }}',
      '{{ city | default: "there" }}',
      '{{ unsubscribe_url }}',
    );
    const piece = fc.oneof(
      output,
      fc.constantFrom(
        'text ',
        ' ',
        '<p>',
        '</p>',
        '<h2>',
        '</h2>',
        '<br>',
        '<b>bold</b>',
        '<li>',
        '&amp;',
        '<a href="https://x.test/">x</a>',
      ),
    );
    const source = fc.array(piece, { minLength: 1, maxLength: 10 }).map((a) => a.join(''));
    const word = fc.constantFrom('', 'Lyon', 'A&B', '<i>', 'Ümlaut', 'x"y');
    let derived = 0;
    fc.assert(
      fc.property(source, word, word, (h, name, city) => {
        const t = compileTemplate({ subject: 's', html: h });
        const v = vars({ name }, { city });
        // Word wrapping (at 78 columns) happens before the values go in, so a line break may fall
        // elsewhere; the words, their order and the layout's blank lines are the same.
        const words = (x: string) => x.replace(/[ \n]+/g, ' ');
        if (!t.derivedText) return;
        derived++;
        expect(words(renderMessage(t, v).text!)).toBe(words(perMessage(t, v)));
      }),
      { numRuns: 300 },
    );
    expect(derived).toBeGreaterThan(100); // most generated templates take the derived path
  });
});
