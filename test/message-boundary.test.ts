import MailComposer from 'nodemailer/lib/mail-composer';
import { simpleParser } from 'mailparser';
import { boundaryBase, buildMessage, compileForSending } from '../services/delivery/message.js';

/**
 * Each message's multipart boundary base comes from buildMessage (one fill of the random generator
 * for many messages, not one draw per MIME part in nodemailer): every message gets its own, and
 * nodemailer builds a message that parses with it.
 */
describe('multipart boundaries', () => {
  it('gives every message its own 16 hex characters, across refills of the random pool', () => {
    const bases = Array.from({ length: 2_000 }, () => boundaryBase());
    expect(bases.every((b) => /^[0-9a-f]{16}$/.test(b))).toBe(true);
    expect(new Set(bases).size).toBe(bases.length);
  });

  it('builds text + HTML messages whose parts nodemailer separates with the message’s base', async () => {
    const template = compileForSending({
      subject: 'Hi {{ contact.name }}',
      html: '<p>Hello {{ contact.name }}</p>',
      text: 'Hello {{ contact.name }}',
    });
    const build = (contactId: number) =>
      buildMessage(
        template,
        { id: 1, fromAddress: 'news@example.test', fromName: null },
        { taskId: 1, contactId, email: `r${contactId}@example.test`, name: `Reader ${contactId}`, attributes: {} },
        {},
      );
    const [a, b] = [build(1), build(2)];
    expect(a.baseBoundary).not.toBe(b.baseBoundary);
    const raw = (await new MailComposer(a).compile().build()).toString('latin1');
    const boundary = /boundary="([^"]+)"/.exec(raw)?.[1];
    expect(boundary).toContain(a.baseBoundary);
    expect(raw.split(`--${boundary}`).length).toBe(4); // before, text, HTML, and the closing delimiter's tail
    const parsed = await simpleParser(raw);
    expect(parsed.text?.trim()).toBe('Hello Reader 1');
    expect(parsed.html).toContain('<p>Hello Reader 1</p>');
  });
});
