/**
 * Provider webhooks (services/webhooks/) over HTTP with each provider's documented payload
 * (test/fixtures/webhooks/): Mailgun (HMAC), SendGrid (ECDSA), Postmark and SparkPost (basic
 * auth), Amazon SES through SNS (RSA signature, certificate from an injected fetcher,
 * SubscriptionConfirmation). A bad signature is a 401 that changes nothing.
 */
import { createHmac, createSign, generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { snsStringToSign } from '../services/webhooks/providers.js';
import { rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/webhooks/${name}`, import.meta.url), 'utf8');

describe('provider webhooks', () => {
  let f: HttpFixture;
  let serviceId: number;
  let taskId: number;
  const contact: Record<string, number> = {};
  const confirmed: string[] = [];
  const certs = new Map<string, string>();
  const now = () => Math.floor(Date.now() / 1000);

  beforeAll(async () => {
    f = await httpFixture({
      engine: {
        webhooks: {
          fetchCert: async (url: string) => certs.get(url) ?? Promise.reject(new Error('no such certificate')),
          confirmSubscription: async (url: string) => void confirmed.push(url),
        },
      },
    });
    const e = f.engine;
    serviceId = (
      await e.services.create({ name: 'provider', transport: { host: '127.0.0.1', port: 2525 }, sendingRate: 0, dailyQuota: 100 })
    ).id;
    const u = (await e.users.create({ name: 'W', email: 'w@news.example', quota: 100 })).id;
    const made = await e.contacts.bulkCreate(
      u,
      ['alice', 'bob', 'carol', 'dave'].map((n) => ({ email: `${n}@example.com` })),
    );
    ['alice', 'bob', 'carol', 'dave'].forEach((n, i) => (contact[n] = made.ids[i]!));
    const tpl = await e.templates.create(u, { name: 't', subject: 's', text: 'x' });
    taskId = (
      await e.campaigns.create({ userId: u, name: 'w', from: 'w@news.example', templates: [tpl.id], recipientRule: { type: 'all' } })
    ).id;
    await e.scheduler.processScheduledTasks();
  });
  afterAll(async () => f.close());

  const messageId = (who: string) => `<${taskId}.${contact[who]}@news.example>`;
  const post = (provider: string, body: string, headers: Record<string, string> = {}) =>
    f.call('POST', `/webhooks/${provider}/${serviceId}`, undefined, body, { 'content-type': 'application/json', ...headers });
  const events = (source: string) =>
    rows<{ type: string; email: string; task_id: string | null; service_id: number; status_code: string | null }>(
      f.engine.apiDb,
      'SELECT type, email, task_id, service_id, status_code FROM bounce_events WHERE source = $source ORDER BY id',
      { source },
    );
  const status = async (who: string) =>
    (await rows<{ status: string }>(f.engine.apiDb, 'SELECT status FROM contacts WHERE id = $id', { id: contact[who] }))[0]!.status;

  it('refuses every provider until the service has its credentials', async () => {
    for (const p of ['mailgun', 'sendgrid', 'postmark', 'sparkpost', 'ses', 'nosuch']) expect((await post(p, '{}')).statusCode).toBe(401);
  });

  it('Mailgun: HMAC of timestamp and token; a failed permanent event bounces the contact in its campaign', async () => {
    const key = 'key-mailgun-signing-0123456789';
    expect((await f.call('PUT', `/api/services/${serviceId}/webhooks/mailgun`, f.adminToken, { signing_key: key })).statusCode).toBe(204);
    const ts = String(now());
    const token = 'a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0';
    const body = (sig: string, t = ts) =>
      fixture('mailgun-failed-permanent.json')
        .replace('TIMESTAMP', t)
        .replace('SIGNATURE', sig)
        .replace('MESSAGE_ID', messageId('alice').slice(1, -1));
    const good = createHmac('sha256', key)
      .update(ts + token)
      .digest('hex');
    expect((await post('mailgun', body(good.replace(/^./, (c) => (c === 'a' ? 'b' : 'a'))))).statusCode).toBe(401);
    const old = String(now() - 3600);
    expect(
      (
        await post(
          'mailgun',
          body(
            createHmac('sha256', key)
              .update(old + token)
              .digest('hex'),
            old,
          ),
        )
      ).statusCode,
    ).toBe(401);
    expect(await events('webhook:mailgun')).toEqual([]);
    expect(await status('alice')).toBe('active');
    const res = await post('mailgun', body(good));
    expect(res.statusCode).toBe(200);
    expect(await status('alice')).toBe('bounced');
    expect(await events('webhook:mailgun')).toEqual([
      { type: 'hard_bounce', email: 'alice@example.com', task_id: String(taskId), service_id: serviceId, status_code: '5.1.1' },
    ]);
  });

  it('SendGrid: ECDSA over timestamp and body; bounce and spamreport, delivered ignored', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pub = publicKey.export({ format: 'der', type: 'spki' }).toString('base64');
    await f.engine.webhooks.configure(serviceId, 'sendgrid', { publicKey: pub });
    const body = fixture('sendgrid-events.json').replace('MESSAGE_ID', messageId('bob'));
    const ts = String(now());
    const sig = sign('sha256', Buffer.from(ts + body), privateKey).toString('base64');
    const headers = { 'x-twilio-email-event-webhook-signature': sig, 'x-twilio-email-event-webhook-timestamp': ts };
    expect((await post('sendgrid', body.replace('5.1.1', '5.1.2'), headers)).statusCode).toBe(401); // altered body
    expect(await events('webhook:sendgrid')).toEqual([]);
    expect((await post('sendgrid', body, headers)).statusCode).toBe(200);
    expect((await events('webhook:sendgrid')).map((e) => [e.type, e.email, e.task_id])).toEqual([
      // The smtp-id is fairsend's Message-ID of bob's message: it names the contact, whatever address the event shows.
      ['hard_bounce', 'bob@example.com', String(taskId)],
      ['complaint', 'carol@example.com', null],
    ]);
    expect(await status('bob')).toBe('bounced');
    expect(await status('carol')).toBe('unsubscribed');
    // SendGrid posts a batch again when its first post timed out: each sg_event_id is applied once.
    const hardBounces = async () =>
      (await rows<{ n: number }>(f.engine.apiDb, 'SELECT hard_bounce_count AS n FROM tasks WHERE id = $id', { id: taskId }))[0]!.n;
    const before = await hardBounces();
    expect(before).toBeGreaterThan(0);
    expect((await post('sendgrid', body, headers)).statusCode).toBe(200);
    expect(await events('webhook:sendgrid')).toHaveLength(2);
    expect(await hardBounces()).toBe(before);
  });

  it('Postmark and SparkPost: basic auth; bounce types and classes, spam complaints', async () => {
    await f.engine.webhooks.configure(serviceId, 'postmark', { username: 'pm', password: 'pm-secret-123' });
    await f.engine.webhooks.configure(serviceId, 'sparkpost', { username: 'sp', password: 'sp-secret-123' });
    const auth = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });
    expect((await post('postmark', fixture('postmark-bounce.json'), auth('pm', 'wrong'))).statusCode).toBe(401);
    expect((await post('postmark', fixture('postmark-bounce.json'))).statusCode).toBe(401);
    expect((await post('sparkpost', fixture('sparkpost-events.json'), auth('pm', 'pm-secret-123'))).statusCode).toBe(401); // another provider's
    expect(await events('webhook:postmark')).toEqual([]);
    expect((await post('postmark', fixture('postmark-bounce.json'), auth('pm', 'pm-secret-123'))).statusCode).toBe(200);
    expect((await post('postmark', fixture('postmark-spam.json'), auth('pm', 'pm-secret-123'))).statusCode).toBe(200);
    expect((await events('webhook:postmark')).map((e) => [e.type, e.email, e.status_code])).toEqual([
      ['hard_bounce', 'alice@example.com', '5.1.1'],
      ['complaint', 'carol@example.com', null],
    ]);
    expect((await post('sparkpost', fixture('sparkpost-events.json'), auth('sp', 'sp-secret-123'))).statusCode).toBe(200);
    expect((await events('webhook:sparkpost')).map((e) => [e.type, e.email, e.status_code])).toEqual([
      ['hard_bounce', 'alice@example.com', '5.1.1'],
      ['soft_bounce', 'bob@example.com', '4.2.2'],
      ['complaint', 'carol@example.com', null],
    ]);
  });

  it('SES through SNS: verifies the signature with the fetched certificate, confirms subscriptions, applies bounces', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const certUrl = 'https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem';
    certs.set(certUrl, publicKey.export({ format: 'pem', type: 'spki' }).toString());
    await f.engine.webhooks.configure(serviceId, 'ses', { topicArns: ['arn:aws:sns:eu-west-1:123456789012:ses-bounces'] });
    const signed = (m: Record<string, string>, version = '1') => {
      const msg = { ...m, SignatureVersion: version, SigningCertURL: certUrl, Timestamp: new Date().toISOString() };
      const s = createSign(version === '2' ? 'RSA-SHA256' : 'RSA-SHA1')
        .update(snsStringToSign(msg))
        .sign(privateKey, 'base64');
      return JSON.stringify({ ...msg, Signature: s });
    };
    const topic = 'arn:aws:sns:eu-west-1:123456789012:ses-bounces';
    const sub = signed({
      Type: 'SubscriptionConfirmation',
      MessageId: '165545c9-2a5c-472c-8df2-7ff2be2b3b1b',
      Token: '2336412f37fb687f5d51e6e2425f004aed7a3a7a5a2c0f1d3',
      TopicArn: topic,
      Message: 'You have chosen to subscribe to the topic. To confirm the subscription, visit the SubscribeURL included in this message.',
      SubscribeURL: 'https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f',
    });
    const r = await post('ses', sub, { 'content-type': 'text/plain; charset=UTF-8' });
    expect(r.statusCode).toBe(200);
    expect(confirmed).toEqual(['https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f']);

    const note = {
      Type: 'Notification',
      MessageId: '22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324',
      TopicArn: topic,
      Message: fixture('ses-bounce-message.json').replace('MESSAGE_ID', messageId('dave')),
    };
    const good = signed(note);
    // A tampered message, a foreign certificate URL, another topic: all 401, nothing applied.
    expect((await post('ses', good.replace('Permanent', 'Transient'), { 'content-type': 'text/plain' })).statusCode).toBe(401);
    expect(
      (await post('ses', good.replace('sns.eu-west-1.amazonaws.com', 'sns.eu-west-1.evil.example'), { 'content-type': 'text/plain' }))
        .statusCode,
    ).toBe(401);
    expect(
      (await post('ses', signed({ ...note, TopicArn: 'arn:aws:sns:eu-west-1:1:other' }), { 'content-type': 'text/plain' })).statusCode,
    ).toBe(401);
    expect(await events('webhook:ses')).toEqual([]);
    expect(await status('dave')).toBe('active');
    expect((await post('ses', good, { 'content-type': 'text/plain' })).statusCode).toBe(200);
    expect((await post('ses', signed({ ...note, MessageId: 'x2' }, '2'), { 'content-type': 'text/plain' })).statusCode).toBe(200);
    expect(await status('dave')).toBe('bounced');
    expect((await events('webhook:ses')).map((e) => [e.type, e.email, e.task_id, e.status_code])).toEqual([
      ['hard_bounce', 'dave@example.com', String(taskId), '5.1.1'],
      ['hard_bounce', 'dave@example.com', String(taskId), '5.1.1'],
    ]);
  });
});
