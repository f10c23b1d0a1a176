/**
 * SMTP faults injected by real SMTP servers on loopback, in both delivery modes. One campaign of
 * 500 recipients (5 % of them addresses every server refuses with 550) goes through four
 * services at once:
 *
 *   - flaky:    answers RCPT with a random 451 (8 %) or 421 (3 %), DATA with a random 451 (5 %),
 *               cuts the connection in the middle of DATA (3 %) or after it, before the reply (3 %);
 *   - slow:     answers DATA after 2.5 s, beyond the service's 1 s send timeout;
 *   - refusing: nothing listens on its port (connections refused);
 *   - healthy:  answers at once.
 *
 * Checked against the README: 4xx replies are retried with exponential backoff
 * (RETRY_DELAY_MS * 2^attempt, measured on the servers' side between two attempts of the same
 * recipient), at most MAX_RETRIES times; a 550 fails at once, is never retried and marks the
 * contact bounced; a refused connection is not an attempt, goes to another service, and makes its
 * service unhealthy; a send whose outcome is unknown (cut connection, timeout) is resent with the
 * same Message-ID under at-least-once (so duplicates are bounded by those sends) and marked
 * `unknown`, never resent, under at-most-once; and the slow service never holds the others up:
 * while each of its sends waits for its timeout, the other services keep delivering.
 *
 * The faults are decided per recipient and attempt from the seed, so a run replays with
 * CHAOS_SEED=<seed> (only which service carries which message varies between runs).
 */
import type { SMTPServerSession } from 'smtp-server';
import type { Engine } from '../../src/engine.js';
import type { SmtpReply } from '../../src/smtp-catcher.js';
import { createTestEngine, rows } from '../helpers/db.js';
import { freePort } from '../helpers/test-cluster.js';
import { until } from '../helpers/scheduler.js';
import { DeliveryLog, finalAccount } from './helpers/faults-common.js';
import { createRng, scenarioRng } from './helpers/faults-random.js';
import { recordFigures } from './report.js';

const RECIPIENTS = 500;
const RETRY_DELAY_MS = 200;
const MAX_RETRIES = 6;
const SLOW_TIMEOUT_MS = 1000;
const SLOW_REPLY_MS = 2500;
const isBounce = (email: string) => email.startsWith('bounce-');

interface RcptEvent {
  to: string;
  at: number;
  server: string;
  /** The fault injected into this attempt, if any. */
  fault?: string;
}

describe.each(['at-least-once', 'at-most-once'] as const)('SMTP faults (%s)', (mode) => {
  const log = new DeliveryLog();
  let engine: Engine | undefined;
  afterAll(async () => {
    await engine?.close();
    await log.stop();
  });

  it('retries, backs off, bounces and fails over as documented; a slow service never slows the others', async () => {
    const rng = scenarioRng(`smtp ${mode}`);
    /** A fault decision for this recipient's n-th attempt: the same for the same seed, whatever the interleaving. */
    const roll = (to: string, salt: string) => {
      let h = rng.seed;
      const key = `${to}|${attemptsOf.get(to) ?? 0}|${salt}`;
      for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
      return createRng(h).next();
    };
    const attemptsOf = new Map<string, number>();
    const rcpts: RcptEvent[] = [];
    const faults = { rcpt451: 0, rcpt421: 0, rcpt550: 0, data451: 0, midData: 0, afterData: 0, slowReplies: 0 };
    const last = new Map<string, RcptEvent>();
    const mark = (to: string, fault: string) => {
      const e = last.get(to.toLowerCase());
      if (e) e.fault = e.fault ? `${e.fault}+${fault}` : fault;
      return true;
    };
    const onRcpt = (server: string, fault: (to: string) => SmtpReply | undefined) => (address: string, _s: SMTPServerSession) => {
      const to = address.toLowerCase();
      const e: RcptEvent = { to, at: Date.now(), server };
      rcpts.push(e);
      last.set(to, e);
      attemptsOf.set(to, (attemptsOf.get(to) ?? 0) + 1);
      if (isBounce(to)) {
        faults.rcpt550++;
        mark(to, '550');
        return { code: 550, message: '5.1.1 No such user here' };
      }
      const reply = fault(to);
      if (reply) mark(to, String(reply.code));
      return reply;
    };

    // Each fault kind happens at random, and at least once: which messages reach the flaky server
    // depends on the routing, so a kind that has not come up by a stage's FORCE_AT-th transaction
    // is given to that one (a kind at 3 % could otherwise miss a run now and then).
    const FORCE_AT = 12;
    const seen = { rcpt: 0, mid: 0, after: 0, data: 0 };
    const due = (stage: keyof typeof seen, kind: keyof typeof faults) => seen[stage] >= FORCE_AT && faults[kind] === 0;
    const healthy = await log.server({ rcptReply: onRcpt('healthy', () => undefined) });
    const flaky = await log.server({
      rcptReply: onRcpt('flaky', (to) => {
        seen.rcpt++;
        const r = roll(to, 'rcpt');
        if (r < 0.08 || due('rcpt', 'rcpt451')) return (faults.rcpt451++, { code: 451, message: '4.7.1 Greylisted, try again later' });
        if (r < 0.11 || due('rcpt', 'rcpt421')) return (faults.rcpt421++, { code: 421, message: '4.3.2 Too busy, closing' });
        return undefined;
      }),
      dropMidData: ({ to }) =>
        (++seen.mid, roll(to[0]!, 'mid') < 0.03 || due('mid', 'midData')) && ++faults.midData > 0 && mark(to[0]!, 'cut mid-DATA'),
      dropAfterData: ({ to }) =>
        (++seen.after, roll(to[0]!, 'after') < 0.03 || due('after', 'afterData')) &&
        ++faults.afterData > 0 &&
        mark(to[0]!, 'cut after DATA'),
      dataReply: ({ to }) =>
        (++seen.data, roll(to[0]!, 'data') < 0.05 || due('data', 'data451'))
          ? (faults.data451++, mark(to[0]!, 'DATA 451'), { code: 451, message: '4.3.0 Temporary failure' })
          : undefined,
    });
    const slow = await log.server({ rcptReply: onRcpt('slow', () => undefined), delayMs: SLOW_REPLY_MS });
    const refusedPort = await freePort(); // nothing listens there

    engine = await createTestEngine({
      deliveryMode: mode,
      retryDelayMs: RETRY_DELAY_MS,
      maxRetries: MAX_RETRIES,
      unhealthyAfter: 5,
      probeBackoffMs: 500,
      schedulerTickMs: 50,
    });
    const user = await engine.users.create({ name: 'Faults', email: 'faults@example.test', quota: RECIPIENTS });
    const emails = Array.from({ length: RECIPIENTS }, (_, i) => (i % 20 === 7 ? `bounce-${i}@example.test` : `r${i}@example.test`));
    const { ids } = await engine.contacts.bulkCreate(
      user.id,
      emails.map((email) => ({ email, name: email.split('@')[0]! })),
    );
    const tpl = await engine.templates.create(user.id, { name: 't', subject: 'Faults for {{name}}', text: 'Hello {{name}}' });
    const c = await engine.campaigns.create({ userId: user.id, name: 'f', from: 'f@example.test', templates: [tpl.id], contacts: ids });
    const svc = async (name: string, port: number, extra: { maxConnections?: number; timeoutMs?: number; rate?: number } = {}) =>
      (
        await engine!.services.create({
          name,
          transport: { host: '127.0.0.1', port, ...(extra.timeoutMs ? { timeoutMs: extra.timeoutMs } : {}) },
          sendingRate: extra.rate ?? 0,
          dailyQuota: 100_000,
          maxConnections: extra.maxConnections ?? 3,
        })
      ).id;
    const ids_ = {
      // 100 a second each: the campaign lasts several of the slow service's timeouts.
      healthy: await svc('healthy', healthy.port, { rate: 0.01 }),
      flaky: await svc('flaky', flaky.port, { rate: 0.01 }),
      slow: await svc('slow', slow.port, { maxConnections: 1, timeoutMs: SLOW_TIMEOUT_MS }),
      refusing: await svc('refusing', refusedPort, { maxConnections: 2 }),
    };
    let refusingWasUnhealthy = false;
    engine.scheduler.on('tick', () => {
      const s = engine!.scheduler.status().services.find((x) => x.id === ids_.refusing);
      if (s?.state === 'unhealthy') refusingWasUnhealthy = true;
    });

    const started = Date.now();
    await engine.scheduler.start();
    await until(async () => (await engine!.campaigns.progress(c.id)).status === 'completed', 120_000, 'completion');
    const elapsedMs = Date.now() - started;
    await engine.scheduler.flush();

    const db = engine.apiDb;
    const acct = await finalAccount(db, [c.id]);
    const subtasks = await rows<{ email: string; status: string; attempts: number; service_id: number | null; last_error: string | null }>(
      db,
      'SELECT lower(email) AS email, status, attempts, service_id, last_error FROM subtasks WHERE task_id = $t',
      { t: c.id },
    );
    const errors = await rows<{ error_type: string; n: number }>(
      db,
      'SELECT error_type, sum(count)::int AS n FROM error_logs GROUP BY error_type ORDER BY error_type',
    );
    const errorCount = (prefix: string) => errors.filter((e) => e.error_type.startsWith(prefix)).reduce((n, e) => n + e.n, 0);
    const contacts = await rows<{ email: string; status: string }>(
      db,
      'SELECT lower(email) AS email, status FROM contacts WHERE user_id = $u',
      {
        u: user.id,
      },
    );
    const received = log.recipients();
    const duplicates = log.duplicates();
    const ambiguous = errorCount('ambiguous');

    // Backoff: between two attempts of a recipient (seen by the servers), at least RETRY_DELAY_MS * 2^(n-1).
    const byRecipient = new Map<string, RcptEvent[]>();
    for (const e of rcpts) byRecipient.set(e.to, [...(byRecipient.get(e.to) ?? []), e]);
    const backoffViolations: string[] = [];
    let retried = 0;
    for (const [to, evs] of byRecipient) {
      evs.sort((a, b) => a.at - b.at);
      if (evs.length > 1) retried++;
      for (let i = 1; i < evs.length; i++) {
        const gap = evs[i]!.at - evs[i - 1]!.at;
        const min = RETRY_DELAY_MS * 2 ** (i - 1);
        if (gap < min - 5) {
          const st = subtasks.find((x) => x.email === to);
          backoffViolations.push(
            `${to}: attempt ${i + 1} came ${gap} ms after attempt ${i} (backoff ${min} ms); attempts ${evs.map((e) => `${e.server}:${e.fault ?? 'ok'}`).join(', ')}; ` +
              `final ${st?.status} after ${st?.attempts} attempts (${st?.last_error ?? ''})`,
          );
        }
      }
    }

    // The slow service's pending sends: the other services kept delivering during each of them
    // (looked at while at least a fifth of the campaign was still to be delivered).
    const deliverable = emails.filter((e) => !isBounce(e)).length;
    const others = log.accepted.filter((a) => log.catchers[a.server] !== slow).sort((a, b) => a.at - b.at);
    const busyUntil = others[Math.floor(deliverable * 0.8)]?.at ?? Infinity;
    const slowWindows = rcpts.filter((e) => e.server === 'slow' && !isBounce(e.to) && e.at + SLOW_TIMEOUT_MS < busyUntil);
    const duringSlow = slowWindows.map((w) => others.filter((a) => a.at >= w.at && a.at <= w.at + SLOW_TIMEOUT_MS).length);
    faults.slowReplies = rcpts.filter((e) => e.server === 'slow' && !isBounce(e.to)).length;
    const refusedConnects = errorCount('connection');

    // Which recipients are accounted for.
    const exhausted = subtasks.filter((s) => !isBounce(s.email) && s.status !== 'sent' && s.attempts === MAX_RETRIES + 1);
    const lostList = subtasks.filter(
      (s) =>
        !isBounce(s.email) &&
        !received.has(s.email) &&
        !(mode === 'at-most-once' && s.status === 'unknown') &&
        !exhausted.some((x) => x.email === s.email),
    );
    const lost = acct.open + lostList.length + subtasks.filter((s) => s.status === 'sent' && !received.has(s.email)).length;
    const injected =
      faults.rcpt451 +
      faults.rcpt421 +
      faults.rcpt550 +
      faults.data451 +
      faults.midData +
      faults.afterData +
      faults.slowReplies +
      refusedConnects;

    console.log(
      `[chaos smtp ${mode}] seed ${rng.seed}; ${elapsedMs} ms; faults ${JSON.stringify({ ...faults, refusedConnects })}; ` +
        `states ${JSON.stringify(acct.byStatus)}; errors ${JSON.stringify(Object.fromEntries(errors.map((e) => [e.error_type, e.n])))}; ` +
        `${retried} recipients retried, ${exhausted.length} exhausted their retries; ${log.count} accepted, ${duplicates} duplicates ` +
        `(${ambiguous} ambiguous sends); other services' deliveries during each slow send: min ${Math.min(...duringSlow)}, ` +
        `over ${duringSlow.length} windows` +
        exhausted
          .map((x) => `; exhausted ${x.email}: ${(byRecipient.get(x.email) ?? []).map((e) => `${e.server}:${e.fault ?? 'ok'}`).join(', ')}`)
          .join(''),
    );

    // One final state per recipient, counters consistent.
    expect(acct.total).toBe(RECIPIENTS);
    expect(acct.open).toBe(0);
    expect(acct.counterMismatches).toEqual([]);
    // Every fault kind really happened.
    for (const [kind, n] of Object.entries({ ...faults, refusedConnects })) expect({ kind, n: n > 0 }).toEqual({ kind, n: true });
    // Bounces: failed at once, never retried, contact marked bounced.
    const bounces = subtasks.filter((s) => isBounce(s.email));
    expect(bounces.length).toBe(RECIPIENTS / 20);
    for (const b of bounces) {
      expect({ email: b.email, status: b.status, attempts: byRecipient.get(b.email)?.length, error: b.last_error?.slice(0, 8) }).toEqual({
        email: b.email,
        status: 'failed',
        attempts: 1,
        error: 'smtp_550',
      });
    }
    for (const ct of contacts)
      expect({ email: ct.email, status: ct.status }).toEqual({ email: ct.email, status: isBounce(ct.email) ? 'bounced' : 'active' });
    // Retries with exponential backoff, never more than MAX_RETRIES.
    expect(backoffViolations).toEqual([]);
    expect(retried).toBeGreaterThan(0);
    for (const s of subtasks) expect(s.attempts).toBeLessThanOrEqual(MAX_RETRIES + 1);
    for (const evs of byRecipient.values()) expect(evs.length).toBeLessThanOrEqual(MAX_RETRIES + 1);
    // No recipient failed except bounces and exhausted retries.
    for (const s of subtasks.filter((x) => x.status === 'failed' && !isBounce(x.email))) expect(s.attempts).toBe(MAX_RETRIES + 1);
    // Failover: the refusing service turned unhealthy and never recorded an outcome; its messages went elsewhere.
    expect(refusingWasUnhealthy).toBe(true);
    expect(subtasks.filter((s) => s.service_id === ids_.refusing)).toEqual([]);
    // Duplicates: only from sends whose outcome was unknown, and none at all under at-most-once.
    if (mode === 'at-least-once') {
      expect(duplicates).toBeLessThanOrEqual(ambiguous);
      // Unknown only when an ambiguous send used up the retries (documented: then it is not resent).
      for (const u of subtasks.filter((x) => x.status === 'unknown'))
        expect({ email: u.email, attempts: u.attempts }).toEqual({ email: u.email, attempts: MAX_RETRIES + 1 });
    } else {
      expect(duplicates).toBe(0);
      expect(acct.byStatus.unknown ?? 0).toBeGreaterThanOrEqual(faults.midData > 0 || faults.afterData > 0 ? 1 : 0);
    }
    // The slow service never held the others up.
    expect(duringSlow.length).toBeGreaterThan(0);
    expect(Math.min(...duringSlow)).toBeGreaterThan(0);
    expect(lostList).toEqual([]);
    expect(lost).toBe(0);

    await recordFigures({
      scenario: `SMTP faults: 451/421/550, cut DATA, slow replies, refused connections (${mode})`,
      faultsInjected: injected,
      faultsSurvived: injected,
      messagesSent: log.count,
      lost,
      duplicates,
      duplicateBound: mode === 'at-least-once' ? ambiguous : 0,
      inputsTried: 0,
      notes:
        `seed ${rng.seed}; ${Object.entries({ ...faults, refusedConnects })
          .map(([k, n]) => `${k} ${n}`)
          .join(', ')}; ${retried} retried (backoff checked), ${exhausted.length} exhausted; ` +
        `${acct.byStatus.unknown ?? 0} unknown; others delivered >= ${Math.min(...duringSlow)} during each slow send`,
    });
  });
});
