/**
 * The fair pick with throttled mailbox providers, and a rule's verdict applied to a send's
 * Decision, as pure code (a real FairRing and real buffers; no database, no SMTP).
 */
import { CampaignState, type Claimed } from '../services/scheduler/campaign-pool.js';
import { FairRing } from '../services/scheduler/fair-ring.js';
import { pick, type PickEnv } from '../services/scheduler/pick.js';
import { afterSend, applyReplyRule } from '../services/scheduler/send.js';
import type { Block } from '../services/deliverability/shaper.js';
import type { Provider } from '../services/deliverability/providers.js';

const campaign = (id: number, userId: number) =>
  new CampaignState({
    id,
    name: `c${id}`,
    userId,
    priority: 0,
    status: 'sending',
    fromAddress: 'a@example.test',
    fromName: null,
    sendWindow: null,
    waitReason: null,
  });

const item = (taskId: number, contactId: number, provider: Provider): Claimed => ({
  taskId,
  contactId,
  email: `u${contactId}@x.test`,
  templateId: 1,
  attempts: 0,
  timezone: null,
  name: null,
  attributes: {},
  contactActive: true,
  suppressed: null,
  lastServiceId: null,
  provider,
});

function setup(campaigns: CampaignState[], blocks: Map<Provider, Block>, over: Partial<PickEnv> = {}) {
  const ring = new FairRing();
  const map = new Map(campaigns.map((c) => [c.id, c]));
  for (const c of campaigns) {
    ring.upsert({ campaignId: c.id, userId: c.userId, priority: 0 });
    ring.setSendable(c.id, c.size > 0);
  }
  const deferred: { campaign: number; contacts: number[]; until: number }[] = [];
  const unsendable: number[] = [];
  const env: PickEnv = {
    serviceId: 1,
    ring,
    campaign: (id) => map.get(id),
    otherCarrier: () => false,
    lowWater: 0,
    setSendable: (c, on) => {
      ring.setSendable(c.id, on);
      if (!on) unsendable.push(c.id);
    },
    refill: () => undefined,
    blocked: (p) => blocks.get(p),
    defer: (c, items, until) => deferred.push({ campaign: c.id, contacts: items.map((i) => i.contactId), until }),
    now: () => 1_000_000,
    ...over,
  };
  return { env, ring, deferred, unsendable };
}

const seq = (env: PickEnv, n: number) => Array.from({ length: n }, () => pick(env)).map((p) => p && `${p.c.id}:${p.item.contactId}`);

describe('pick with throttled providers', () => {
  it('a briefly blocked provider: the campaign sends its next message for another provider, and keeps the rest in order', () => {
    const a = campaign(1, 10);
    a.add([item(1, 1, 'google'), item(1, 2, 'google'), item(1, 3, 'yahoo'), item(1, 4, 'google')]);
    const b = campaign(2, 20);
    b.add([item(2, 5, 'yahoo'), item(2, 6, 'yahoo')]);
    const blocks = new Map<Provider, Block>([['google', { reason: 'rate', until: 1_000_100 }]]);
    const { env, deferred } = setup([a, b], blocks);
    expect(seq(env, 3)).toEqual(['1:3', '2:5', '2:6']);
    // Alice's campaign keeps its place: google messages wait in the buffer, nothing deferred.
    expect(pick(env)).toBeUndefined();
    expect(deferred).toEqual([]);
    expect(a.size).toBe(3);
    blocks.clear();
    expect(seq(env, 3)).toEqual(['1:1', '1:2', '1:4']);
  });

  it('a user whose mail is all for a suspended provider blocks nobody: others keep their turns, the messages go back to the queue', () => {
    const a = campaign(1, 10);
    a.add([item(1, 1, 'google'), item(1, 2, 'google')]);
    const b = campaign(2, 20);
    b.add([item(2, 3, 'other:acme.com'), item(2, 4, 'other:acme.com')]);
    const c = campaign(3, 30);
    c.add([item(3, 5, 'yahoo'), item(3, 6, 'google')]);
    const blocks = new Map<Provider, Block>([['google', { reason: 'suspended', until: 1_900_000 }]]);
    const { env, deferred } = setup([a, b, c], blocks);
    expect(seq(env, 3)).toEqual(['2:3', '3:5', '2:4']);
    expect(pick(env)).toBeUndefined();
    expect(deferred).toEqual([
      { campaign: 1, contacts: [1, 2], until: 1_900_000 },
      { campaign: 3, contacts: [6], until: 1_900_000 },
    ]);
    expect(a.size + c.size).toBe(0);
  });

  it("a skipped campaign hands its user's turn to the same user's next campaign", () => {
    const a1 = campaign(1, 10);
    a1.add([item(1, 1, 'google'), item(1, 2, 'google')]);
    const a2 = campaign(2, 10);
    a2.add([item(2, 3, 'yahoo'), item(2, 4, 'yahoo'), item(2, 5, 'yahoo')]);
    const b = campaign(3, 20);
    b.add([item(3, 6, 'yahoo'), item(3, 7, 'yahoo'), item(3, 8, 'yahoo')]);
    const blocks = new Map<Provider, Block>([['google', { reason: 'rate', until: 1_000_100 }]]);
    const { env } = setup([a1, a2, b], blocks);
    // Alternating users, one turn each: user 10 sends from its other campaign when a1 cannot.
    expect(seq(env, 6)).toEqual(['2:3', '3:6', '2:4', '3:7', '2:5', '3:8']);
    expect(a1.size).toBe(2);
  });

  it('a suspended provider stays in the buffer when another service carries the campaign', () => {
    const a = campaign(1, 10);
    a.add([item(1, 1, 'google')]);
    const blocks = new Map<Provider, Block>([['google', { reason: 'suspended', until: 1_900_000 }]]);
    const { env, deferred, unsendable } = setup([a], blocks, { otherCarrier: () => true });
    expect(pick(env)).toBeUndefined();
    expect(deferred).toEqual([]);
    expect(a.size).toBe(1);
    expect(unsendable).toEqual([]);
  });
});

describe('applyReplyRule', () => {
  const at = new Date('2026-11-30T10:00:00Z');
  const base = {
    item: item(1, 1, 'google'),
    serviceId: 1,
    at,
    messageId: '<m>',
    policy: { mode: 'at-least-once' as const, maxRetries: 0, retryDelayMs: 1000 },
    failed: true,
    durationMs: 5,
  };
  const err = (code: number, text: string) =>
    Object.assign(new Error(text), { code: 'EENVELOPE', responseCode: code, response: text, command: 'RCPT TO' });

  it('a suspension retries the message after it, even with no retries left, and is no fault of the service', () => {
    const d = afterSend({ ...base, error: err(421, '421 4.7.28 rate limited') });
    expect(d.outcome?.status).toBe('failed'); // maxRetries 0: the plain policy would give up
    const rule = {
      name: 'g',
      provider: 'google',
      enhanced: '4.7.28',
      scope: 'provider',
      action: { type: 'suspend', seconds: 900 },
    } as const;
    const r = applyReplyRule(d, { rule, effect: 'suspended', retryAt: at.getTime() + 900_000 }, { at, retryDelayMs: 1000 });
    expect(r).toMatchObject({
      health: null,
      wakeAt: null,
      // It wakes the campaign at the suspension's end only if the campaign waits anyway.
      retryAt: at.getTime() + 900_000,
      event: 'retry',
      outcome: { status: 'queued', notBefore: new Date(at.getTime() + 900_000) },
    });
    const slowed = applyReplyRule(d, { rule, effect: 'slowed' }, { at, retryDelayMs: 1000 });
    expect(slowed.outcome).toMatchObject({ status: 'queued', notBefore: new Date(at.getTime() + 1000) });
    // A generic rule (no provider) slows the pair only: the message keeps the usual policy, the
    // failure counts for the service's health (it may be the relay's own trouble).
    const generic = { name: 'x', code: 421, scope: 'provider', action: { type: 'slow', factor: 0.5 } } as const;
    expect(applyReplyRule(d, { rule: generic, effect: 'slowed' }, { at, retryDelayMs: 1000 })).toBe(d);
  });

  it('fail ends the message; retry keeps the usual policy; no rule changes nothing', () => {
    const d = afterSend({ ...base, policy: { ...base.policy, maxRetries: 3 }, error: err(421, '421 4.7.0 [TS03] permanently deferred') });
    expect(applyReplyRule(d, { effect: 'fail' }, { at, retryDelayMs: 1000 }).outcome?.status).toBe('failed');
    expect(applyReplyRule(d, { effect: 'retry' }, { at, retryDelayMs: 1000 })).toEqual({ ...d, health: null });
    expect(applyReplyRule(d, { effect: 'none' }, { at, retryDelayMs: 1000 })).toBe(d);
  });
});
