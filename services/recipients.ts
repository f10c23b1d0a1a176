/**
 * A campaign's recipients as one SQL predicate over `contacts c`: the user's own active contacts
 * that are either listed explicitly or match the recipient rule (the union of both). Tag rules use
 * the JSONB `?|` operator, served by the GIN index on `tags`: include = has any of the tags,
 * exclude = has none of them. Unsubscribed and bounced contacts never match, nor do addresses on the
 * owner's or the global suppression list (services/suppressions.ts: an anti-join on its email
 * index). Addresses are unique per user case-insensitively (unique index on lower(email)), so the set has no duplicates by email.
 *
 * Values travel as bind parameters (`$name`), never spliced into the SQL text.
 */
import type { StoredRecipientRule } from '../models/index.js';
import { suppressionFilter, type SuppressionMode } from './suppressions.js';

export interface RecipientSpec {
  userId: number;
  contacts: number[];
  rule: StoredRecipientRule | null;
  /** How suppressed addresses are left out (suppressionMode); default the anti-join, right whatever the list's size. */
  suppression?: SuppressionMode;
}

export interface SqlFragment {
  sql: string;
  bind: Record<string, unknown>;
}

export function recipientPredicate(spec: RecipientSpec): SqlFragment {
  const bind: Record<string, unknown> = { rcptUserId: spec.userId };
  const alternatives: string[] = [];
  if (spec.contacts.length) {
    bind.rcptIds = spec.contacts;
    alternatives.push('c.id = ANY($rcptIds::bigint[])');
  }
  if (spec.rule?.type === 'all') alternatives.push('true');
  if (spec.rule?.type === 'tag_based') {
    const parts: string[] = [];
    if (spec.rule.include_tags?.length) {
      bind.rcptInclude = spec.rule.include_tags;
      parts.push('c.tags ?| $rcptInclude::text[]');
    }
    if (spec.rule.exclude_tags?.length) {
      bind.rcptExclude = spec.rule.exclude_tags;
      parts.push('NOT (c.tags ?| $rcptExclude::text[])');
    }
    alternatives.push(parts.length ? `(${parts.join(' AND ')})` : 'true');
  }
  const match = alternatives.length ? alternatives.join(' OR ') : 'false';
  return {
    sql: `c.user_id = $rcptUserId AND c.status = 'active' AND (${match}) AND ${suppressionFilter(spec.suppression ?? 'join')}`,
    bind,
  };
}
