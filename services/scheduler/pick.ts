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
 *   - a buffer at or below the low-water mark starts a refill, so a campaign with work keeps its turns;
 *   - a message for a mailbox provider that this service may not send to now (deliverability:
 *     suspended, slowed, at a cap; see deliverability/shaper.ts) stays in its buffer, and the
 *     campaign's next message for another provider goes instead (among the next SCAN). When there
 *     is none, the campaign is skipped but stays sendable: it keeps its place in the ring and is
 *     asked again on its next turn; the same user's next campaign takes the turn instead (the
 *     ring's nextOfUser), so a user loses no turn they could use. Messages of a pair blocked for longer than LONG_BLOCK_MS
 *     (suspended, or at an hourly, daily or warm-up cap) that no other service of this engine
 *     carries go back to the queue until the block ends (`defer`, with not_before): never dropped,
 *     and the claim does not bring them back before then.
 * At most MAX_TRIES campaigns are asked per pick.
 */
import type { FairRing } from './fair-ring.js';
import type { CampaignState, Claimed } from './campaign-pool.js';
import type { Block } from '../deliverability/shaper.js';
import type { Provider } from '../deliverability/providers.js';

export const MAX_TRIES = 16;
/** Buffered messages looked at for one for another provider. */
export const SCAN = 64;
/** A block at least this long sends its messages back to the queue (with not_before). */
export const LONG_BLOCK_MS = 2000;
/**
 * A campaign whose buffered messages are all for a briefly blocked provider (slowed, at its
 * concurrency) claims more to reach its other providers' messages, up to this many buffered.
 */
export const MAX_BUFFER_FOR_OTHERS = 4 * SCAN;

export interface PickEnv {
  serviceId: number;
  ring: Pick<FairRing, 'next' | 'remove' | 'served'> & Partial<Pick<FairRing, 'nextOfUser'>>;
  campaign(id: number): CampaignState | undefined;
  /** Is another usable service (of this engine) carrying the campaign? */
  otherCarrier(c: CampaignState): boolean;
  lowWater: number;
  setSendable(c: CampaignState, sendable: boolean): void;
  refill(c: CampaignState): void;
  /** Why this service may not send to the provider now; undefined when it may (deliverability). */
  blocked?(provider: Provider): Block | undefined;
  /** Messages back to the queue until `until` (ms epoch), unsent and never dropped. */
  defer?(c: CampaignState, items: Claimed[], until: number): void;
  now?(): number;
}

export interface Picked {
  c: CampaignState;
  item: Claimed;
}

export function pick(env: PickEnv): Picked | undefined {
  // A campaign skipped because its messages are all for a throttled provider hands the turn to
  // the same user's next campaign (nextOfUser), so that user loses no turn they could use.
  let sameUser: { userId: number; first: number } | undefined;
  for (let tries = 0; tries < MAX_TRIES; tries++) {
    const id = sameUser ? env.ring.nextOfUser?.(sameUser.userId, sameUser.first) : env.ring.next();
    if (id === undefined) {
      if (sameUser) {
        sameUser = undefined;
        continue;
      }
      return undefined;
    }
    const turn = sameUser ?? { userId: env.campaign(id)?.userId ?? -1, first: id };
    sameUser = undefined;
    const c = env.campaign(id);
    let item = c?.take();
    if (!c || !item) {
      if (c) env.setSendable(c, false);
      else env.ring.remove(id);
      continue;
    }
    const block = env.blocked?.(item.provider);
    if (block) {
      item = instead(env, c, item, block);
      if (!item) {
        if (env.ring.nextOfUser) sameUser = turn;
        continue;
      }
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

/**
 * The campaign's next message for a provider that is not blocked, with the blocked one kept (in
 * the buffer, or deferred to the queue when the block is long and no other service carries the
 * campaign). Undefined when the next SCAN messages are all blocked.
 */
function instead(env: PickEnv, c: CampaignState, item: Claimed, block: Block): Claimed | undefined {
  const known = new Map<Provider, boolean>([[item.provider, true]]);
  const open = (i: Claimed) => {
    let b = known.get(i.provider);
    if (b === undefined) known.set(i.provider, (b = env.blocked!(i.provider) !== undefined));
    return !b;
  };
  const alt = c.takeWhere(open, SCAN);
  const now = env.now?.() ?? Date.now();
  const long = block.until !== null && block.until - now >= LONG_BLOCK_MS && block.reason !== 'rate' && block.reason !== 'concurrency';
  if (long && env.defer && !env.otherCarrier(c)) {
    env.defer(c, [item, ...c.removeWhere((i) => i.provider === item.provider)], block.until!);
  } else {
    c.putBack(item);
  }
  if (!alt && c.size === 0) {
    env.setSendable(c, false);
    env.refill(c);
  } else if (!alt && c.size < MAX_BUFFER_FOR_OTHERS) {
    // Everything buffered is for a blocked provider: claim more, so the campaign's messages for
    // other providers come in (the buffer grows by one claim at a time, up to the bound).
    env.refill(c);
  }
  return alt;
}
