/**
 * The provider of each recipient domain, in SQL: the table `mail_domains` (domain -> provider) is
 * filled before a campaign's one INSERT ... SELECT, which then joins it on the contact's stored
 * domain (`contacts.domain`, a generated column: migration 20261130920001), so generation writes
 * `subtasks.provider` without a row crossing the client, without DNS inside the statement and
 * without computing a domain per recipient.
 *
 * Every distinct domain of the campaign gets a row, built-in ones included (they are few and need
 * no lookup), so the INSERT only joins: a hash join on a small table, no per-row CASE or regex.
 * Other domains are looked up by MX through the injected resolver; a failed lookup is stored as
 * `fallback` and tried again after FALLBACK_RETRY, a found one is kept for ANSWER_TTL.
 *
 * Which domains need a lookup is found without scanning the campaign's recipients: the user's
 * distinct domains are walked on contacts_user_domain_idx (one index probe per domain), and only
 * those without a fresh row are checked against the campaign's recipients. Once a user's domains
 * are known (every campaign after the first, until an answer ages), that is all it costs.
 */
import type { Sequelize, Transaction } from 'sequelize';
import { queryRows } from '../kernel/db-query.js';
import type { ProviderResolver } from './providers.js';

/**
 * The domain of contact row `alias` in SQL: its stored `domain` column, which PostgreSQL computes
 * as `lower(split_part(email, '@', -1))` (the part after the last `@`, lower-cased).
 */
export const DOMAIN_SQL = (alias: string) => `${alias}.domain`;

const ANSWER_TTL = '30 days';
const FALLBACK_RETRY = '1 hour';
/**
 * Most distinct domains walked on the index; a user with more (a list of company addresses) is
 * served by one scan of the campaign's recipients instead, which then costs less than the walk.
 */
export const DOMAIN_WALK_LIMIT = 50_000;

/** A stored answer for domain expression `d` that is still fresh. */
const FRESH = (d: string) => `EXISTS (
  SELECT 1 FROM mail_domains md WHERE md.domain = ${d}
     AND md.resolved_at > now() - CASE md.source WHEN 'fallback' THEN interval '${FALLBACK_RETRY}' ELSE interval '${ANSWER_TTL}' END)`;

/** The provider of a contact row `alias` joined to `mail_domains md`; `other:<domain>` if none is stored. */
export function providerSql(alias: string, md = 'md'): string {
  return `COALESCE(${md}.provider, 'other:' || ${DOMAIN_SQL(alias)})`;
}

/**
 * The domains among the contacts matching `where` (recipients of user `userId`) that have no fresh
 * stored provider. First the user's distinct domains, walked on contacts_user_domain_idx (a loose
 * index scan: one probe per domain, at most DOMAIN_WALK_LIMIT), less those with a fresh row; only
 * when some are left are the campaign's recipients read, and only those at these domains. A user
 * with more domains than the walk's limit gets the one scan of the campaign's recipients.
 */
export async function staleDomains(
  db: Sequelize,
  userId: number,
  where: { sql: string; bind: Record<string, unknown> },
  transaction: Transaction | undefined,
  walkLimit = DOMAIN_WALK_LIMIT,
): Promise<string[]> {
  const [walk] = await queryRows<{ capped: boolean; stale: string[] }>(
    db,
    `WITH RECURSIVE d(domain, n) AS (
       (SELECT c.domain, 1 FROM contacts c WHERE c.user_id = $walkUser ORDER BY c.domain LIMIT 1)
       UNION ALL
       SELECT (SELECT c.domain FROM contacts c WHERE c.user_id = $walkUser AND c.domain > d.domain ORDER BY c.domain LIMIT 1), d.n + 1
         FROM d WHERE d.domain IS NOT NULL AND d.n < $walkLimit)
     SELECT COALESCE((SELECT max(n) FROM d), 0) >= $walkLimit AS capped,
            COALESCE((SELECT array_agg(d.domain) FROM d WHERE d.domain IS NOT NULL AND NOT ${FRESH('d.domain')}), '{}') AS stale`,
    { walkUser: userId, walkLimit },
    transaction,
  );
  if (!walk!.capped && !walk!.stale.length) return [];
  const d = DOMAIN_SQL('c');
  const missing = await queryRows<{ domain: string }>(
    db,
    walk!.capped
      ? `SELECT DISTINCT ${d} AS domain FROM contacts c WHERE ${where.sql} AND NOT ${FRESH(d)}`
      : `SELECT DISTINCT ${d} AS domain FROM contacts c WHERE ${d} = ANY($staleDomains::text[]) AND ${where.sql}`,
    walk!.capped ? where.bind : { ...where.bind, staleDomains: walk!.stale },
    transaction,
  );
  return missing.map((r) => r.domain);
}

/**
 * Looks up and stores the providers of the domains among the contacts matching `where` that are
 * not stored (or whose stored answer is stale): staleDomains above. Rows are upserted in domain
 * order, so two generators filling overlapping sets wait on each other instead of deadlocking.
 */
export async function fillDomainProviders(
  db: Sequelize,
  resolver: ProviderResolver,
  userId: number,
  where: { sql: string; bind: Record<string, unknown> },
  /** undefined: the answers are stored (and committed) on their own. */
  transaction: Transaction | undefined,
): Promise<{ looked: number }> {
  const domains = (await staleDomains(db, userId, where, transaction)).filter((x) => x && x.length <= 255);
  if (!domains.length) return { looked: 0 };
  domains.sort();
  // At most 16 lookups at once (each bounded by the resolver's timeout).
  const found: { provider: string; source: string }[] = new Array(domains.length);
  let next = 0;
  const worker = async () => {
    while (next < domains.length) {
      const i = next++;
      found[i] = await resolver.explain(domains[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(16, domains.length) }, worker));
  await queryRows(
    db,
    `INSERT INTO mail_domains (domain, provider, source, resolved_at)
     SELECT d, p, s, now() FROM unnest($domains::text[], $providers::text[], $sources::text[]) AS x(d, p, s) ORDER BY d
     ON CONFLICT (domain) DO UPDATE SET provider = EXCLUDED.provider, source = EXCLUDED.source, resolved_at = EXCLUDED.resolved_at`,
    { domains, providers: found.map((f) => f.provider), sources: found.map((f) => f.source) },
    transaction,
  );
  return { looked: domains.length };
}
