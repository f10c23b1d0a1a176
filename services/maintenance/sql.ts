import { QueryTypes, type Sequelize, type Transaction } from 'sequelize';

/** Runs a statement with `$name` bind parameters and returns its rows. */
export async function select<T extends object>(
  db: Sequelize,
  sql: string,
  bind: Record<string, unknown> = {},
  transaction?: Transaction,
): Promise<T[]> {
  return (await db.query(sql, { bind, type: QueryTypes.SELECT, transaction })) as T[];
}

/** Milliseconds since `t0` (a performance.now() reading), to a tenth of a millisecond. */
export function elapsedMs(t0: number): number {
  return Math.round((performance.now() - t0) * 10) / 10;
}
