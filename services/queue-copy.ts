/**
 * A large campaign's queue written by COPY: a second connection of the pool streams the recipients'
 * rows out (`COPY (SELECT ...) TO STDOUT`, binary), and the generation transaction's own connection
 * streams them into subtasks (`COPY ... FROM STDIN`). The bytes pass through this process
 * under backpressure (memory stays flat whatever the size), as the reader's socket reads, the
 * CopyData messages forwarded whole and unparsed (kernel/copy-out.ts).
 *
 * Why: one `INSERT ... SELECT` runs the scan, the join and the insert on one backend, one row at a
 * time. COPY FROM inserts the heap rows in batches, and the reading backend works on another core
 * meanwhile. What it gives depends on the cores left over. On the 2-core development machine, with
 * PostgreSQL (embedded, 18) and the engine on it:
 *   - 10,000,000 recipients: 31-36 s against 39-42 s by INSERT ... SELECT (19.4 s on a quiet day);
 *   - 1,000,000, quiet machine (2026-12-01, W2, same runs): COPY / INSERT 0.76-0.87 (2.36-2.41 s
 *     against 2.78-3.09 s), and 0.74-0.79 in three runs that morning;
 *   - 100,000, quiet machine: 0.74 (0.52-0.87) in five runs;
 *   - PostgreSQL 15 at 5432, quiet machine, 1,000,000: 1.08 in the full bench run of that
 *     afternoon (2.27 s against 2.10 s), 0.67-0.84 in three W2 runs right after;
 *   - but with the machine busy (2026-11-30), 1,000,000 gained nothing (1.01-1.13): the engine's
 *     CPU for the pipe (0.4-1.9 s a million, the socket reads and writes) then takes the core the
 *     reading backend needed;
 *   - with psql at both ends (no engine), 1,000,000: 2.4-2.7 s against 3.1-3.7 s; the insert alone
 *     2.1 s (0.9 s of it the primary key), the read alone 1.0 s.
 * Hence GENERATION_COPY_MIN (100,000 by default, the smallest size measured to gain): a dedicated
 * database server, the usual production setting, has the second core to spare. Memory: the
 * engine's RSS rises by a constant 20-40 MB during the pipe (the socket reads' buffers until the
 * next GC), at 1 and at 10 million.
 *
 * What the rows are is unchanged: the reader runs the very SELECT the INSERT ran, as one
 * statement in READ COMMITTED (the INSERT's statement saw the contacts committed at its start, so
 * does the reader). It does not see the generation transaction's own uncommitted writes, so the
 * caller writes nothing the SELECT reads before it (mailbox providers are stored beforehand, in
 * their own transaction). COPY takes no bind parameters: the values are written into the text as
 * quoted literals (kernel/sql-literal.ts), and the SELECT casts every column to the subtasks
 * column's type (binary COPY checks nothing else).
 *
 * On any failure the writer's COPY is aborted (the transaction then rolls back: nothing partial),
 * and the reader's connection is discarded, not returned to the pool mid-COPY.
 */
import { pipeline } from 'node:stream/promises';
import type { Sequelize, Transaction } from 'sequelize';
import type pg from 'pg';
import { copyIntoRaw, copyOut } from './kernel/copy-out.js';
import { inlineBind } from './kernel/sql-literal.js';

interface ConnectionManager {
  getConnection(options: { type: 'read' | 'write' }): Promise<unknown>;
  releaseConnection(connection: unknown): void;
}

/** Connections handed out by Sequelize's pool: pg clients, dropped by the pool when `_invalid`. */
type PooledClient = pg.Client & { _invalid?: boolean };

/**
 * Copies the rows of `select` (its columns in the order of `columns`, each cast to the column's
 * type) into `table` inside `transaction`. Returns the number of rows written.
 */
export async function copyRows(
  db: Sequelize,
  transaction: Transaction,
  table: string,
  columns: readonly string[],
  select: string,
  bind: Record<string, unknown>,
): Promise<number> {
  const writer = (transaction as unknown as { connection: PooledClient }).connection;
  const text = `COPY (${inlineBind(select, bind)}) TO STDOUT (FORMAT binary)`;
  const manager = db.connectionManager as unknown as ConnectionManager;
  const reader = (await manager.getConnection({ type: 'read' })) as PooledClient;
  let ok = false;
  try {
    const out = reader.query(copyOut(text) as unknown as pg.Submittable) as unknown as ReturnType<typeof copyOut>;
    const into = writer.query(copyIntoRaw(`COPY ${table} (${columns.join(', ')}) FROM STDIN (FORMAT binary)`));
    await pipeline(out, into);
    ok = true;
    return into.rowCount ?? 0;
  } finally {
    if (!ok) reader._invalid = true;
    manager.releaseConnection(reader);
  }
}
