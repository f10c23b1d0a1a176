/**
 * Named prepared statements for the send path's hot statements (the outcome write, the claims, the
 * quota reservation). `queryRows` (db-query.ts) sends an unnamed statement, which PostgreSQL parses
 * and plans again on every call: for the outcome write, a statement of many CTEs, the planning
 * cost more PostgreSQL CPU than the execution (W1, docs/performance.md). A named statement is
 * parsed once per connection, and after five executions PostgreSQL may keep a generic plan, so the
 * planning is paid about once per connection instead of once per call.
 *
 * Named statements live in one server session: pg's client remembers which names it has parsed on
 * its connection and parses again on a new one, so a lost connection costs one parse on the next.
 * Two cases re-prepare and retry the statement once (safe: a failed statement outside a
 * transaction changed nothing):
 *   - 26000 (prepared statement does not exist): the session lost it (DISCARD ALL / DEALLOCATE, or
 *     a pooler in transaction mode that hands the statement to another server session);
 *   - 0A000 (cached plan must not change result type): the schema changed under a statement whose
 *     result columns depend on it.
 * Only for single statements outside a transaction (each is its own transaction): a retry inside
 * one would run in an aborted transaction.
 *
 * Which pool: a Sequelize instance may have a pool for its prepared statements attached
 * (`attachPreparedPool`; the engine attaches one to the scheduler's, whose sessions force generic
 * plans: db.ts, APP_NAME_PREPARED). queryPrepared(db, ...) runs on that pool, or on db's own when
 * none is attached.
 */
import { DatabaseError, type Sequelize } from 'sequelize';

export interface PreparedStatement {
  /** The statement's name on the server: one name per text (a variant of a statement has a name of its own). */
  readonly name: string;
  /** The text with positional parameters ($1, $2, ...). */
  readonly text: string;
  /** The bind names, in the order of the positional parameters. */
  readonly params: readonly string[];
}

/** What this module needs of pg's client (kept narrow: Sequelize hands it out untyped). */
interface PgClient {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: unknown[] }>;
  connection?: { parsedStatements?: Record<string, string>; submittedNamedStatements?: Record<string, string> };
  _invalid?: boolean;
}

interface ConnectionManager {
  getConnection(options?: { type?: 'read' | 'write'; uuid?: string }): Promise<unknown>;
  releaseConnection(connection: unknown): void;
}

const names = new Map<string, string>();

const preparedPools = new WeakMap<Sequelize, Sequelize>();

/** Runs `db`'s prepared statements (queryPrepared) on `pool` from now on. */
export function attachPreparedPool(db: Sequelize, pool: Sequelize): void {
  preparedPools.set(db, pool);
}

/** The pool `db`'s prepared statements run on: the attached one, or `db` itself. */
export function preparedPoolOf(db: Sequelize): Sequelize {
  return preparedPools.get(db) ?? db;
}

/**
 * A statement with `$name` bind parameters (as queryRows takes them), turned into a named statement
 * with positional ones. `name` must be unique per text across the process (checked): pg refuses a
 * name reused for another text on the same connection.
 */
export function prepare(name: string, sql: string): PreparedStatement {
  const params: string[] = [];
  const text = sql.replace(/\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, key: string) => {
    let i = params.indexOf(key);
    if (i < 0) i = params.push(key) - 1;
    return `$${i + 1}`;
  });
  const known = names.get(name);
  if (known !== undefined && known !== text) throw new Error(`prepared statement name ${name} used for two different statements`);
  names.set(name, text);
  return { name, text, params };
}

/** Codes for which the statement is prepared again and retried once (see the module's comment). */
const REPREPARE = new Set(['26000', '0A000']);

/** Forgets a statement on this connection (pg's memory of it, and the server's if it still has one). */
async function forget(client: PgClient, name: string): Promise<void> {
  delete client.connection?.parsedStatements?.[name];
  delete client.connection?.submittedNamedStatements?.[name];
  // Quoted: the name is ours (prepare()), made of letters, digits, '-' and '_'.
  await (client as unknown as { query(sql: string): Promise<unknown> })
    .query(`DEALLOCATE "${name.replace(/"/g, '')}"`)
    .catch(() => undefined);
}

function valuesOf(stmt: PreparedStatement, bind: Record<string, unknown>): unknown[] {
  return stmt.params.map((k) => {
    const v = bind[k];
    if (v === undefined) throw new Error(`prepared statement ${stmt.name}: no value for $${k}`);
    // As Sequelize does for its bind parameters: PostgreSQL text cannot hold NUL.
    return typeof v === 'string' ? v.replace(/\0/g, '\\0') : v;
  });
}

/**
 * Runs a prepared statement on a connection of `db`'s pool, as its own transaction, returning its
 * rows. Errors come back as Sequelize's DatabaseError (as from db.query: `original` is pg's error),
 * so isConnectionError and the callers' handling see the same shapes as before.
 */
export async function queryPrepared<T = Record<string, unknown>>(
  db: Sequelize,
  stmt: PreparedStatement,
  bind: Record<string, unknown>,
): Promise<T[]> {
  const values = valuesOf(stmt, bind);
  // As db.query logs its statements (the scheduler's pool logs them at trace level).
  const log = (db as unknown as { options: { logging?: unknown } }).options.logging;
  if (typeof log === 'function') (log as (sql: string) => void)(`Executing (prepared ${stmt.name}): ${stmt.text}`);
  const manager = preparedPoolOf(db).connectionManager as unknown as ConnectionManager;
  const client = (await manager.getConnection({ type: 'write' })) as PgClient;
  const run = () => client.query({ name: stmt.name, text: stmt.text, values });
  try {
    try {
      return (await run()).rows as T[];
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string' || !REPREPARE.has(code)) throw err;
      await forget(client, stmt.name);
      return (await run()).rows as T[];
    }
  } catch (err) {
    const e = err as Error & { code?: unknown; sql?: string; parameters?: unknown[] };
    // As Sequelize's query does: a reset connection is not handed out again.
    if (e.code === 'ECONNRESET' || /Connection terminated|not queryable/i.test(e.message ?? '')) client._invalid = true;
    e.sql = stmt.text;
    e.parameters = values;
    throw new DatabaseError(e as Error & { sql: string; parameters: object });
  } finally {
    manager.releaseConnection(client);
  }
}
