/**
 * Claims: a campaign's next messages, leased to this engine (SKIP LOCKED, set-based), and the
 * campaign's outlook when a claim comes back empty.
 */
import type { Sequelize } from 'sequelize';
import { queryRows as q } from '../../kernel/db-query.js';
import { prepare, queryPrepared } from '../../kernel/db-prepared.js';

export interface ClaimedRow {
  task_id: string;
  contact_id: string;
  email: string;
  template_id: number;
  attempts: number;
  timezone: string | null;
  name: string | null;
  attributes: Record<string, unknown> | null;
  contact_status: string | null;
  /** The service of the last attempt (null when never attempted). */
  service_id: number | null;
  /** Why the address is suppressed now (the reason of a suppression entry of the user's or the global list), null when not. */
  suppressed: string | null;
  /** The recipient's mailbox provider, stored at generation (null on rows generated before the column). */
  provider: string | null;
}

// The suppression list is re-checked here, at claim: an address suppressed after the queue was
// generated (a bounce, a complaint, an entry added by hand) comes back flagged and is not sent. One
// probe of suppressions_email_idx per claimed row, matched as generation matches (lower(email)).
// Shared with the bulk claims (claim-many.ts), which read task_id to hand each row to its campaign.
export const CLAIM_RETURNING = `
  FROM picked LEFT JOIN contacts c ON c.id = picked.contact_id
 WHERE s.task_id = picked.task_id AND s.contact_id = picked.contact_id
RETURNING s.task_id, s.contact_id, s.email, s.template_id, s.attempts, s.timezone, s.service_id, s.provider, c.name, c.attributes, c.status AS contact_status,
          (SELECT sp.reason || CASE WHEN sp.user_id IS NULL THEN ' (global list)' ELSE '' END FROM suppressions sp
            WHERE sp.email = lower(s.email) AND (sp.user_id = s.user_id OR sp.user_id IS NULL)
            ORDER BY sp.user_id NULLS LAST LIMIT 1) AS suppressed`;

/**
 * Claims fresh messages (never attempted) of one campaign after `cursor`, in contact-id order, along
 * the primary key (task_id, contact_id). SKIP LOCKED: another engine claiming the same campaign at
 * the same moment takes other rows, never the same ones. The contact's name and attributes come
 * with the claim, so sending needs no further read.
 */
export function claimFresh(
  db: Sequelize,
  p: { taskId: number; cursor: number; limit: number; now: Date; owner: string; until: Date },
): Promise<ClaimedRow[]> {
  return queryPrepared(db, CLAIM_FRESH, p);
}

// Prepared (kernel/db-prepared.ts): a claim runs every few dozen messages per campaign, and its
// planning cost as much PostgreSQL CPU as its execution.
const CLAIM_FRESH = prepare(
  'fs_claim_fresh',
  `WITH picked AS (
     SELECT task_id, contact_id FROM subtasks
      WHERE task_id = $taskId AND contact_id > $cursor AND status = 'queued' AND attempts = 0 AND not_before <= $now
      ORDER BY contact_id LIMIT $limit FOR UPDATE SKIP LOCKED)
   UPDATE subtasks s SET status = 'sending', lease_owner = $owner, lease_expires_at = $until ${CLAIM_RETURNING}`,
);

/** Claims due retries of one campaign (the small partial index subtasks_retries_idx). */
export function claimRetries(
  db: Sequelize,
  p: { taskId: number; limit: number; now: Date; owner: string; until: Date },
): Promise<ClaimedRow[]> {
  return queryPrepared(db, CLAIM_RETRIES, p);
}

const CLAIM_RETRIES = prepare(
  'fs_claim_retries',
  `WITH picked AS (
     SELECT task_id, contact_id FROM subtasks
      WHERE task_id = $taskId AND status = 'queued' AND attempts > 0 AND not_before <= $now
      ORDER BY not_before LIMIT $limit FOR UPDATE SKIP LOCKED)
   UPDATE subtasks s SET status = 'sending', lease_owner = $owner, lease_expires_at = $until ${CLAIM_RETURNING}`,
);

/**
 * When a campaign's claims come back empty: the earliest time something of it becomes sendable
 * (null: nothing queued) and how many are in flight. Scans the campaign's key range once; it runs
 * only when the cursor has reached the end, not per send.
 */
export async function campaignOutlook(db: Sequelize, taskId: number): Promise<{ nextAt: Date | null; inFlight: number }> {
  const [r] = await q<{ next_at: Date | null; in_flight: number }>(
    db,
    `SELECT min(not_before) FILTER (WHERE status = 'queued') AS next_at, count(*) FILTER (WHERE status = 'sending')::int AS in_flight
       FROM subtasks WHERE task_id = $taskId AND status IN ('queued', 'sending')`,
    { taskId },
  );
  return { nextAt: r?.next_at ?? null, inFlight: r?.in_flight ?? 0 };
}
