/**
 * Deliverability in the send path, against a real SMTP server on loopback that answers as the
 * providers do: after N messages, 421 4.7.28 for gmail.com recipients, Yahoo's TS04 for yahoo.com,
 * Microsoft's 451 4.7.500 for outlook.com. Real PostgreSQL.
 *
 * The engine's clock is the real one plus an offset the test moves forward (suspensions last 15 min
 * to 1 h; the test jumps them instead of sleeping). Leases and pacing run on real time.
 */
import { DateTime } from 'luxon';
import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher, type SmtpReply } from '../src/smtp-catcher.js';
import { paceViolations } from '../services/scheduler/pacer.js';
import { lookaheadFor } from '../services/scheduler/service-runner.js';
import type { ScopeStatus } from '../services/deliverability/shaper.js';
import { createMetrics } from '../src/http/metrics.js';
import { createTestEngine, rows } from './helpers/db.js';
import { recordSends, until } from './helpers/scheduler.js';

const GMAIL_4728 = {
  code: 421,
  message: '4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. - gsmtp',
};
const YAHOO_TS04 = {
  code: 421,
  message: '4.7.0 [TS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1',
};
const MS_4500 = { code: 451, message: '4.7.500 Access denied, please try again later.' };

/**
 * A google subtask whose wait the throttle decided: sent back to the queue unsent at the pick
 * (never attempted), or refused with the 4.7.28 that suspends the pair (retried after it).
 */
const deferredRow = `(attempts = 0 OR last_error LIKE 'smtp_421: 421 4.7.28 %')`;

describe('throttles per mailbox provider in the send path', () => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  let offset = 0;
  const clock = () => DateTime.now().plus({ milliseconds: offset });
  const accepted = new Map<string, number>();
  let refuse: ((domain: string, n: number) => SmtpReply | undefined) | undefined;

  const domainOf = (a: string) => a.slice(a.lastIndexOf('@') + 1).toLowerCase();
  const received = (domain?: string) => smtp.messages.filter((m) => !domain || domainOf(m.envelopeTo[0]!) === domain);

  beforeEach(async () => {
    offset = 0;
    accepted.clear();
    refuse = undefined;
    smtp = await startSmtpCatcher({
      rcptReply: (to) => refuse?.(domainOf(to), accepted.get(domainOf(to)) ?? 0),
      onAccept: (m) => accepted.set(domainOf(m.to[0]!), (accepted.get(domainOf(m.to[0]!)) ?? 0) + 1),
    });
    engine = await createTestEngine({ schedulerTickMs: 50, retryDelayMs: 300, clock });
  });
  afterEach(async () => {
    await engine.close();
    await smtp.stop();
  });

  /** A user with one campaign to the given addresses. */
  async function campaign(name: string, emails: string[]) {
    const u = await engine.users.create({ name, email: `${name}@example.test`, quota: 10_000 });
    const { ids } = await engine.contacts.bulkCreate(
      u.id,
      emails.map((email) => ({ email })),
    );
    const t = await engine.templates.create(u.id, { name: 't', subject: `from ${name}`, text: 'x' });
    const c = await engine.campaigns.create({ userId: u.id, name, from: `${name}@example.test`, templates: [t.id], contacts: ids });
    return { userId: u.id, campaignId: c.id };
  }
  const addresses = (prefix: string, domain: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}@${domain}`);

  async function scope(provider: string): Promise<ScopeStatus | undefined> {
    const st = await engine.scheduler.status();
    return st.services[0]?.deliverability.providers.find((p) => p.provider === provider);
  }

  /** Every message exactly once at the server, and every subtask sent. */
  async function allDeliveredOnce(total: number) {
    await until(() => smtp.messages.length >= total, 60_000, `${total} messages at the server`);
    await until(
      async () =>
        (await rows<{ n: number }>(engine.apiDb, "SELECT count(*)::int AS n FROM subtasks WHERE status = 'sent'"))[0]!.n === total,
      30_000,
      'every subtask sent',
    );
    const ids = smtp.messages.map((m) => m.parsed.messageId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(smtp.messages).toHaveLength(total);
    const left = await rows<{ status: string; n: number }>(
      engine.apiDb,
      "SELECT status, count(*)::int AS n FROM subtasks WHERE status <> 'sent' GROUP BY 1",
    );
    expect(left).toEqual([]);
  }

  it('Gmail 421 4.7.28: google is suspended for the rule time, other providers and users go on at full rate, all arrive once', async () => {
    refuse = (domain, n) => (domain === 'gmail.com' && n >= 5 ? GMAIL_4728 : undefined);
    const a = await campaign('alice', addresses('a', 'gmail.com', 20)); // all for the throttled provider
    const b = await campaign('bob', addresses('b', 'example.org', 40));
    await campaign('carol', [...addresses('c', 'gmail.com', 10), ...addresses('c', 'yahoo.com', 10)].sort());
    await engine.services.create({
      name: 'relay',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0.02, // 50 a second
      dailyQuota: 100_000,
      maxConnections: 4,
    });
    const sent = recordSends(engine);
    await engine.scheduler.start();

    // Bob's mail and Carol's Yahoo mail all go while google is suspended.
    await until(() => received('example.org').length === 40 && received('yahoo.com').length === 10, 30_000, 'the other providers');
    const google = await scope('google');
    expect(google).toMatchObject({ state: 'suspended', lastDeferral: { rule: 'gmail-4.7.28-rate-limited' } });
    expect(google!.lastDeferral!.reply).toMatch(/^421 4\.7\.28 /);
    const until900 = Date.parse(google!.suspendedUntil!);
    expect(until900 - clock().toMillis()).toBeGreaterThan(800_000);
    expect(await scope('other:example.org')).toMatchObject({ state: 'normal', deferrals: 0 });
    // Google got its 5, plus at most the sends already under way when the first 421 came back.
    expect(received('gmail.com').length).toBeLessThanOrEqual(5 + 4);
    const gmailBefore = received('gmail.com').length;

    // The others go at the service's own pace, never faster. That they keep its full configured
    // rate is judged at a server in its own process: test/deliverability-rate.test.ts.
    const others = sent.filter((e) => !e.email.endsWith('@gmail.com')).map((e) => e.dispatchedAt);
    expect(paceViolations(others, 20, 0)).toBeNull();

    // The google messages wait in the queue for the end of the suspension, not lost, not sent.
    // Their deferrals are outcomes like any other: read them once written.
    await engine.scheduler.flush();
    const waiting = await rows<{
      n: number;
      deferred: number;
      earliest: Date | null;
      unexplained: number;
      due: Date | null;
    }>(
      engine.apiDb,
      `SELECT count(*)::int AS n,
              count(*) FILTER (WHERE ${deferredRow})::int AS deferred,
              min(not_before) FILTER (WHERE ${deferredRow}) AS earliest,
              count(*) FILTER (WHERE NOT (${deferredRow}) AND NOT (attempts > 0 AND last_error LIKE 'ambiguous%'))::int AS unexplained,
              max(not_before) FILTER (WHERE NOT (${deferredRow}) AND not_before < $end) AS due
         FROM subtasks WHERE provider = 'google' AND status = 'queued'`,
      { end: new Date(until900 - 1000) },
    );
    expect(waiting[0]!.n).toBe(30 - gmailBefore);
    // Every message the throttle decided on waits for the end of the suspension: those it sent back
    // to the queue unsent at the pick, and those refused with the 4.7.28 that started or extended it.
    expect(waiting[0]!.deferred).toBeGreaterThan(0);
    expect(waiting[0]!.earliest!.getTime()).toBeGreaterThanOrEqual(until900 - 1000);
    // The others can only be retries of sends whose reply never reached the engine (the pooled
    // connection's close won the race with the 421: an ambiguous failure, delivery/classify.ts),
    // so no rule saw them: they keep their own backoff until they are claimed again, and the pick
    // sends them back to the queue then. Whichever way, none may go to Gmail during the suspension
    // (checked below, once their backoff has passed).
    expect(waiting[0]!.unexplained).toBe(0);
    expect((await engine.scheduler.status()).deferredByThrottle).toBeGreaterThan(0);
    // The attempt records name the mailbox provider next to the domain.
    await until(
      async () =>
        (
          await rows<{ n: number }>(
            engine.apiDb,
            `SELECT count(*)::int AS n FROM send_attempts WHERE mailbox_provider = 'google' AND provider = 'gmail.com' AND enhanced_code = '4.7.28'`,
          )
        )[0]!.n > 0,
      10_000,
      'the 4.7.28 attempt recorded',
    );
    await until(async () => (await engine.campaigns.progress(b.campaignId)).status === 'completed', 20_000, "bob's campaign completed");

    // Status and /metrics show the scope and why.
    const metrics = createMetrics(engine, { queuedCount: async () => 0, processMetrics: false });
    const text = await metrics.registry.metrics();
    metrics.detach();
    expect(text).toMatch(/^fairsend_provider_state\{service_id="\d+",provider="google",state="suspended"\} 1$/m);
    expect(text).toMatch(/^fairsend_provider_state\{service_id="\d+",provider="yahoo",state="normal"\} 1$/m);
    expect(text).toMatch(/^fairsend_provider_suspended_until_seconds\{service_id="\d+",provider="google"\} 1\d{9}(\.\d+)?$/m);
    expect(text).toMatch(/^fairsend_provider_deferrals\{service_id="\d+",provider="google"\} [1-9]/m);

    // Nothing went to Gmail during the suspension. The retries above still on their own backoff
    // get the time to come due and be claimed again (a campaign looks at its queue again up to a
    // second after a claim that found messages in flight); then no google send may have started
    // after the engine learned of the suspension (its first 4.7.28 reply) but those already
    // picked by then, waiting in the pacer for their slot (at most its lookahead).
    if (waiting[0]!.due) {
      const due = waiting[0]!.due.getTime() + 1500;
      await until(() => clock().toMillis() > due, 10_000, 'the google retries due');
      await engine.scheduler.flush();
    }
    const late = await rows<{ n: number }>(
      engine.apiDb,
      `WITH k AS (SELECT min(attempted_at) AS k FROM send_attempts WHERE mailbox_provider = 'google' AND enhanced_code = '4.7.28')
       SELECT count(*) FILTER (WHERE a.attempted_at - make_interval(secs => a.duration_ms / 1000.0) > k.k + interval '2 milliseconds')::int AS n
         FROM send_attempts a, k WHERE a.mailbox_provider = 'google'`,
    );
    expect(late[0]!.n).toBeLessThanOrEqual(lookaheadFor(20));
    expect(received('gmail.com')).toHaveLength(gmailBefore);
    expect(
      (
        await rows<{ n: number }>(engine.apiDb, "SELECT count(*)::int AS n FROM subtasks WHERE provider = 'google' AND status = 'queued'")
      )[0]!.n,
    ).toBe(30 - gmailBefore);

    // Gmail recovers; 15 minutes later the pair resumes, slowed, and everything arrives once.
    refuse = undefined;
    offset += 901_000;
    await allDeliveredOnce(80);
    expect(await scope('google')).toMatchObject({ state: 'slowed' });
    await until(async () => (await engine.campaigns.progress(a.campaignId)).status === 'completed', 20_000, "alice's campaign completed");
    // Additive recovery: back to normal after enough quiet periods (60 s each, + 10 % each).
    offset += 11 * 60_000;
    expect(await scope('google')).toMatchObject({ state: 'normal' });
  });

  it('Yahoo TS04 suspends yahoo for an hour; a user whose mail is all for Yahoo blocks nobody and loses nothing', async () => {
    refuse = (domain, n) => (domain === 'yahoo.com' && n >= 3 ? YAHOO_TS04 : undefined);
    const y = await campaign('yana', addresses('y', 'yahoo.com', 12));
    await campaign('otto', addresses('o', 'example.net', 30));
    await engine.services.create({
      name: 'relay',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0.02,
      dailyQuota: 100_000,
      maxConnections: 3,
    });
    await engine.scheduler.start();
    await until(() => received('example.net').length === 30, 30_000, "otto's mail");
    expect(await scope('yahoo')).toMatchObject({ state: 'suspended', lastDeferral: { rule: 'yahoo-ts04-volume' } });
    expect(received('yahoo.com').length).toBeLessThanOrEqual(3 + 3);
    expect((await engine.campaigns.progress(y.campaignId)).status).toBe('sending');
    refuse = undefined;
    offset += 3_601_000;
    await allDeliveredOnce(42);
  });

  it('Microsoft 451 4.7.500 halves the rate to microsoft only; its sends keep the slower pace at the server', async () => {
    let refusals = 0;
    refuse = (domain, n) => (domain === 'outlook.com' && n >= 3 && refusals++ < 2 ? MS_4500 : undefined);
    await campaign('mia', addresses('m', 'outlook.com', 16));
    await campaign('otto', addresses('o', 'example.net', 16));
    await engine.services.create({
      name: 'relay',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0.05, // 20 a second
      dailyQuota: 100_000,
      maxConnections: 2,
    });
    const sent = recordSends(engine);
    await engine.scheduler.start();
    await allDeliveredOnce(32);
    const ms = await scope('microsoft');
    expect(ms).toMatchObject({ state: 'slowed', rate: 10, configuredRate: 20, lastDeferral: { rule: 'microsoft-4.7.5xx-6xx-throttled' } });
    expect(await scope('other:example.net')).toMatchObject({ state: 'normal' });
    // After the first 451, microsoft's sends are paced at 10 a second: no window of k intervals
    // (100 ms each) holds more than k + 1 of them (delays only make it slower).
    const firstDeferral = Date.parse(ms!.lastDeferral!.at) - offset;
    const after = sent.filter((e) => e.email.endsWith('@outlook.com') && e.dispatchedAt > firstDeferral + 50).map((e) => e.dispatchedAt);
    expect(after.length).toBeGreaterThan(5);
    expect(paceViolations(after, 100, 0)).toBeNull();
    // The service holds its sends (2 connections at 20 a second), but not those of a pair that
    // paces itself: microsoft's after its slowdown went unheld (34 sends: 32 and the 2 refused).
    const held = (await engine.scheduler.status()).services[0]!.heldSends;
    expect(held).toBeGreaterThanOrEqual(16);
    expect(held).toBeLessThanOrEqual(34 - after.length);
  });

  it('a warm-up ramp caps the day: the rest waits in the queue for the next day, then goes', async () => {
    await campaign('wendy', addresses('w', 'example.net', 10));
    const today = clock().toUTC().toISODate()!;
    await engine.services.create({
      name: 'relay',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0.02,
      dailyQuota: 100_000,
      maxConnections: 2,
      deliverability: { warmup: [{ start: today, zone: 'UTC', caps: [4, 100] }] },
    });
    await engine.scheduler.start();
    await until(() => smtp.messages.length === 4, 20_000, 'the first day cap');
    await until(
      async () =>
        (
          await rows<{ n: number }>(engine.apiDb, "SELECT count(*)::int AS n FROM subtasks WHERE status = 'queued' AND not_before > now()")
        )[0]!.n === 6,
      20_000,
      'the rest deferred to the next day',
    );
    const st = (await engine.scheduler.status()).services[0]!.deliverability;
    expect(st.warmup).toEqual([{ provider: null, day: 1, date: today, cap: 4, sentToday: 4 }]);
    expect(st.providers.find((p) => p.provider === 'other:example.net')).toMatchObject({ blocked: 'warmup' });
    expect(smtp.messages).toHaveLength(4);
    const midnight = clock().toUTC().startOf('day').plus({ days: 1 });
    offset += midnight.toMillis() - clock().toMillis() + 1000;
    await allDeliveredOnce(10);
    expect((await engine.scheduler.status()).services[0]!.deliverability.warmup[0]).toMatchObject({ day: 2, cap: 100, sentToday: 6 });
  });
});
