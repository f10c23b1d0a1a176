/**
 * The shaping table's layers and one service's shaper, with an injected luxon clock: pair pacing
 * when slowed, suspension and recovery, caps per hour and day, warm-up across midnight, and
 * errors that name the field.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DateTime } from 'luxon';
import { loadShapingFile, parseServiceShaping, resolveShaping } from '../services/deliverability/shaping.js';
import { ServiceShaper } from '../services/deliverability/shaper.js';
import { ConfigError, ValidationError } from '../services/kernel/errors.js';

const GMAIL_4728 = '421 4.7.28 Our system has detected an unusual rate of unsolicited mail. - gsmtp';
const GMAIL_470 = '421 4.7.0 Try again later, closing connection. - gsmtp';

function clockAt(iso: string) {
  const c = { t: DateTime.fromISO(iso, { zone: 'UTC' }) };
  return { c, clock: () => c.t, tick: (ms: number) => (c.t = c.t.plus({ milliseconds: ms })) };
}

describe('shaping layers', () => {
  it('merges defaults, the install file and the service, field by field', () => {
    const file = { default: { hourly: 1000 }, providers: { google: { ratePerSecond: 5 }, other: { concurrency: 2 } } };
    const svc = parseServiceShaping({
      providers: { google: { hourly: 200 }, 'other:acme.com': { concurrency: 1 } },
      adaptive: { quietMs: 1000 },
    });
    const r = resolveShaping(file, svc);
    expect(r.limitsFor('google')).toEqual({ ratePerSecond: 5, concurrency: 20, hourly: 200, daily: null });
    expect(r.limitsFor('yahoo')).toEqual({ ratePerSecond: null, concurrency: 5, hourly: 1000, daily: null });
    expect(r.limitsFor('other:beta.com')).toEqual({ ratePerSecond: null, concurrency: 2, hourly: 1000, daily: null });
    expect(r.limitsFor('other:acme.com').concurrency).toBe(1);
    expect(r.adaptive.quietMs).toBe(1000);
    expect(r.adaptive.floorFraction).toBe(0.1);
  });

  it('refuses bad service settings naming the field', () => {
    const issues = (input: unknown) => {
      try {
        parseServiceShaping(input);
      } catch (e) {
        expect(e).toBeInstanceOf(ValidationError);
        return (e as ValidationError).issues.map((i) => i.path);
      }
      throw new Error('accepted');
    };
    expect(issues({ providers: { google: { hourly: -1 } } })).toEqual(['deliverability.providers.google.hourly']);
    expect(issues({ providers: { gmail: {} } })).toEqual(['deliverability.providers.gmail']);
    expect(issues({ warmup: [{ start: 'tomorrow', caps: [1] }] })).toEqual(['deliverability.warmup.0.start']);
    expect(issues({ rules: [{ name: 'x', code: 421, scope: 'provider', action: { type: 'pause' } }] })).toEqual([
      'deliverability.rules.0.action.type',
    ]);
    expect(issues({ speed: 3 })).toEqual(['deliverability']);
  });

  it('reads the install file, and refuses a bad one naming the file and field', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shaping-'));
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify({ providers: { yahoo: { ratePerSecond: 2 } } }));
    expect(loadShapingFile(good).providers?.yahoo?.ratePerSecond).toBe(2);
    expect(loadShapingFile(undefined)).toEqual({});
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ providers: { yahoo: { ratePerSecond: 'fast' } } }));
    expect(() => loadShapingFile(bad)).toThrow(ConfigError);
    expect(() => loadShapingFile(bad)).toThrow(/DELIVERABILITY_SHAPING_FILE .*bad\.json: providers\.yahoo\.ratePerSecond: /);
    writeFileSync(bad, '{ nope');
    expect(() => loadShapingFile(bad)).toThrow(/cannot be read as JSON/);
  });
});

describe('ServiceShaper', () => {
  it('a Gmail 4.7.28 suspends google only; it resumes slowed, paced, and recovers', () => {
    const { clock, tick } = clockAt('2026-11-30T10:00:00Z');
    const shaping = resolveShaping({}, { adaptive: { quietMs: 10_000, recoveryStep: 0.25 } });
    const s = new ServiceShaper({ shaping, serviceRate: 10, quotaZone: 'UTC', clock });
    expect(s.blocked('google')).toBeUndefined();
    s.begin('google');
    s.end('google');
    const d = s.onReply('google', GMAIL_4728, 421);
    expect(d).toMatchObject({ effect: 'suspended', rule: { name: 'gmail-4.7.28-rate-limited' } });
    expect(d.retryAt).toBe(clock().toMillis() + 900_000);
    expect(s.blocked('google')).toEqual({ reason: 'suspended', until: d.retryAt });
    expect(s.blocked('yahoo')).toBeUndefined();
    expect(s.blocked('other:acme.com')).toBeUndefined();
    const st = s.status().find((x) => x.provider === 'google')!;
    expect(st).toMatchObject({ state: 'suspended', suspendedUntil: '2026-11-30T10:15:00.000Z', deferrals: 1 });
    expect(st.lastDeferral).toMatchObject({ rule: 'gmail-4.7.28-rate-limited', reply: GMAIL_4728 });

    tick(900_000);
    expect(s.blocked('google')).toBeUndefined();
    // resumed at 5/s: after one send, the next is due 200 ms later
    s.begin('google');
    s.end('google');
    expect(s.blocked('google')).toEqual({ reason: 'rate', until: clock().toMillis() + 200 });
    tick(200);
    expect(s.blocked('google')).toBeUndefined();
    tick(9_800); // one quiet period: 5 + 2.5
    expect(s.status().find((x) => x.provider === 'google')).toMatchObject({ state: 'slowed', rate: 7.5 });
    tick(10_000);
    expect(s.status().find((x) => x.provider === 'google')).toMatchObject({ state: 'normal', rate: null });
  });

  it('a slow reply halves the pair pace from the service rate, once per hold window', () => {
    const { clock, tick } = clockAt('2026-11-30T10:00:00Z');
    const s = new ServiceShaper({ shaping: resolveShaping({}, {}), serviceRate: 8, quotaZone: 'UTC', clock });
    expect(s.onReply('google', GMAIL_470, 421)).toMatchObject({ effect: 'slowed' });
    expect(s.onReply('google', GMAIL_470, 421)).toMatchObject({ effect: 'held' });
    expect(s.status()[0]).toMatchObject({ state: 'slowed', rate: 4, deferrals: 2 });
    tick(5_000);
    expect(s.onReply('google', GMAIL_470, 421)).toMatchObject({ effect: 'slowed' });
    expect(s.status()[0]).toMatchObject({ rate: 2 });
    expect(s.onReply('google', '550 5.1.1 No such user', 550)).toEqual({ effect: 'none' });
    expect(s.onReply('google', '450 4.2.1 The user you are trying to contact is receiving mail too fast', 450)).toMatchObject({
      effect: 'retry',
    });
  });

  it('caps concurrency, the hour and the quota day per provider', () => {
    const { clock, tick } = clockAt('2026-11-30T22:59:00Z');
    const shaping = resolveShaping({}, { providers: { yahoo: { concurrency: 2, hourly: 3, daily: 4 } } });
    const s = new ServiceShaper({ shaping, serviceRate: null, quotaZone: 'Europe/Berlin', clock });
    s.begin('yahoo');
    s.begin('yahoo');
    expect(s.blocked('yahoo')).toEqual({ reason: 'concurrency', until: null });
    s.end('yahoo');
    s.end('yahoo');
    s.begin('yahoo');
    s.end('yahoo');
    expect(s.blocked('yahoo')).toEqual({ reason: 'hourly', until: DateTime.fromISO('2026-11-30T23:00:00Z').toMillis() });
    expect(s.blocked('google')).toBeUndefined();
    tick(60_000); // 23:00 UTC is midnight in Berlin: a new hour and a new quota day
    expect(s.blocked('yahoo')).toBeUndefined();
    for (let i = 0; i < 3; i++) {
      s.begin('yahoo');
      s.end('yahoo');
    }
    tick(3_600_000);
    s.begin('yahoo');
    s.end('yahoo');
    expect(s.blocked('yahoo')).toMatchObject({ reason: 'daily', until: DateTime.fromISO('2026-12-01T23:00:00Z').toMillis() });
  });

  it('applies warm-up caps per provider and overall, a new cap each day in the schedule zone', () => {
    const { clock, c } = clockAt('2026-10-24T20:00:00Z');
    const shaping = resolveShaping(
      {},
      parseServiceShaping({
        warmup: [
          { start: '2026-10-24', zone: 'Europe/Berlin', caps: [2, 4], provider: 'google' },
          { start: '2026-10-24', zone: 'Europe/Berlin', caps: [3, 6, 9] },
        ],
      }),
    );
    const s = new ServiceShaper({ shaping, serviceRate: null, quotaZone: 'UTC', clock });
    const send = (p: 'google' | 'yahoo', n: number) => {
      for (let i = 0; i < n; i++) {
        expect(s.blocked(p)).toBeUndefined();
        s.begin(p);
        s.end(p);
      }
    };
    send('google', 2);
    expect(s.blocked('google')).toMatchObject({ reason: 'warmup' });
    send('yahoo', 1);
    expect(s.blocked('yahoo')).toMatchObject({ reason: 'warmup' }); // overall: 3 a day
    expect(s.warmupStatus()).toEqual([
      { provider: 'google', day: 1, date: '2026-10-24', cap: 2, sentToday: 2 },
      { provider: null, day: 1, date: '2026-10-24', cap: 3, sentToday: 3 },
    ]);
    // 22:00Z on the 24th is midnight in Berlin (summer time); the next day has 25 hours
    c.t = DateTime.fromISO('2026-10-24T22:00:00Z');
    send('google', 4);
    send('yahoo', 2);
    expect(s.blocked('google')).toMatchObject({ reason: 'warmup' });
    expect(s.warmupStatus()[1]).toMatchObject({ day: 2, cap: 6, sentToday: 6 });
    // 23:00Z on the 25th is midnight in Berlin (winter time): day 3, google's ramp is over
    c.t = DateTime.fromISO('2026-10-25T22:30:00Z');
    expect(s.blocked('yahoo')).toMatchObject({ reason: 'warmup' });
    c.t = DateTime.fromISO('2026-10-25T23:00:00Z');
    expect(s.warmupStatus()).toEqual([
      { provider: 'google', day: 3, date: '2026-10-26', cap: null, sentToday: 0 },
      { provider: null, day: 3, date: '2026-10-26', cap: 9, sentToday: 0 },
    ]);
    send('google', 9);
    expect(s.blocked('google')).toMatchObject({ reason: 'warmup' });
  });
});
