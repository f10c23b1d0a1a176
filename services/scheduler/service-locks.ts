/**
 * Which engine runs which sending service: exactly one live process per service, so a service's
 * rate is kept by one clock. Ownership is a PostgreSQL session advisory lock per service, held on
 * a dedicated connection (outside the pools, so it is never returned to a pool or shared).
 *
 * Why advisory locks rather than a lease row with heartbeats: PostgreSQL releases a session lock
 * the moment the owner's connection ends, so a crashed engine's services are free at once, without
 * a home-made expiry protocol; a hung or partitioned engine is cut off by TCP keepalives (idle 10 s,
 * then 4 probes 5 s apart: about 30 s, the lock timeout), and its runners stop as soon as it sees its
 * lock connection fail. Nothing to clean up after a crash, and no clock skew between engines.
 */
import pg from 'pg';
import type { Logger } from '../kernel/logger.js';

/** 'fsnd': the first key of fairsend's advisory locks; the second is the service id. */
export const LOCK_SPACE = 0x66736e64 | 0;

export class ServiceLocks {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  readonly owned = new Set<number>();
  private readonly url: string;
  private readonly logger: Logger;
  private readonly onLost: () => void;
  private closed = false;

  constructor(url: string, logger: Logger, onLost: () => void) {
    this.url = url;
    this.logger = logger;
    this.onLost = onLost;
  }

  private async connection(): Promise<pg.Client> {
    if (this.client) return this.client;
    this.connecting ??= (async () => {
      const client = new pg.Client({
        connectionString: this.url,
        application_name: 'fairsend-locks',
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000,
        options: '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=4',
      });
      const lost = (err?: unknown) => {
        if (this.client !== client) return;
        this.client = undefined;
        if (this.owned.size && !this.closed) {
          this.logger.error({ err, services: [...this.owned] }, 'service lock connection lost: giving up ownership');
          this.owned.clear();
          this.onLost();
        }
      };
      client.on('error', lost);
      client.on('end', () => lost());
      await client.connect();
      this.client = client;
      return client;
    })().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /** Takes the service if no live engine has it. */
  async tryAcquire(serviceId: number): Promise<boolean> {
    if (this.owned.has(serviceId)) return true;
    const c = await this.connection();
    const { rows } = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [LOCK_SPACE, serviceId]);
    if (rows[0]?.ok) this.owned.add(serviceId);
    return this.owned.has(serviceId);
  }

  async release(serviceId: number): Promise<void> {
    if (!this.owned.delete(serviceId) || !this.client) return;
    await this.client.query('SELECT pg_advisory_unlock($1, $2)', [LOCK_SPACE, serviceId]).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.owned.clear();
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
