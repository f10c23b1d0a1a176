/**
 * The remembered header-key normalization (services/delivery/header-keys.ts): nodemailer's own
 * results for awkward keys, a whole message byte for byte the same, and in place in the builder
 * that nodemailer's transports use once the engine has made one.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import nodemailer from 'nodemailer';
import MailComposer from 'nodemailer/lib/mail-composer';
import MimeNode from 'nodemailer/lib/mime-node';
import {
  forgetHeaderKeys,
  headerKeysRemembered,
  MAX_KEYS,
  originalNormalize,
  rememberHeaderKeys,
} from '../services/delivery/header-keys.js';
import { createServiceTransport } from '../services/delivery/transport.js';

const KEYS: unknown[] = [
  'subject',
  'SUBJECT',
  'message-id',
  'Message-ID',
  'mime-version',
  'MIME-Version',
  'content-type',
  'content-transfer-encoding',
  'dkim-signature',
  'arc-seal',
  'bimi-selector',
  'x-smtpapi',
  'X-SMTPAPI',
  'x-otp-token',
  'otp-token',
  'x-fairsend-campaign',
  'list-unsubscribe',
  'list-unsubscribe-post',
  'x-mailer-id',
  'received-spf',
  'x-fbl',
  'content-md5',
  'content-features',
  'From: ceo@example.com (',
  'x-\u0000bad\u007f key\t',
  ' spaced ',
  '',
  undefined,
  null,
  0,
  42,
  Buffer.from('x-from-buffer'),
];

const normalize = (key: unknown) => (MimeNode.prototype as unknown as { _normalizeHeaderKey(k: unknown): string })._normalizeHeaderKey(key);

/** A message with every kind of header the engine writes, with a fixed boundary and date. */
function build(): Promise<Buffer> {
  return new MailComposer({
    from: { name: 'Fair Send', address: 'news@example.com' },
    to: { name: 'Réader', address: 'reader@example.org' },
    subject: 'Hello Réader',
    text: 'Hi there',
    html: '<p>Hi there</p>',
    messageId: '<7.42@example.com>',
    date: new Date('2026-12-01T12:00:00Z'),
    baseBoundary: 'fixedboundary',
    headers: {
      'X-Fairsend-Campaign': '7',
      'list-unsubscribe': '<https://u.example.com/x>',
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
    },
  } as never)
    .compile()
    .build();
}

afterAll(() => {
  rememberHeaderKeys();
});

describe('remembered header keys', () => {
  it('gives nodemailer’s own result for every key, first and second time', () => {
    expect(typeof originalNormalize).toBe('function');
    forgetHeaderKeys();
    expect(headerKeysRemembered()).toBe(false);
    const shipped = KEYS.map((k) => normalize(k));
    expect(shipped).toContain('Message-ID');
    expect(shipped).toContain('X-SMTPAPI');
    expect(rememberHeaderKeys()).toBe(true);
    expect(headerKeysRemembered()).toBe(true);
    expect(KEYS.map((k) => normalize(k))).toEqual(shipped);
    expect(KEYS.map((k) => normalize(k))).toEqual(shipped);
  });

  it('builds a message byte for byte as nodemailer does', async () => {
    forgetHeaderKeys();
    const shipped = await build();
    rememberHeaderKeys();
    const remembered = await build();
    expect(remembered.toString()).toContain('List-Unsubscribe-Post: List-Unsubscribe=One-Click');
    expect(remembered.equals(shipped)).toBe(true);
  });

  it('stops remembering at MAX_KEYS distinct keys, still normalizing the rest', () => {
    rememberHeaderKeys();
    for (let i = 0; i < MAX_KEYS + 50; i++) expect(normalize(`x-key-${i}-id`)).toBe(`X-Key-${i}-ID`);
  });

  it('is in place in the builder of the transports the engine makes', async () => {
    forgetHeaderKeys();
    const service = createServiceTransport({ host: '127.0.0.1', port: 2525 }, 1, null);
    service.close();
    expect(headerKeysRemembered()).toBe(true);
    // The MIME node a nodemailer transport builds comes from the same module as the patched one.
    const t = nodemailer.createTransport({ streamTransport: true, buffer: true });
    let normalizeOfMessage: unknown;
    t.use('stream', (mail, next) => {
      normalizeOfMessage = (Object.getPrototypeOf(mail.message) as { _normalizeHeaderKey: unknown })._normalizeHeaderKey;
      next();
    });
    await t.sendMail({ from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' });
    expect(normalizeOfMessage).toHaveProperty('original', originalNormalize);
  });
});
