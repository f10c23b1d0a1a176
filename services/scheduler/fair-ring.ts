/**
 * FairRing: for one sending service, which campaign sends next.
 *
 * State:
 * - `campaigns`: every known campaign, sendable or not, by id.
 * - `users`: every user with at least one known campaign.
 * - The user ring: a circular doubly linked list of exactly the users that have at least one
 *   sendable campaign. `cursor` is the user served next; undefined iff the ring is empty.
 * - Per user, `levels`: one level per distinct priority that has at least one sendable campaign,
 *   highest priority first. A level is a circular doubly linked list of its sendable campaigns
 *   with its own cursor (the campaign that level sends from next).
 *
 * Invariants (between public calls):
 * - A campaign is linked into a level iff it is sendable, and that level belongs to its user and
 *   has its priority.
 * - No level is empty: a level is dropped the moment its last campaign leaves, so `levels[0]` is
 *   always the level that is served, without looking further.
 * - A user is in the ring iff its `levels` is non-empty.
 *
 * A pick serves the cursor user's top level at that level's cursor, then advances exactly those
 * two cursors by one step. Nothing else moves, so a user's campaign pointer advances only when the
 * user is picked, and a lower level keeps its place while a higher one is being served.
 *
 * Whatever joins or rejoins a ring is linked just before that ring's cursor: the back of the
 * queue, served after everything already waiting, so nothing jumps the queue by being re-added.
 * Unlinking the node a cursor points at moves the cursor on to the next node, so everyone else
 * keeps their order.
 *
 * Fairness you can see: each user's lag behind an ideal round robin. A turn (served(), called
 * when a pick really takes a message) owes every user in the ring 1/N of a turn, N the users in
 * the ring at that moment; the served user gets 1. A user's lag is the turns owed while it was in
 * the ring (had sendable work) minus the turns it got: 0 after each full round of a perfect round
 * robin, below 1 between. `owedAcc` sums 1/N over all turns, so owing every user is O(1): a user
 * remembers the sum when it joins the ring and banks the difference when it leaves.
 *
 * Leaving ahead: a round robin serves a user before the ideal has owed it the whole turn, so right
 * after its turn its lag is negative (down to -(N-1)/N), and the users later in the round are owed
 * that difference until their own turn comes. A user whose work ends with that turn (its last
 * message) leaves ahead; the users still in the ring would stay owed what it was ahead by, and be
 * owed 1/N of each later turn by a smaller N. When many users finish in the same round, that adds
 * up along the harmonic series (a perfect round robin of 100 users left the last one waiting owed
 * 3.7 turns, and a user left alone keeps such a debt for good: it is owed exactly the turn it
 * gets). So a user leaving ahead has what it was ahead by, up to one turn (all a round robin can
 * put it ahead), struck from what the others in the ring are owed, evenly (owedAcc -= ahead / N,
 * as EEVDF does when a client leaves), and leaves with that much less lag banked. Ahead by more
 * than a turn is a real favour: the rest stays banked, the others stay owed it. A user leaving
 * behind (owed: passed over, or its shared buffer emptied by another service) keeps its lag.
 * worstLag() (O(users), for status and metrics) is the largest lag of a known user.
 *
 * Cost: every operation is O(1) except finding, creating or dropping a level, which is O(P) in
 * the number of distinct sendable priorities of that one user (a handful in practice). `steps`
 * counts that work so tests can check it without a clock.
 */

export interface RingEntry {
  campaignId: number;
  userId: number;
  priority: number;
}

class CampaignNode {
  readonly id: number;
  user: UserNode;
  priority: number;
  sendable = true;
  prev: CampaignNode = this;
  next: CampaignNode = this;

  constructor(id: number, user: UserNode, priority: number) {
    this.id = id;
    this.user = user;
    this.priority = priority;
  }
}

class Level {
  readonly priority: number;
  cursor: CampaignNode;
  count = 1;

  constructor(first: CampaignNode) {
    this.priority = first.priority;
    this.cursor = first;
  }
}

class UserNode {
  readonly id: number;
  /** Known campaigns, sendable or not: the node is forgotten when this drops to 0. */
  known = 0;
  levels: Level[] = [];
  inRing = false;
  /** Turns owed while in the ring, banked when it left; `joinedAcc`: owedAcc when it joined. */
  owedBase = 0;
  joinedAcc = 0;
  /** Turns got (messages picked for this user). */
  got = 0;
  prev: UserNode = this;
  next: UserNode = this;

  constructor(id: number) {
    this.id = id;
  }
}

export class FairRing {
  private readonly campaigns = new Map<number, CampaignNode>();
  private readonly users = new Map<number, UserNode>();
  private cursor: UserNode | undefined = undefined;
  private sendableTotal = 0;
  private usersInRing = 0;
  private work = 0;
  /** The sum, over every turn served, of 1 / (users in the ring at that turn): see the header. */
  private owedAcc = 0;

  get size(): number {
    return this.campaigns.size;
  }

  get sendableCount(): number {
    return this.sendableTotal;
  }

  get activeUsers(): number {
    return this.usersInRing;
  }

  /**
   * Elementary steps taken so far: one per call, plus one per probe of a level search and one per
   * level shifted by inserting or dropping a level. Exposed so tests can show that no operation
   * grows with the number of users or campaigns, without timing anything.
   */
  get steps(): number {
    return this.work;
  }

  /**
   * Adds a campaign (sendable at once), or updates its priority/user if already present. An
   * existing campaign keeps its sendable state; if it is sendable and moves, it joins the back of
   * its new level (and its new user joins the back of the ring if it was not in it).
   */
  upsert(entry: RingEntry): void {
    this.work++;
    const { campaignId, userId, priority } = entry;
    // NaN would break the ordering of levels; infinities are legal but suspicious, so refuse both.
    if (!Number.isFinite(priority)) throw new RangeError(`priority must be a finite number, got ${priority}`);
    const node = this.campaigns.get(campaignId);
    if (!node) {
      const user = this.userFor(userId);
      user.known++;
      const fresh = new CampaignNode(campaignId, user, priority);
      this.campaigns.set(campaignId, fresh);
      this.linkIntoLevel(fresh);
      this.joinRing(user);
      return;
    }
    if (node.user.id === userId) {
      if (node.priority === priority) return;
      if (!node.sendable) {
        node.priority = priority;
        return;
      }
      // The user stays in the ring throughout: a change of priority must not cost it its place.
      this.unlinkFromLevel(node);
      node.priority = priority;
      this.linkIntoLevel(node);
      return;
    }
    const oldUser = node.user;
    if (node.sendable) {
      this.unlinkFromLevel(node);
      this.leaveRingIfIdle(oldUser);
    }
    this.forgetOne(oldUser);
    const newUser = this.userFor(userId);
    newUser.known++;
    node.user = newUser;
    node.priority = priority;
    if (node.sendable) {
      this.linkIntoLevel(node);
      this.joinRing(newUser);
    }
  }

  /** Removes a campaign (finished, cancelled, paused). No-op if absent. */
  remove(campaignId: number): void {
    this.work++;
    const node = this.campaigns.get(campaignId);
    if (!node) return;
    if (node.sendable) {
      this.unlinkFromLevel(node);
      this.leaveRingIfIdle(node.user);
    }
    this.campaigns.delete(campaignId);
    this.forgetOne(node.user);
  }

  /**
   * Temporarily takes a campaign out of / back into the rotation without forgetting it. Setting
   * the state it already has changes nothing (in particular it does not move it to the back). A
   * no-op for unknown ids: a buffer refill may finish after its campaign was removed.
   */
  setSendable(campaignId: number, sendable: boolean): void {
    this.work++;
    const node = this.campaigns.get(campaignId);
    if (!node || node.sendable === sendable) return;
    node.sendable = sendable;
    if (sendable) {
      this.linkIntoLevel(node);
      this.joinRing(node.user);
    } else {
      this.unlinkFromLevel(node);
      this.leaveRingIfIdle(node.user);
    }
  }

  isSendable(campaignId: number): boolean {
    return this.campaigns.get(campaignId)?.sendable ?? false;
  }

  has(campaignId: number): boolean {
    return this.campaigns.has(campaignId);
  }

  /** The campaign to send from now, advancing the rotation; undefined when nothing is sendable. */
  next(): number | undefined {
    this.work++;
    const user = this.cursor;
    if (!user) return undefined;
    // Non-empty by invariant: a user in the ring has at least one level.
    const level = user.levels[0] as Level;
    const picked = level.cursor;
    level.cursor = picked.next;
    this.cursor = user.next;
    return picked.id;
  }

  /**
   * Another campaign of the same user, in the same turn: the one `next` returned cannot send now
   * (its messages are all for a throttled mailbox provider; see pick.ts), so the user's top level
   * gives its next campaign, advancing only that level's cursor (the user cursor has moved on
   * already). Undefined when the level comes back round to `first` (each campaign asked once).
   */
  nextOfUser(userId: number, first: number): number | undefined {
    this.work++;
    const user = this.users.get(userId);
    const level = user?.inRing ? user.levels[0] : undefined;
    if (!level || level.cursor.id === first) return undefined;
    const picked = level.cursor;
    level.cursor = picked.next;
    return picked.id;
  }

  /**
   * A turn was really taken from this campaign (a message picked, not a pass over an empty
   * buffer): the campaign's user got one turn, and every user in the ring was owed 1/N.
   */
  served(campaignId: number): void {
    const node = this.campaigns.get(campaignId);
    if (!node) return;
    if (this.usersInRing > 0) this.owedAcc += 1 / this.usersInRing;
    node.user.got++;
  }

  /** A user's lag behind the ideal round robin, in turns (negative: ahead). */
  lagOf(userId: number): number {
    const u = this.users.get(userId);
    return u ? this.lag(u) : 0;
  }

  private lag(u: UserNode): number {
    return u.owedBase + (u.inRing ? this.owedAcc - u.joinedAcc : 0) - u.got;
  }

  /** The largest lag of a known user, in turns (0 with no users). O(users): status and metrics only. */
  worstLag(): number {
    let worst = 0;
    for (const u of this.users.values()) worst = Math.max(worst, this.lag(u));
    return worst;
  }

  /**
   * Users in rotation order (the next one first), each with its sendable campaigns: highest
   * priority first, each level in its own rotation order. O(n): for status and debugging only.
   */
  snapshot(): { userId: number; campaigns: number[] }[] {
    const out: { userId: number; campaigns: number[] }[] = [];
    const start = this.cursor;
    if (!start) return out;
    let user = start;
    do {
      const campaigns: number[] = [];
      for (const level of user.levels) {
        let c = level.cursor;
        do {
          campaigns.push(c.id);
          c = c.next;
        } while (c !== level.cursor);
      }
      out.push({ userId: user.id, campaigns });
      user = user.next;
    } while (user !== start);
    return out;
  }

  private userFor(userId: number): UserNode {
    let user = this.users.get(userId);
    if (!user) {
      user = new UserNode(userId);
      this.users.set(userId, user);
    }
    return user;
  }

  private forgetOne(user: UserNode): void {
    user.known--;
    // Only reachable with no sendable campaign left, hence already out of the ring.
    if (user.known === 0) this.users.delete(user.id);
  }

  /** Index of the level with this priority in `levels` (highest first), or where it would go. */
  private findLevel(levels: Level[], priority: number): number {
    let lo = 0;
    let hi = levels.length;
    while (lo < hi) {
      this.work++;
      const mid = (lo + hi) >>> 1;
      if ((levels[mid] as Level).priority > priority) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private linkIntoLevel(node: CampaignNode): void {
    const levels = node.user.levels;
    const i = this.findLevel(levels, node.priority);
    const level = levels[i];
    if (level && level.priority === node.priority) {
      const cursor = level.cursor;
      node.prev = cursor.prev;
      node.next = cursor;
      cursor.prev.next = node;
      cursor.prev = node;
      level.count++;
    } else {
      node.prev = node;
      node.next = node;
      this.work += levels.length - i;
      levels.splice(i, 0, new Level(node));
    }
    this.sendableTotal++;
  }

  private unlinkFromLevel(node: CampaignNode): void {
    const levels = node.user.levels;
    const i = this.findLevel(levels, node.priority);
    const level = levels[i] as Level;
    if (level.count === 1) {
      this.work += levels.length - i;
      levels.splice(i, 1);
    } else {
      if (level.cursor === node) level.cursor = node.next;
      node.prev.next = node.next;
      node.next.prev = node.prev;
      level.count--;
    }
    node.prev = node;
    node.next = node;
    this.sendableTotal--;
  }

  private joinRing(user: UserNode): void {
    if (user.inRing) return;
    user.inRing = true;
    user.joinedAcc = this.owedAcc;
    this.usersInRing++;
    const cursor = this.cursor;
    if (!cursor) {
      user.prev = user;
      user.next = user;
      this.cursor = user;
      return;
    }
    user.prev = cursor.prev;
    user.next = cursor;
    cursor.prev.next = user;
    cursor.prev = user;
  }

  private leaveRingIfIdle(user: UserNode): void {
    if (!user.inRing || user.levels.length > 0) return;
    // Ahead of the ideal (negative lag), up to one turn: struck from the others' debt (see the header).
    const ahead = Math.min(1, Math.max(0, -this.lag(user)));
    user.owedBase += this.owedAcc - user.joinedAcc + ahead;
    user.inRing = false;
    this.usersInRing--;
    if (this.usersInRing > 0) this.owedAcc -= ahead / this.usersInRing;
    if (user.next === user) {
      this.cursor = undefined;
    } else {
      if (this.cursor === user) this.cursor = user.next;
      user.prev.next = user.next;
      user.next.prev = user.prev;
    }
    user.prev = user;
    user.next = user;
  }
}
