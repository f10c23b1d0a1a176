/**
 * The one helper for raw SQL: a statement with `$name` bind parameters (never interpolated
 * values), optionally inside a transaction, returning its rows. Every module that writes SQL by
 * hand (the scheduler's statements, generation, campaign creation, the HTTP read models, the
 * maintenance jobs) goes through it.
 */
import type { Sequelize, Transaction } from 'sequelize';

export async function queryRows<T = Record<string, unknown>>(
  db: Sequelize,
  sql: string,
  bind: Record<string, unknown> = {},
  transaction?: Transaction,
): Promise<T[]> {
  const [rows] = await db.query(sql, { bind, ...(transaction ? { transaction } : {}) });
  return rows as T[];
}
