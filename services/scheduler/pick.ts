/**
 * The fair pick: which message one sending service sends next. Plain code over the service's
 * FairRing and the campaigns' buffers (no I/O), unit-tested in test/pick.test.ts; what it needs
 * from the rest of the engine comes in through PickEnv.
 *
 * The ring says which campaign is next (round robin over users, then over a user's campaigns of
 * the highest priority; see fair-ring.ts). Its buffer gives the message. Along the way:
 *   - a campaign whose buffer is empty is marked not sendable (in every ring holding it) and
 *     skipped; one the engine no longer knows leaves this ring;
 *   - a retry whose last attempt was on this service goes to the back of its buffer when another
 *     usable service carries the campaign (the failure may be this service's: a server that
 *     times out, or refuses this recipient), and the next campaign is asked;
 *   - a buffer at or below the low-water mark starts a refill, so a campaign with work keeps its turns.
 * At most MAX_TRIES campaigns are asked per pick.
 */
import type { FairRing } from './fair-ring.js';
import type { CampaignState, Claimed } from './campaign-pool.js';

export const MAX_TRIES = 16;

export interface PickEnv {
  serviceId: number;
  ring: Pick<FairRing, 'next' | 'remove' | 'served'>;
  campaign(id: number): CampaignState | undefined;
  /** Is another usable service (of this engine) carrying the campaign? */
  otherCarrier(c: CampaignState): boolean;
  lowWater: number;
  setSendable(c: CampaignState, sendable: boolean): void;
  refill(c: CampaignState): void;
}

export interface Picked {
  c: CampaignState;
  item: Claimed;
}

export function pick(env: PickEnv): Picked | undefined {
  for (let tries = 0; tries < MAX_TRIES; tries++) {
    const id = env.ring.next();
    if (id === undefined) return undefined;
    const c = env.campaign(id);
    const item = c?.take();
    if (!c || !item) {
      if (c) env.setSendable(c, false);
      else env.ring.remove(id);
      continue;
    }
    if (item.attempts > 0 && item.lastServiceId === env.serviceId && env.otherCarrier(c)) {
      c.add([item]);
      continue;
    }
    // A real turn: counted for the fairness lag before the campaign may leave the ring.
    env.ring.served(c.id);
    if (c.size <= env.lowWater) env.refill(c);
    if (c.size === 0) env.setSendable(c, false);
    return { c, item };
  }
  return undefined;
}
