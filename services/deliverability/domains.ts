/**
 * The provider of each recipient domain, in SQL: the table `mail_domains` (domain -> provider) is
 * filled before a campaign's one INSERT ... SELECT, which then joins it, so generation writes
 * `subtasks.provider` without a row crossing the client and without DNS inside the statement.
 *
 * Every distinct domain of the campaign gets a row, built-in ones included (they are few and need
 * no lookup), so the INSERT only joins: a hash join on a small table, no per-row CASE or regex.
 * Other domains are looked up by MX through the injected resolver; a failed lookup is stored as
 * `fallback` and tried again after FALLBACK_RETRY, a found one is kept for ANSWER_TTL.
 */
import type { Sequelize, Transaction } from 'sequelize';
import { queryRows } from '../kernel/db-query.js';
import type { ProviderResolver } from './providers.js';

/** The domain of `c.email` in SQL: the part after the last `@`, lower-cased. */
export const DOMAIN_SQL = (alias: string) => `lower(split_part(${alias}.email, '@', -1))`;

const ANSWER_TTL = '30 days';
const FALLBACK_RETRY = '1 hour';

/** The provider of a contact row `alias` joined to `mail_domains md`; `other:<domain>` if none is stored. */
export function providerSql(alias: string, md = 'md'): string {
  return `COALESCE(${md}.provider, 'other:' || ${DOMAIN_SQL(alias)})`;
}

/**
 * Looks up and stores the providers of the domains among the contacts matching `where` that are
 * not stored (or whose stored answer is stale). Rows are upserted in domain
 * order, so two generators filling overlapping sets wait on each other instead of deadlocking.
 */
export async function fillDomainProviders(
  db: Sequelize,
  resolver: ProviderResolver,
  where: { sql: string; bind: Record<string, unknown> },
  transaction: Transaction,
): Promise<{ looked: number }> {
  const d = DOMAIN_SQL('c');
  const missing = await queryRows<{ domain: string }>(
    db,
    `SELECT DISTINCT ${d} AS domain
       FROM contacts c
      WHERE ${where.sql}
        AND NOT EXISTS (
          SELECT 1 FROM mail_domains md WHERE md.domain = ${d}
             AND md.resolved_at > now() - CASE md.source WHEN 'fallback' THEN interval '${FALLBACK_RETRY}' ELSE interval '${ANSWER_TTL}' END)`,
    where.bind,
    transaction,
  );
  const domains = missing.map((r) => r.domain).filter((x) => x && x.length <= 255);
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
