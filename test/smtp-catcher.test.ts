import nodemailer from 'nodemailer';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';

describe('SMTP catcher', () => {
  let catcher: SmtpCatcher;
  beforeAll(async () => {
    catcher = await startSmtpCatcher({ port: 0 });
  });
  afterAll(() => catcher.stop());

  it('receives and parses a real message sent with nodemailer over loopback', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: catcher.port, secure: false, ignoreTLS: true });
    const info = await transport.sendMail({
      from: 'Sender <sender@example.test>',
      to: 'Ünïcode Reader <reader@example.test>',
      subject: 'Grüße from fairsend',
      text: 'plain body',
      html: '<p>html body</p>',
      headers: { 'X-Fairsend-Test': 'yes' },
    });
    transport.close();
    expect(info.accepted).toEqual(['reader@example.test']);
    await catcher.waitFor(1);
    const msg = catcher.messages.at(-1)!;
    expect(msg.envelopeFrom).toBe('sender@example.test');
    expect(msg.envelopeTo).toEqual(['reader@example.test']);
    expect(msg.parsed.subject).toBe('Grüße from fairsend');
    expect(msg.parsed.text?.trim()).toBe('plain body');
    expect(msg.parsed.html).toContain('<p>html body</p>');
    expect(msg.parsed.headers.get('x-fairsend-test')).toBe('yes');
    expect(msg.parsed.messageId).toBe(info.messageId);
  });

  it('answers injected faults: 550 on a recipient, 451 after DATA', async () => {
    const faulty = await startSmtpCatcher({
      port: 0,
      rcptReply: (a) => (a.startsWith('nobody@') ? { code: 550, message: 'No such user' } : undefined),
      dataReply: (m) => (m.to.includes('later@example.test') ? { code: 451, message: 'Try again later' } : undefined),
    });
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: faulty.port, secure: false, ignoreTLS: true });
    try {
      await expect(transport.sendMail({ from: 'a@example.test', to: 'nobody@example.test', text: 'x' })).rejects.toMatchObject({
        responseCode: 550,
      });
      await expect(transport.sendMail({ from: 'a@example.test', to: 'later@example.test', text: 'x' })).rejects.toMatchObject({
        responseCode: 451,
      });
      expect(faulty.accepted).toBe(0);
      expect(faulty.received).toBe(1);
    } finally {
      transport.close();
      await faulty.stop();
    }
  });
});
