/**
 * Bulk claims: the next messages of many campaigns in one statement (the pool's refill, see
 * campaign-pool.ts). Each campaign gets its own LATERAL probe of the primary key (fresh messages
 * after its cursor) or of subtasks_retries_idx (due retries), with its own limit, so the rows a
 * campaign gets are exactly those the one-campaign claims of claim.ts would give it; SKIP LOCKED
 * as there, so two engines claiming the same campaigns at once take different rows and never wait
 * on each other. One statement for hundreds of campaigns instead of one per campaign: at 10,000
 * users x 3 campaigns the start-up refill was 30,000 claims and outlooks in a row.
 */
import type { Sequelize } from 'sequelize';
import { prepare, queryPrepared as q } from '../../kernel/db-prepared.js';
import { CLAIM_RETURNING, type ClaimedRow } from './claim.js';

type Lease = {
  now: Date;
  owner: string;
  until: Date;
};

/** Fresh messages (never attempted) of each campaign after its cursor, in contact-id order, at most its limit. */
export function claimFreshMany(
  db: Sequelize,
  p: { taskIds: number[]; cursors: number[]; limits: number[] } & Lease,
): Promise<ClaimedRow[]> {
  return q(db, CLAIM_FRESH_MANY, p);
}

/*
 * Prepared (kernel/db-prepared.ts), as the one-campaign claims are: at 10,000 users x 3 campaigns
 * of 2 messages, W4 ran about 14,000 of these bulk claims (campaigns run low one by one, so most
 * carry a few campaigns), and as unnamed statements each was parsed and planned again: 0.13 ms
 * parse and 0.26 ms bind (the planning) against 0.10 ms execution (statement log of one run).
 */
const CLAIM_FRESH_MANY = prepare(
  'fs_claim_fresh_many',
  `WITH picked AS (
     SELECT p.task_id, p.contact_id
       FROM unnest($taskIds::bigint[], $cursors::bigint[], $limits::int[]) AS w(task_id, cursor, lim)
      CROSS JOIN LATERAL (
            SELECT task_id, contact_id FROM subtasks
             WHERE task_id = w.task_id AND contact_id > w.cursor AND status = 'queued' AND attempts = 0 AND not_before <= $now
             ORDER BY contact_id LIMIT w.lim FOR UPDATE SKIP LOCKED) p)
   UPDATE subtasks s SET status = 'sending', lease_owner = $owner, lease_expires_at = $until ${CLAIM_RETURNING}`,
);

/** Due retries of each campaign, oldest due first, at most `limit` a campaign. */
export function claimRetriesMany(db: Sequelize, p: { taskIds: number[]; limit: number } & Lease): Promise<ClaimedRow[]> {
  return q(db, CLAIM_RETRIES_MANY, p);
}

const CLAIM_RETRIES_MANY = prepare(
  'fs_claim_retries_many',
  `WITH picked AS (
     SELECT p.task_id, p.contact_id
       FROM unnest($taskIds::bigint[]) AS w(task_id)
      CROSS JOIN LATERAL (
            SELECT task_id, contact_id FROM subtasks
             WHERE task_id = w.task_id AND status = 'queued' AND attempts > 0 AND not_before <= $now
             ORDER BY not_before LIMIT $limit FOR UPDATE SKIP LOCKED) p)
   UPDATE subtasks s SET status = 'sending', lease_owner = $owner, lease_expires_at = $until ${CLAIM_RETURNING}`,
);

export interface Outlook {
  /** The earliest time something queued becomes sendable; null: nothing queued. */
  nextAt: Date | null;
  /** Messages in flight (claimed by any engine). */
  inFlight: number;
}

/**
 * claim.ts's campaignOutlook for many campaigns at once (those whose claim came back empty): each
 * campaign's key range scanned once. Every campaign asked gets an answer.
 */
export async function campaignOutlooks(db: Sequelize, taskIds: number[]): Promise<Map<number, Outlook>> {
  const rows = await q<{ task_id: string; next_at: Date | null; in_flight: number }>(db, OUTLOOKS, { taskIds });
  const out = new Map<number, Outlook>();
  for (const r of rows) out.set(Number(r.task_id), { nextAt: r.next_at, inFlight: r.in_flight ?? 0 });
  return out;
}

/** Prepared too: W4 ran about 7,000 (one for each round of campaigns whose claim came back empty). */
const OUTLOOKS = prepare(
  'fs_campaign_outlooks',
  `SELECT w.task_id, o.next_at, o.in_flight
     FROM unnest($taskIds::bigint[]) AS w(task_id)
    CROSS JOIN LATERAL (
          SELECT min(not_before) FILTER (WHERE status = 'queued') AS next_at, count(*) FILTER (WHERE status = 'sending')::int AS in_flight
            FROM subtasks WHERE task_id = w.task_id AND status IN ('queued', 'sending')) o`,
);
