/**
 * send.ts as pure code: each step of a message's send decides the outcome, the quota unit, the
 * service's health, the bounce, and checkDecision holds on every Decision.
 */
import { DateTime } from 'luxon';
import { compileForSending } from '../services/delivery/message.js';
import type { Claimed } from '../services/scheduler/campaign-pool.js';
import {
  afterSend,
  beforeSend,
  checkDecision,
  compose,
  notDispatched,
  withdrawn,
  type Decision,
  type SendPolicy,
} from '../services/scheduler/send.js';

const item = (over: Partial<Claimed> = {}): Claimed => ({
  taskId: 3,
  contactId: 9,
  email: 'ann@example.test',
  templateId: 1,
  attempts: 0,
  timezone: null,
  name: 'Ann',
  attributes: {},
  contactActive: true,
  suppressed: null,
  lastServiceId: null,
  provider: 'other:example.test',
  ...over,
});
const at = new Date('2026-11-30T10:00:00Z');
const now = DateTime.fromJSDate(at);
const policy: SendPolicy = { mode: 'at-least-once', maxRetries: 3, retryDelayMs: 1000 };
const send = (over: Partial<Parameters<typeof afterSend>[0]> = {}): Decision =>
  checkDecision(afterSend({ item: item(), serviceId: 5, at, messageId: '<3.9@x>', policy, failed: false, durationMs: 12, ...over }));
const smtp = (responseCode: number, command = 'RCPT TO') => ({ code: 'EENVELOPE', responseCode, command, response: `${responseCode} x` });

describe('the send Decision', () => {
  it('sent: the unit is spent, the service proven healthy, the outcome an attempt with the Message-ID', () => {
    const d = send();
    expect(d).toMatchObject({ unit: 'spent', health: 'ok', event: 'sent', putBack: false, bounce: false });
    expect(d.outcome).toMatchObject({ status: 'sent', serviceId: 5, messageId: '<3.9@x>', attempt: 1, at });
    expect(send({ response: '250 2.0.0 Ok: queued as X' }).attempt).toEqual({
      at,
      serviceId: 5,
      provider: 'example.test',
      mailboxProvider: 'other:example.test',
      result: 'accepted',
      code: 250,
      enhanced: '2.0.0',
      reply: '250 2.0.0 Ok: queued as X',
      durationMs: 12,
    });
  });

  it('transient: a retry with exponential backoff and the unit returned; failed once retries are used up', () => {
    const d = send({ failed: true, error: smtp(451), item: item({ attempts: 2 }) });
    expect(d).toMatchObject({ unit: 'returned', health: null, event: 'retry', retryAt: at.getTime() + 4000, wakeAt: null });
    expect(d.outcome).toMatchObject({ status: 'queued', attempt: 1, notBefore: new Date(at.getTime() + 4000) });
    const last = send({ failed: true, error: smtp(451), item: item({ attempts: 3 }) });
    expect(last.outcome?.status).toBe('failed');
    expect(last.unit).toBe('returned');
  });

  it('421 counts against the service; 451 does not', () => {
    expect(send({ failed: true, error: { code: 'ECONNECTION', responseCode: 421, response: '421 bye' } }).health).toBe('fault');
    expect(send({ failed: true, error: smtp(451) }).health).toBeNull();
  });

  it('permanent: failed, the unit returned, a bounce only for a missing mailbox at RCPT', () => {
    expect(send({ failed: true, error: smtp(550) })).toMatchObject({ bounce: true, unit: 'returned', event: 'failed' });
    expect(send({ failed: true, error: smtp(550) }).attempt).toMatchObject({ result: 'permanent', code: 550 });
    expect(send({ failed: true, error: smtp(554, 'DATA') })).toMatchObject({ bounce: false, unit: 'returned' });
  });

  it('connection: put back with its unit, not an attempt, a fault of the service', () => {
    const d = send({ failed: true, error: { code: 'ESOCKET', command: 'CONN', message: 'connect ECONNREFUSED 127.0.0.1:2' } });
    expect(d).toMatchObject({ outcome: null, putBack: true, unit: 'returned', health: 'fault' });
  });

  it('ambiguous: the unit stays spent; retried under at-least-once, unknown under at-most-once', () => {
    const drop = { code: 'ECONNECTION', command: 'CONN', message: 'Connection closed unexpectedly' };
    const alo = send({ failed: true, error: drop });
    expect(alo).toMatchObject({ unit: 'spent', health: 'fault' });
    expect(alo.outcome?.status).toBe('queued');
    const amo = send({ failed: true, error: drop, policy: { ...policy, mode: 'at-most-once' } });
    expect(amo.outcome).toMatchObject({ status: 'unknown', messageId: '<3.9@x>' });
  });

  it('before the send: a lapsed lease releases, an inactive contact cancels, a closed window waits', () => {
    expect(beforeSend({ item: item(), campaign: { sendWindow: null }, now, leaseValid: true })).toBeNull();
    const lapse = checkDecision(beforeSend({ item: item(), campaign: { sendWindow: null }, now, leaseValid: false })!);
    expect(lapse).toMatchObject({ leaseLapse: true, unit: 'returned' });
    expect(lapse.outcome).toMatchObject({ status: 'queued', attempt: 0 });
    const gone = checkDecision(
      beforeSend({ item: item({ contactActive: false }), campaign: { sendWindow: null }, now, leaseValid: true })!,
    );
    expect(gone.outcome?.status).toBe('cancelled');
    const suppressed = beforeSend({ item: item({ suppressed: 'complaint' }), campaign: { sendWindow: null }, now, leaseValid: true })!;
    expect(suppressed.outcome).toMatchObject({ status: 'cancelled', error: 'suppressed: complaint' });
    expect(suppressed.unit).toBe('returned');
    // 10:00 UTC in Tokyo is 19:00: outside 09:00-17:00, so it waits for 09:00 the next day.
    const window = { start: '09:00', end: '17:00', timezone: 'UTC' };
    const wait = beforeSend({ item: item({ timezone: 'Asia/Tokyo' }), campaign: { sendWindow: window }, now, leaseValid: true })!;
    expect(wait.outcome).toMatchObject({ status: 'queued', attempt: 0 });
    expect(new Date(wait.wakeAt!).toISOString()).toBe('2026-12-01T00:00:00.000Z');
  });

  it('compose: a template not loaded puts the message back; one that cannot render fails it', () => {
    const campaign = { id: 3, name: 'c', fromAddress: 'a@example.test', fromName: null };
    const base = { campaign, item: item(), options: {}, serviceId: 5, at };
    expect(compose({ ...base, template: undefined }).decision).toMatchObject({ putBack: true, outcome: null, unit: 'returned' });
    const ok = compose({ ...base, template: compileForSending({ subject: 'Hi {{name}}', html: null, text: 'x' }) });
    expect(ok.mail?.subject).toBe('Hi Ann');
    const broken = compose({ ...base, template: compileForSending({ subject: 'Hi {{', html: null, text: 'x' }) });
    expect(broken.decision?.outcome).toMatchObject({ status: 'failed', attempt: 0 });
    expect(broken.decision?.error?.type).toBe('template');
  });

  it('not dispatched: the service stopped (put back) or the lease was lost (not ours, nothing written)', () => {
    expect(checkDecision(notDispatched('stopped'))).toMatchObject({ putBack: true, outcome: null });
    expect(checkDecision(notDispatched('lease lost'))).toMatchObject({ putBack: false, outcome: null, unit: 'returned' });
  });

  it('withdrawn at its slot: back to queued for a paused campaign, cancelled for a cancelled one; never an attempt', () => {
    const at = new Date('2026-11-30T10:00:00Z');
    expect(checkDecision(withdrawn('paused', at))).toMatchObject({
      outcome: { status: 'queued', attempt: 0, serviceId: null, at },
      unit: 'returned',
      putBack: false,
      event: null,
      attempt: null,
    });
    expect(checkDecision(withdrawn('cancelled', at))).toMatchObject({ outcome: { status: 'cancelled', attempt: 0 }, unit: 'returned' });
  });

  it('checkDecision refuses a Decision whose fields contradict each other', () => {
    expect(() => checkDecision({ ...notDispatched('stopped'), unit: 'spent' })).toThrow(/INVALID|transition|spent|put back/i);
    expect(() => checkDecision({ ...send(), outcome: { ...send().outcome!, status: 'failed' } })).toThrow();
    expect(() => checkDecision({ ...send({ failed: true, error: smtp(554, 'DATA') }), bounce: true, outcome: null })).toThrow();
  });
});
