/**
 * The fair pick (services/scheduler/pick.ts) as pure code: a real FairRing and real campaign
 * buffers, no database, no SMTP.
 */
import { CampaignState, type Claimed } from '../services/scheduler/campaign-pool.js';
import { FairRing } from '../services/scheduler/fair-ring.js';
import { pick, type PickEnv } from '../services/scheduler/pick.js';

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

const item = (taskId: number, contactId: number, over: Partial<Claimed> = {}): Claimed => ({
  taskId,
  contactId,
  email: `u${contactId}@example.test`,
  templateId: 1,
  attempts: 0,
  timezone: null,
  name: null,
  attributes: {},
  contactActive: true,
  suppressed: null,
  lastServiceId: null,
  provider: 'other:example.test',
  ...over,
});

function setup(campaigns: CampaignState[], over: Partial<PickEnv> = {}) {
  const ring = new FairRing();
  const map = new Map(campaigns.map((c) => [c.id, c]));
  for (const c of campaigns) {
    ring.upsert({ campaignId: c.id, userId: c.userId, priority: c.priority });
    ring.setSendable(c.id, c.size > 0);
  }
  const calls = { refill: [] as number[], unsendable: [] as number[] };
  const env: PickEnv = {
    serviceId: 1,
    ring,
    campaign: (id) => map.get(id),
    otherCarrier: () => false,
    lowWater: 0,
    setSendable: (c, on) => {
      ring.setSendable(c.id, on);
      if (!on) calls.unsendable.push(c.id);
    },
    refill: (c) => calls.refill.push(c.id),
    ...over,
  };
  return { ring, env, calls, map };
}

describe('pick', () => {
  it('takes turns between users, one message at a time, in buffer order', () => {
    const a = campaign(1, 10);
    const b = campaign(2, 20);
    a.add([item(1, 1), item(1, 2), item(1, 3)]);
    b.add([item(2, 4), item(2, 5)]);
    const { env, calls } = setup([a, b]);
    const got = Array.from({ length: 5 }, () => pick(env)).map((p) => p && `${p.c.id}:${p.item.contactId}`);
    expect(got).toEqual(['1:1', '2:4', '1:2', '2:5', '1:3']);
    expect(pick(env)).toBeUndefined();
    // Each campaign is marked unsendable when its last message is taken.
    expect(calls.unsendable.sort()).toEqual([1, 2]);
  });

  it('starts a refill at the low-water mark', () => {
    const a = campaign(1, 10);
    a.add([item(1, 1), item(1, 2), item(1, 3)]);
    const { env, calls } = setup([a], { lowWater: 1 });
    pick(env);
    expect(calls.refill).toEqual([]);
    pick(env);
    expect(calls.refill).toEqual([1]);
  });

  it('sends a retry last attempted on this service through another one when another carries the campaign', () => {
    const a = campaign(1, 10);
    a.add([item(1, 1, { attempts: 1, lastServiceId: 1 }), item(1, 2)]);
    const other = setup([a], { otherCarrier: () => true });
    const p = pick(other.env);
    expect(p?.item.contactId).toBe(2);
    // The retry went to the back of the buffer for the other service.
    expect(a.take()?.contactId).toBe(1);

    const b = campaign(2, 10);
    b.add([item(2, 1, { attempts: 1, lastServiceId: 1 })]);
    const alone = setup([b], { otherCarrier: () => false });
    expect(pick(alone.env)?.item.contactId).toBe(1);
  });

  it('drops a campaign the engine no longer knows from the ring, and skips empty buffers', () => {
    const a = campaign(1, 10);
    const b = campaign(2, 20);
    b.add([item(2, 7)]);
    const { env, ring, map } = setup([a, b]);
    ring.setSendable(1, true); // stale: the ring thinks it has work
    map.delete(1);
    expect(pick(env)?.item.contactId).toBe(7);
    expect(pick(env)).toBeUndefined();
    expect(ring.has(1)).toBe(false);
    expect(ring.sendableCount).toBe(0);
  });
});
