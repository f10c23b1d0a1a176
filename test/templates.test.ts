/**
 * Templates end to end: refused at creation (nothing written), missing attributes counted at
 * campaign creation, and what a real SMTP server receives, parsed back with mailparser.
 */
import { ErrorCodes } from '../services/kernel/errors.js';
import { MissingAttributesError } from '../services/campaigns.js';
import { TemplateError } from '../services/template-render.js';
import { buildMessage, compileForSending } from '../services/delivery/message.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { rows } from './helpers/db.js';
import { errorOf, httpFixture, type HttpFixture } from './helpers/http.js';
import { until } from './helpers/scheduler.js';

const count = async (f: HttpFixture, table: string) =>
  Number((await rows<{ n: number }>(f.engine.apiDb, `SELECT count(*)::int AS n FROM ${table}`))[0]!.n);

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('was accepted');
}

describe('templates', () => {
  let f: HttpFixture;
  let smtp: SmtpCatcher | undefined;
  beforeEach(async () => {
    f = await httpFixture({
      engine: {
        schedulerTickMs: 50,
        unsubscribeUrlBase: 'https://mail.example.test/u',
        unsubscribeSecret: 'unsubscribe-secret-for-tests-0123',
      },
    });
  });
  afterEach(async () => {
    await f.close();
    await smtp?.stop();
    smtp = undefined;
  });

  it('refuses a syntax error or an unknown variable at creation, naming part and line, and writes nothing', async () => {
    const alice = await f.user('Alice');
    const before = await count(f, 'templates');
    const syntax = await rejection(
      f.engine.templates.create(alice.id, { name: 't', subject: 'Hi {{ name }}', html: '<p>Hi</p>\n<p>{% if vip %}VIP</p>' }),
    );
    expect(syntax).toBeInstanceOf(TemplateError);
    expect(syntax).toMatchObject({ code: ErrorCodes.TEMPLATE_SYNTAX, problems: [{ part: 'html', line: 2 }] });
    const unknown = await rejection(
      f.engine.templates.create(alice.id, { name: 't', subject: 'Hi {{ name }}', text: 'Hi {{name}}\nfrom {{attributes.city}}' }),
    );
    expect(unknown).toMatchObject({
      code: ErrorCodes.TEMPLATE_VARIABLE,
      problems: [{ part: 'text', line: 2, column: 8, variable: 'attributes.city' }],
    });
    // The same through HTTP: 400 with the code, and the part as the issue's path.
    const res = await f.call('POST', '/api/templates', alice.token, { name: 't', subject: 'Hi {{ contact.phone }}', text: 'x' });
    expect(res.statusCode).toBe(400);
    expect(errorOf(res)).toMatchObject({
      code: ErrorCodes.TEMPLATE_VARIABLE,
      issues: [{ path: 'subject', message: expect.stringMatching(/^line 1, column 7: unknown variable contact\.phone/) }],
    });
    expect(await count(f, 'templates')).toBe(before);
  });

  it('counts at campaign creation the recipients who lack an attribute printed without default, with an example', async () => {
    const alice = await f.user('Alice', 100);
    await f.engine.contacts.bulkCreate(alice.id, [
      { email: 'a@example.test', attributes: { city: 'Paris', plan: 'pro' } },
      { email: 'b@example.test', attributes: { plan: 'basic' } },
      { email: 'c@example.test', attributes: { city: '' } },
    ]);
    const strict = await f.engine.templates.create(alice.id, {
      name: 'strict',
      subject: 'News for {{ contact.attributes.city }}',
      text: 'Your plan: {{ plan }}',
    });
    const tasks = await count(f, 'tasks');
    const err = await rejection(
      f.engine.campaigns.create({
        userId: alice.id,
        name: 'c',
        from: 'a@example.test',
        templates: [strict.id],
        recipientRule: { type: 'all' },
      }),
    );
    expect(err).toBeInstanceOf(MissingAttributesError);
    expect((err as MissingAttributesError).code).toBe(ErrorCodes.TEMPLATE_VARIABLE);
    expect((err as MissingAttributesError).missing).toEqual([
      { attribute: 'city', count: 2, total: 3, example: 'b@example.test' },
      { attribute: 'plan', count: 1, total: 3, example: 'c@example.test' },
    ]);
    expect((err as Error).message).toMatch(/2 of 3 recipients have no "city" attribute \(e\.g\. b@example\.test\)/);
    // Nothing written: no campaign, no credit taken.
    expect(await count(f, 'tasks')).toBe(tasks);
    expect((await f.engine.users.get(alice.id)).remainingQuota).toBe(100);

    // With a default, or inside a conditional that tests it, an attribute is not required.
    const lenient = await f.engine.templates.create(alice.id, {
      name: 'lenient',
      subject: 'News for {{ city | default: "you" }}',
      text: '{% if plan %}Your plan: {{ plan }}{% endif %}',
    });
    const ok = await f.engine.campaigns.create({
      userId: alice.id,
      name: 'c',
      from: 'a@example.test',
      templates: [lenient.id],
      recipientRule: { type: 'all' },
    });
    expect(ok.recipients).toBe(3);
  });

  it('sends the rendered parts to a real SMTP server: paths, filters, conditionals, loops, escaping, no folded header', async () => {
    smtp = await startSmtpCatcher();
    const user = await f.engine.users.create({ name: 'P', email: 'p@example.test', quota: 10 });
    const { ids } = await f.engine.contacts.bulkCreate(user.id, [
      { email: 'ada@example.test', name: 'Ada', attributes: { city: 'London', plan: 'pro', items: ['tea', 'scones'] } },
      { email: 'mallory@example.test', name: 'Mallory', attributes: { city: '<script>x</script> & co\r\nBcc: victim@example.test' } },
    ]);
    const tpl = await f.engine.templates.create(user.id, {
      name: 't',
      subject: '{{ campaign.name }} for {{ contact.name }} in {{ city | upcase }}',
      html:
        '<h1>Dear {{ name }},</h1><p>News from {{ contact.attributes.city }}.</p>' +
        '{% if plan == "pro" %}<p>Thanks for going pro.</p>{% else %}<p>Try pro!</p>{% endif %}' +
        '<ul>{% for item in contact.attributes.items %}<li>{{ item }}</li>{% endfor %}</ul>' +
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> ({{ email }})</p>',
    });
    const c = await f.engine.campaigns.create({
      userId: user.id,
      name: 'Autumn letter',
      from: 'news@example.test',
      templates: [tpl.id],
      contacts: ids,
    });
    await f.engine.services.create({
      name: 'sink',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 100,
      maxConnections: 1,
    });
    await f.engine.scheduler.start();
    await smtp.waitFor(2);
    await f.engine.scheduler.stop();
    const byTo = new Map(smtp.messages.map((m) => [m.envelopeTo[0], m]));

    const ada = byTo.get('ada@example.test')!.parsed;
    expect(ada.subject).toBe('Autumn letter for Ada in LONDON');
    expect(ada.html).toContain(
      '<h1>Dear Ada,</h1><p>News from London.</p><p>Thanks for going pro.</p><ul><li>tea</li><li>scones</li></ul>',
    );
    expect(ada.html).toMatch(
      new RegExp(
        `<a href="https://mail\\.example\\.test/u/${ids[0]}\\.${c.id}\\.[A-Za-z0-9_-]{22}">Unsubscribe</a> \\(ada@example\\.test\\)`,
      ),
    );
    // The plain-text part, generated from the rendered html (html-to-text; a heading keeps its case).
    expect(ada.text).toMatch(
      /^Dear Ada,\n\nNews from London\.\n\nThanks for going pro\.\n\n \* tea\n \* scones\n\nUnsubscribe \[https:\/\/mail\.example\.test\/u\//,
    );
    expect(ada.text).not.toMatch(/[{}]{2}|<|>/);

    const mallory = byTo.get('mallory@example.test')!;
    expect(mallory.parsed.subject).toBe('Autumn letter for Mallory in <SCRIPT>X</SCRIPT> & CO BCC: VICTIM@EXAMPLE.TEST');
    expect(mallory.parsed.bcc).toBeUndefined();
    const head = mallory.raw.toString().split('\r\n\r\n')[0]!;
    expect(head).not.toMatch(/^(Bcc|VICTIM)/im); // nodemailer may fold the long subject, but never where a value says
    expect(mallory.parsed.html).toContain('News from &lt;script&gt;x&lt;/script&gt; &amp; co');
    expect(mallory.parsed.html).toContain('<p>Try pro!</p><ul></ul>');
    expect(mallory.parsed.text).toContain('News from <script>x</script> & co');
    expect(smtp.messages.every((m) => !m.raw.toString().includes('{{'))).toBe(true);
  });

  it('compiles MJML to responsive html at creation, and refuses what MJML would drop or read', async () => {
    const alice = await f.user('Alice');
    const mjml = [
      '<mjml>',
      '  <mj-body>',
      '    <mj-section><mj-column>',
      '      <mj-text>Hello {{ contact.name }}{% if plan == "pro" %}, pro{% endif %}</mj-text>',
      '      <mj-button href="{{ unsubscribe_url }}">Unsubscribe</mj-button>',
      '    </mj-column></mj-section>',
      '  </mj-body>',
      '</mjml>',
    ].join('\n');
    const tpl = await f.engine.templates.create(alice.id, { name: 'm', subject: 'Hi {{ name }}', html: mjml });
    expect(tpl.html).toMatch(/^<!doctype html>/i);
    expect(tpl.html).toContain('@media only screen and (min-width:480px)');
    expect(tpl.html).toContain('Hello {{ contact.name }}{% if plan == "pro" %}, pro{% endif %}');
    const mail = buildMessage(
      compileForSending({ subject: tpl.subject, html: tpl.html, text: tpl.text }),
      { id: 1, fromAddress: 'a@example.test', fromName: null },
      { taskId: 1, contactId: 2, email: 'ada@example.test', name: 'Ada <3', attributes: { plan: 'pro' } },
      { unsubscribeBase: 'https://mail.example.test/u', unsubscribeSecret: 'unsubscribe-secret-for-tests-0123' },
    );
    expect(mail.html).toContain('Hello Ada &lt;3, pro');
    expect(mail.html).toMatch(/href="https:\/\/mail\.example\.test\/u\/2\.1\./);
    expect(mail.text).toMatch(/^Hello Ada <3, pro\n\nUnsubscribe \[https:\/\/mail\.example\.test\/u\/2\.1\./);

    const before = await count(f, 'templates');
    const dropped = await rejection(
      f.engine.templates.create(alice.id, {
        name: 'm',
        subject: 's',
        html: '<mjml>\n<mj-body>\n{% for i in contact.attributes.items %}\n<mj-section><mj-column><mj-text>{{ i }}</mj-text></mj-column></mj-section>\n{% endfor %}\n</mj-body>\n</mjml>',
      }),
    );
    expect(dropped).toMatchObject({
      code: ErrorCodes.TEMPLATE_SYNTAX,
      problems: [{ part: 'html', line: 3, message: expect.stringMatching(/MJML dropped/) }],
    });
    const unknown = await rejection(
      f.engine.templates.create(alice.id, {
        name: 'm',
        subject: 's',
        html: '<mjml>\n<mj-body>\n<mj-sectoin></mj-sectoin></mj-body></mjml>',
      }),
    );
    expect(unknown).toMatchObject({ problems: [{ part: 'html', line: 3, message: expect.stringMatching(/mj-sectoin/) }] });
    const include = await rejection(
      f.engine.templates.create(alice.id, {
        name: 'm',
        subject: 's',
        html: '<mjml><mj-body><mj-include path="/etc/passwd" /></mj-body></mjml>',
      }),
    );
    expect(include).toMatchObject({ problems: [{ message: expect.stringMatching(/mj-include> is not allowed/) }] });
    // The Liquid checks run on the MJML source: its lines.
    const variable = await rejection(
      f.engine.templates.create(alice.id, { name: 'm', subject: 's', html: mjml.replace('contact.name', 'contact.nmae') }),
    );
    expect(variable).toMatchObject({ code: ErrorCodes.TEMPLATE_VARIABLE, problems: [{ part: 'html', line: 4, variable: 'contact.nmae' }] });
    expect(await count(f, 'templates')).toBe(before);
  });

  it('fails (never sends) the messages of a stored template that does not compile, with the reason', async () => {
    smtp = await startSmtpCatcher();
    const user = await f.engine.users.create({ name: 'B', email: 'b@example.test', quota: 10 });
    const { ids } = await f.engine.contacts.bulkCreate(user.id, [{ email: 'x@example.test' }]);
    const tpl = await f.engine.templates.create(user.id, { name: 't', subject: 'Hi', text: 'fine' });
    const c = await f.engine.campaigns.create({ userId: user.id, name: 'b', from: 'b@example.test', templates: [tpl.id], contacts: ids });
    // Stored before the checks existed (or written around them): the first syntax left braces open.
    await f.engine.apiDb.query("UPDATE templates SET text = 'Hello {{ name' WHERE id = $id", { bind: { id: tpl.id } });
    await f.engine.services.create({
      name: 'sink',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 100,
      maxConnections: 1,
    });
    await f.engine.scheduler.start();
    await until(async () => (await f.engine.campaigns.progress(c.id)).failed === 1, 15000, 'the failure');
    await f.engine.scheduler.stop();
    const [s] = await rows<{ status: string; last_error: string }>(
      f.engine.apiDb,
      'SELECT status, last_error FROM subtasks WHERE task_id = $t',
      {
        t: c.id,
      },
    );
    expect(s).toEqual({
      status: 'failed',
      last_error: expect.stringMatching(/^template: text: line 1, column 7: output "\{\{ name" not closed/),
    });
    expect(smtp.messages).toHaveLength(0);
  });
});
