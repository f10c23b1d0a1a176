/**
 * Provider payloads as the providers document them (test/fixtures/webhooks/README.md says which
 * page each follows), read by the pure parsers and verifiers of services/webhooks/providers.ts:
 * what is a hard or soft bounce or a complaint, and what is not a bounce at all (deferrals the
 * provider still retries, a complaint taken back). The HTTP path, with signatures and the
 * database, is test/webhooks.test.ts.
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mailgun, postmark, sendgrid, ses, sparkpost } from '../services/webhooks/providers.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/webhooks/${name}`, import.meta.url), 'utf8');
const sns = (message: string) => JSON.stringify({ Type: 'Notification', Message: message });
const brief = (events: { type: string; email: string; statusCode?: string }[]) =>
  events.map((e) => [e.type, e.email, e.statusCode ?? null]);

describe('provider payloads (unit)', () => {
  it('SendGrid: dropped for a bounced or invalid address is a hard bounce, for a spam report a complaint; deferred is no bounce', () => {
    const { events } = sendgrid.parse(fixture('sendgrid-dropped-deferred.json'));
    expect(brief(events)).toEqual([
      ['hard_bounce', 'gone@example.com', null],
      ['hard_bounce', 'not-an-address@example.com', null],
      ['complaint', 'reporter@example.com', null],
      // Unsubscribed Address: SendGrid's own unsubscribe list, nothing about the address; deferred: still being retried.
      ['soft_bounce', 'noemail@this.does.not.exist.example', null], // type blocked, no status field
      ['soft_bounce', 'full@example.com', '5.2.2'], // "bounce" with 5.2.2: soft by the DSN policy
    ]);
    expect(events[0]).toMatchObject({ reason: 'dropped by SendGrid: Bounced Address' });
    // The documented sample: a bounce with 5.1.1, a spam report, a delivery (ignored).
    expect(brief(sendgrid.parse(fixture('sendgrid-events.json')).events)).toEqual([
      ['hard_bounce', 'alice@example.com', '5.1.1'],
      ['complaint', 'carol@example.com', null],
    ]);
  });

  it('Mailgun: a temporary failure is a deferral, not a bounce; the parent-signature of a subaccount verifies', () => {
    const key = 'key-mailgun-main-account-0123';
    const now = new Date();
    const ts = String(Math.floor(now.getTime() / 1000));
    const raw = fixture('mailgun-failed-temporary.json').replace('TIMESTAMP', ts);
    const token = (JSON.parse(raw) as { signature: { token: string } }).signature.token;
    const good = createHmac('sha256', key)
      .update(ts + token)
      .digest('hex');
    expect(mailgun.parse(raw).events).toEqual([]);
    const body = (sig: string, parent: string) => raw.replace('"SIGNATURE"', JSON.stringify(sig)).replace('PARENT_SIGNATURE', parent);
    // The subaccount's own signature (made with its key, unknown here) does not verify; the parent's does.
    expect(mailgun.verify({ headers: {}, rawBody: body('0'.repeat(64), good), now }, { signingKey: key })).toBe(true);
    expect(mailgun.verify({ headers: {}, rawBody: body('0'.repeat(64), '1'.repeat(64)), now }, { signingKey: key })).toBe(false);
    // Permanent: hard, unless Mailgun gave up after retrying (reason "old") or the code is soft.
    const permanent = fixture('mailgun-failed-permanent.json');
    expect(brief(mailgun.parse(permanent).events)).toEqual([['hard_bounce', 'alice@example.com', '5.1.1']]);
    expect(brief(mailgun.parse(permanent.replace('"suppress-bounce"', '"old"')).events)).toEqual([
      ['soft_bounce', 'alice@example.com', '5.1.1'],
    ]);
    expect(brief(mailgun.parse(permanent.replace('5.1.1 The email account', '5.2.2 The email account')).events)).toEqual([
      ['soft_bounce', 'alice@example.com', '5.2.2'],
    ]);
  });

  it('Postmark: the documented bounce, the short example without RecordType, and the newer soft types', () => {
    expect(brief(postmark.parse(fixture('postmark-bounce.json')).events)).toEqual([['hard_bounce', 'alice@example.com', '5.1.1']]);
    expect(brief(postmark.parse(fixture('postmark-bounce-legacy.json')).events)).toEqual([['hard_bounce', 'john@example.com', null]]);
    expect(brief(postmark.parse(fixture('postmark-spam.json')).events)).toEqual([['complaint', 'carol@example.com', null]]);
    const typed = (t: string) => postmark.parse(fixture('postmark-bounce.json').replace('"Type": "HardBounce"', `"Type": "${t}"`)).events;
    expect(typed('DMARCPolicy').map((e) => e.type)).toEqual(['soft_bounce']);
    expect(typed('SpamNotification').map((e) => e.type)).toEqual(['soft_bounce']);
    expect(typed('AutoResponder')).toEqual([]);
    expect(postmark.parse(JSON.stringify({ RecordType: 'Delivery', Email: 'a@example.com', Type: 'HardBounce' })).events).toEqual([]);
  });

  it('SparkPost: bounce classes and spam complaints in the msys batch; its empty test batch is nothing', () => {
    expect(brief(sparkpost.parse(fixture('sparkpost-events.json')).events)).toEqual([
      ['hard_bounce', 'alice@example.com', '5.1.1'],
      ['soft_bounce', 'bob@example.com', '4.2.2'],
      ['complaint', 'carol@example.com', null],
    ]);
    expect(sparkpost.parse('[{"msys":{}}]').events).toEqual([]);
  });

  it('SES: bounce and complaint notifications; a not-spam feedback type is no complaint', () => {
    expect(brief(ses.parse(sns(fixture('ses-bounce-message.json'))).events)).toEqual([['hard_bounce', 'alice@example.com', '5.1.1']]);
    expect(brief(ses.parse(sns(fixture('ses-complaint-message.json'))).events)).toEqual([['complaint', 'carol@example.com', null]]);
    expect(ses.parse(sns(fixture('ses-complaint-message.json').replace('"abuse"', '"not-spam"'))).events).toEqual([]);
    expect(brief(ses.parse(sns(fixture('ses-bounce-message.json').replace('"Permanent"', '"Transient"'))).events)).toEqual([
      ['soft_bounce', 'alice@example.com', '5.1.1'],
    ]);
  });
});
