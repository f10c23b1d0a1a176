/**
 * The cap ledger's statements (deliverability/cap-ledger.ts): reserve units of a (service,
 * provider) window's cap, give back the unused ones, prune windows long over.
 */
import type { Sequelize } from 'sequelize';
import { queryRows as q } from '../../kernel/db-query.js';
import type { CapKey, CapStore } from '../../deliverability/cap-ledger.js';

/**
 * Reserves up to `want` units of the window, atomically and never beyond `cap`: the upsert locks
 * the row, so any number of reservers in any number of processes queue on it and the sum of what
 * they are granted is at most the cap. `last_grant` carries the grant out of the statement (every
 * SET expression reads the row as it was before the update, so both use the old `sent`).
 */
export async function reserveCap(db: Sequelize, serviceId: number, k: CapKey, want: number): Promise<{ granted: number; sent: number }> {
  const [r] = await q<{ granted: number; sent: number }>(
    db,
    `INSERT INTO delivery_counts AS c (service_id, provider, scope, bucket, sent, last_grant, ends_at)
     VALUES ($svc, $provider, $scope, $bucket, LEAST($want::int, $cap::int), LEAST($want::int, $cap::int), $endsAt)
     ON CONFLICT (service_id, provider, scope, bucket) DO UPDATE
        SET last_grant = GREATEST(0, LEAST($want::int, $cap::int - c.sent)),
            sent = c.sent + GREATEST(0, LEAST($want::int, $cap::int - c.sent))
     RETURNING last_grant AS granted, sent`,
    { svc: serviceId, provider: k.provider, scope: k.scope, bucket: k.bucket, want, cap: k.cap, endsAt: new Date(k.endsAt) },
  );
  return { granted: r!.granted, sent: r!.sent };
}

/** Gives back units reserved and not used (a clean stop). */
export async function releaseCaps(db: Sequelize, serviceId: number, items: { key: CapKey; n: number }[]): Promise<void> {
  if (!items.length) return;
  await q(
    db,
    `UPDATE delivery_counts c SET sent = GREATEST(0, c.sent - x.n)
       FROM unnest($provider::text[], $scope::text[], $bucket::text[], $n::int[]) AS x(provider, scope, bucket, n)
      WHERE c.service_id = $svc AND c.provider = x.provider AND c.scope = x.scope AND c.bucket = x.bucket`,
    {
      svc: serviceId,
      provider: items.map((i) => i.key.provider),
      scope: items.map((i) => i.key.scope),
      bucket: items.map((i) => i.key.bucket),
      n: items.map((i) => i.n),
    },
  );
}

/** Deletes a service's windows that ended more than a day ago (at a runner's start). */
export async function pruneCaps(db: Sequelize, serviceId: number): Promise<void> {
  await q(db, `DELETE FROM delivery_counts WHERE service_id = $svc AND ends_at < now() - interval '1 day'`, { svc: serviceId });
}

/** The ledger's store for one service; prunes the service's old windows before its first reservation. */
export function capStore(db: Sequelize, serviceId: number): CapStore {
  let pruned: Promise<void> | undefined;
  return {
    async reserve(k, want) {
      await (pruned ??= pruneCaps(db, serviceId));
      return reserveCap(db, serviceId, k, want);
    },
    release: (items) => releaseCaps(db, serviceId, items),
  };
}
