/**
 * "Other providers' mail on the same service keeps its full rate, measured at the server"
 * (issue 13): while one provider is suspended by its deferral rule, the service's other mail
 * arrives at the CONFIGURED rate of the service, judged on the instants a real smtp-server in a
 * process of its own (bench/sink.ts via test/helpers/sink.ts) accepted each message, so the
 * engine's event loop cannot delay the measurement. The server answers like the provider: after
 * N messages, Gmail's 421 4.7.28 for gmail.com, Yahoo's 421 [TS04] for yahoo.com.
 *
 * The tolerance: at least TOLERANCE x the configured rate over the window after the last refusal
 * (about 3 s, 60 messages). The pacer keeps the k + 1 rule at the server by waiting on the
 * server's answers (pacer.ts): an answer slower than one interval moves the sends after it back
 * for good, so on a loaded machine the achieved rate falls below the configured one whatever the
 * providers do. Measured at the server: 18.4 to 19.9 msg/s at load average 10; 15.3 and 17.1 msg/s
 * in a full suite run with SEND_WORKERS=2 at load average 13 (so 0.85 failed there). 75 % still
 * catches what the test is for: a throttled provider that held the others back (its messages
 * taking slots, its campaign blocking the ring) costs them its whole share, and with the others
 * held to 14/s per domain on purpose the test measured 11.7 msg/s (fails). Upwards there is no
 * tolerance: never more than k + 1 in any window of k intervals lasting at least one second
 * (paceViolations), the pacing rule.
 */
import { paceViolations } from '../services/scheduler/pacer.js';
import type { Engine } from '../src/engine.js';
import { createTestEngine, rows } from './helpers/db.js';
import { until } from './helpers/scheduler.js';
import { startSinkProcess, type SinkProcess } from './helpers/sink.js';

const RATE = 0.05; // the service's configured interval: 20 messages a second
const CONFIGURED = 1 / RATE;
const TOLERANCE = 0.75;

const CASES = [
  {
    name: 'Gmail 421 4.7.28 (google suspended for 15 min)',
    domain: 'gmail.com',
    provider: 'google',
    code: 421,
    message: '4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. - gsmtp',
  },
  {
    name: 'Yahoo 421 [TS04] (yahoo suspended for 1 h)',
    domain: 'yahoo.com',
    provider: 'yahoo',
    code: 421,
    message: '4.7.0 [TS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1',
  },
];

describe('other providers keep the configured rate while one is suspended (measured at the server)', () => {
  let sink: SinkProcess;
  let engine: Engine | undefined;
  beforeAll(async () => {
    sink = await startSinkProcess();
  });
  afterEach(async () => {
    await engine?.close();
    engine = undefined;
  });
  afterAll(() => sink.stop());

  const addresses = (prefix: string, d: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}@${d}`);
  /** Three users on one service at 20/s: thea's mail all for `domain`, otto's for others, mona's mixed. */
  async function threeUsers(e: Engine, domain: string, port: number, theas = 20): Promise<void> {
    const campaign = async (name: string, emails: string[]) => {
      const u = await e.users.create({ name, email: `${name}@example.test`, quota: 10_000 });
      const { ids } = await e.contacts.bulkCreate(
        u.id,
        emails.map((email) => ({ email })),
      );
      const t = await e.templates.create(u.id, { name: 't', subject: `from ${name}`, text: 'x' });
      await e.campaigns.create({ userId: u.id, name, from: `${name}@example.test`, templates: [t.id], contacts: ids });
    };
    await campaign('thea', addresses('t', domain, theas)); // all for the provider that will throttle
    await campaign('otto', addresses('o', 'example.org', 60));
    await campaign('mona', [...addresses('m', domain, 10), ...addresses('m', 'example.net', 10)].sort());
    await e.services.create({
      name: 'relay',
      transport: { host: '127.0.0.1', port },
      sendingRate: RATE,
      dailyQuota: 100_000,
      maxConnections: 4,
    });
  }
  const sentCount = async (e: Engine, where: string, p: string) =>
    (await rows<{ n: number }>(e.apiDb, `SELECT count(*)::int AS n FROM subtasks WHERE status = 'sent' AND ${where}`, { p }))[0]!.n;

  it.each(CASES)('$name', async ({ domain, provider, code, message }) => {
    const tag = `rate-${provider}`;
    const port = await sink.listenRefusing(tag, { domain, after: 3, code, message });
    engine = await createTestEngine({ schedulerTickMs: 50 });
    const e = engine;
    await threeUsers(e, domain, port);
    await e.scheduler.start();
    const others = 70;
    await until(async () => (await sentCount(e, 'provider <> $p', provider)) === others, 30_000, 'the other providers, all of their mail');
    const scope = (await e.scheduler.status()).services[0]!.deliverability.providers.find((p) => p.provider === provider);
    expect(scope).toMatchObject({ state: 'suspended' });
    const { accepted, refused } = await sink.arrivals(tag);

    const isThrottled = (rcpt: string) => rcpt.toLowerCase().endsWith(`@${domain}`);
    expect(accepted.filter((a) => !isThrottled(a.rcpt))).toHaveLength(others);
    expect(refused.length).toBeGreaterThan(0);
    // From the last refusal on, the provider is suspended: every slot of the service is the others'.
    const from = Math.max(...refused.map((r) => r.at));
    const window = accepted
      .filter((a) => a.at >= from)
      .map((a) => a.at)
      .sort((a, b) => a - b);
    expect(accepted.filter((a) => a.at >= from && isThrottled(a.rcpt))).toEqual([]);
    expect(window.length).toBeGreaterThanOrEqual(40);
    const rate = (window.length - 1) / ((window.at(-1)! - window[0]!) / 1000);
    console.log(
      `[deliverability-rate] ${provider} suspended: ${window.length} other messages at ${rate.toFixed(2)} msg/s at the server, ${CONFIGURED} configured`,
    );
    expect(rate).toBeGreaterThanOrEqual(TOLERANCE * CONFIGURED);
    expect(paceViolations(window, RATE * 1000)).toBeNull();
  });

  it('Microsoft 451 4.7.500 (microsoft slowed to half): the service keeps its rate, the others take what microsoft leaves', async () => {
    const tag = 'rate-microsoft';
    const message = '4.7.500 Access denied, please try again later. (S3150)';
    // Two refusals, then the server accepts again: microsoft runs at half rate (10/s) from then on
    // (it recovers only after a minute without deferrals).
    const port = await sink.listenRefusing(tag, { domain: 'outlook.com', after: 3, code: 451, message, times: 2 });
    engine = await createTestEngine({ schedulerTickMs: 50, retryDelayMs: 200 });
    const e = engine;
    await threeUsers(e, 'outlook.com', port, 40);
    await e.scheduler.start();
    // Everything arrives in the end: 70 for the others, 50 for outlook.com (the 2 refused ones retried).
    await until(async () => (await sentCount(e, 'provider <> $p', 'microsoft')) === 70, 30_000, 'the other providers, all of their mail');
    await until(async () => (await sentCount(e, 'provider = $p', 'microsoft')) === 50, 30_000, 'microsoft, all of its mail');
    const scope = e.scheduler.status().services[0]!.deliverability.providers.find((p) => p.provider === 'microsoft');
    expect(scope).toMatchObject({
      state: 'slowed',
      rate: 10,
      configuredRate: 20,
      lastDeferral: { rule: 'microsoft-4.7.5xx-6xx-throttled' },
    });
    const { accepted, refused } = await sink.arrivals(tag);
    expect(refused).toHaveLength(2);
    expect(new Set(accepted.map((a) => a.rcpt)).size).toBe(120); // none lost, none twice
    expect(accepted).toHaveLength(120);
    const isMicrosoft = (rcpt: string) => rcpt.toLowerCase().endsWith('@outlook.com');
    // From the last refusal until the others' last message: both kinds have mail to send.
    const from = Math.max(...refused.map((r) => r.at));
    const until_ = Math.max(...accepted.filter((a) => !isMicrosoft(a.rcpt)).map((a) => a.at));
    const window = accepted.filter((a) => a.at >= from && a.at <= until_).sort((a, b) => a.at - b.at);
    const rateOf = (xs: { at: number }[]) => (xs.length - 1) / ((xs.at(-1)!.at - xs[0]!.at) / 1000);
    const ms = window.filter((a) => isMicrosoft(a.rcpt));
    const others = window.filter((a) => !isMicrosoft(a.rcpt));
    console.log(
      `[deliverability-rate] microsoft slowed: ${window.length} messages at ${rateOf(window).toFixed(2)} msg/s in all, ` +
        `microsoft ${rateOf(ms).toFixed(2)}, others ${rateOf(others).toFixed(2)} msg/s at the server, ${CONFIGURED} configured`,
    );
    expect(others.length).toBeGreaterThanOrEqual(30);
    expect(ms.length).toBeGreaterThanOrEqual(10);
    // The slowed provider is held to its half rate at the server: k + 1 in any k of its intervals.
    expect(
      paceViolations(
        ms.map((a) => a.at),
        2 * RATE * 1000,
      ),
    ).toBeNull();
    // The service's rate goes on in full: what microsoft no longer takes goes to the others.
    expect(rateOf(window)).toBeGreaterThanOrEqual(TOLERANCE * CONFIGURED);
    const slowed = 1 / (2 * RATE); // microsoft's rate in force: 10 a second
    expect(rateOf(others)).toBeGreaterThanOrEqual(TOLERANCE * (CONFIGURED - slowed));
    expect(
      paceViolations(
        window.map((a) => a.at),
        RATE * 1000,
      ),
    ).toBeNull();
  });
});
