/**
 * Prometheus metrics, in a Registry of this server's own (never prom-client's global one, so two
 * servers or a test's several servers in one process never mix their series).
 *
 * Event-driven (from the scheduler's events, while the server lives):
 *   fairsend_sends_total{service_id, service, outcome="sent|failed|retry"}   counter
 *   fairsend_send_latency_seconds{service_id}                       histogram: SMTP dispatch to 250
 *   fairsend_scheduler_ticks_total                                   counter
 * Sampled on scrape (one query each):
 *   fairsend_queue_depth                                             queued subtasks
 *   fairsend_service_remaining_quota{service_id, service}            and _used_ and _daily_
 *   fairsend_service_healthy{service_id, service}                    1 or 0
 *   fairsend_db_pool_connections{pool="api|scheduler", state="using|available"}   they sum to the pool's size
 *   fairsend_db_pool_max_connections{pool}                          the pool's limit
 *   fairsend_db_pool_waiting_requests{pool}                         queries waiting for a connection
 *   fairsend_scheduler_running                                       1 or 0
 *   fairsend_processing_rate_per_minute{window="1m|5m|15m"}
 *   fairsend_campaigns_paused{cause="complaint_breaker|hard_bounce_breaker|user_pause|manual"}
 *   fairsend_campaign_breaker_tripped{campaign_id, campaign, breaker="complaint|hard_bounce"}   1 per campaign a breaker paused
 *   fairsend_users_paused                                            users paused across campaigns
 *   fairsend_send_worker_threads                                     SEND_WORKERS threads (0: SMTP work on the main thread)
 *   fairsend_send_worker_restarts_total                              threads started again after one died
 *   fairsend_send_worker_lost_sends_total                            sends under way on a thread that died (ambiguous)
 * plus Node's process metrics (fairsend_process_*, fairsend_nodejs_*), less prom-client's three
 * gauges named like counters (fairsend_nodejs_active_{handles,requests,resources}_total, which
 * `promtool check metrics` rejects): each is the sum of its per-type gauge without the suffix.
 *
 * The send and quota series carry the service's name next to its id, to read a dashboard without a
 * join. Events carry only the id, so sends are counted by id and named when scraped (from the same
 * query as the quota gauges); the latency histogram keeps only `service_id`.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine } from '../engine.js';
import type { SentEvent } from '../../services/scheduler/loop.js';
import { pauseOverview, PAUSE_CAUSES, type PauseOverview } from '../../services/breakers.js';

export interface ServerMetrics {
  registry: Registry;
  /** Stops listening to the scheduler's events. */
  detach(): void;
}

export function createMetrics(engine: Engine, opts: { queuedCount: () => Promise<number>; processMetrics?: boolean }): ServerMetrics {
  const registry = new Registry();
  if (opts.processMetrics !== false) {
    collectDefaultMetrics({ register: registry, prefix: 'fairsend_' });
    for (const m of registry.getMetricsAsArray()) {
      if (m instanceof Gauge && m.name.endsWith('_total')) registry.removeSingleMetric(m.name);
    }
  }

  // prom-client collects every metric of a scrape concurrently: the quota gauges and the send
  // counter share one query through this memo (a scrape's collects all start within milliseconds).
  let quotaMemo: { at: number; value: ReturnType<Engine['services']['quota']> } | undefined;
  const quota = () => {
    if (!quotaMemo || Date.now() - quotaMemo.at > 250) quotaMemo = { at: Date.now(), value: engine.services.quota() };
    return quotaMemo.value;
  };
  /** Last known name of each service (a deleted service keeps the name it had). */
  const names = new Map<number, string>();

  /** Sends by `${serviceId} ${outcome}`, counted as events come, exposed with the name when scraped. */
  const sendCounts = new Map<string, number>();
  new Counter({
    name: 'fairsend_sends_total',
    help: 'Messages handed to a sending service, by outcome: sent (accepted), failed (permanent or out of retries), retry (temporary failure)',
    labelNames: ['service_id', 'service', 'outcome'] as const,
    registers: [registry],
    async collect() {
      if (sendCounts.size > 0) for (const s of await quota()) names.set(s.id, s.name);
      this.reset();
      for (const [key, n] of sendCounts) {
        const [id, outcome] = key.split(' ') as [string, string];
        this.inc({ service_id: id, service: names.get(Number(id)) ?? '', outcome }, n);
      }
    },
  });
  const countSend = (serviceId: string, outcome: 'sent' | 'failed' | 'retry') => {
    const key = `${serviceId} ${outcome}`;
    sendCounts.set(key, (sendCounts.get(key) ?? 0) + 1);
  };
  const latency = new Histogram({
    name: 'fairsend_send_latency_seconds',
    help: 'Time from handing a message to the SMTP connection to its acceptance',
    labelNames: ['service_id'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const ticks = new Counter({ name: 'fairsend_scheduler_ticks_total', help: 'Scheduler control passes', registers: [registry] });

  new Gauge({
    name: 'fairsend_queue_depth',
    help: 'Subtasks queued in the database, waiting to be sent',
    registers: [registry],
    async collect() {
      this.set(await opts.queuedCount());
    },
  });
  const quotaGauge = (name: string, help: string, value: (q: Awaited<ReturnType<typeof quota>>[number]) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['service_id', 'service'] as const,
      registers: [registry],
      async collect() {
        const list = await quota();
        this.reset();
        for (const s of list) this.set({ service_id: String(s.id), service: s.name }, value(s));
      },
    });
  quotaGauge('fairsend_service_remaining_quota', 'Sends left today before the quota resets', (s) => s.remainingQuota);
  quotaGauge('fairsend_service_used_quota', 'Sends used (or reserved) today', (s) => s.usedQuota);
  quotaGauge('fairsend_service_daily_quota', 'Daily quota', (s) => s.dailyQuota);
  quotaGauge('fairsend_service_healthy', '1 when the service is healthy', (s) => (s.healthy ? 1 : 0));
  new Gauge({
    name: 'fairsend_db_pool_connections',
    help: 'Open connections of the API, scheduler and prepared-statement pools by state (using or available; they sum to the pool size)',
    labelNames: ['pool', 'state'] as const,
    registers: [registry],
    collect() {
      for (const [pool, u] of Object.entries(engine.pools())) {
        this.set({ pool, state: 'using' }, u.using);
        this.set({ pool, state: 'available' }, u.available);
      }
    },
  });
  new Gauge({
    name: 'fairsend_db_pool_max_connections',
    help: 'Most connections each pool may open',
    labelNames: ['pool'] as const,
    registers: [registry],
    collect() {
      for (const [pool, u] of Object.entries(engine.pools())) this.set({ pool }, u.max);
    },
  });
  new Gauge({
    name: 'fairsend_db_pool_waiting_requests',
    help: 'Queries waiting for a free connection of each pool',
    labelNames: ['pool'] as const,
    registers: [registry],
    collect() {
      for (const [pool, u] of Object.entries(engine.pools())) this.set({ pool }, u.waiting);
    },
  });
  new Gauge({
    name: 'fairsend_scheduler_running',
    help: '1 when this process runs the scheduler',
    registers: [registry],
    collect() {
      this.set(engine.scheduler.status().isRunning ? 1 : 0);
    },
  });
  new Gauge({
    name: 'fairsend_service_fairness_lag_turns',
    help: 'Largest lag of a user behind an ideal round robin on the service, in turns (below 1 for a perfect round robin)',
    labelNames: ['service_id', 'service'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const s of engine.scheduler.status().services) this.set({ service_id: String(s.id), service: s.name }, s.fairnessLag);
    },
  });
  new Gauge({
    name: 'fairsend_processing_rate_per_minute',
    help: 'Emails sent a minute by this process, averaged over a window',
    labelNames: ['window'] as const,
    registers: [registry],
    collect() {
      const r = engine.scheduler.status().processingRate;
      this.set({ window: '1m' }, r.perMinute1);
      this.set({ window: '5m' }, r.perMinute5);
      this.set({ window: '15m' }, r.perMinute15);
    },
  });

  // Paused campaigns and users: one query per scrape, shared by the three gauges. A scrape starts
  // every collect in one go, so the query in flight is the memo, dropped once it answers (the
  // next scrape sees a resume at once).
  let pauseQuery: Promise<PauseOverview> | undefined;
  const paused = () => {
    if (!pauseQuery) {
      const q = pauseOverview(engine.apiDb);
      pauseQuery = q;
      void q.then(
        () => (pauseQuery = pauseQuery === q ? undefined : pauseQuery),
        () => (pauseQuery = pauseQuery === q ? undefined : pauseQuery),
      );
    }
    return pauseQuery;
  };
  new Gauge({
    name: 'fairsend_campaigns_paused',
    help: 'Paused campaigns by cause: a safety breaker (complaints or hard bounces), a user pause, or by hand',
    labelNames: ['cause'] as const,
    registers: [registry],
    async collect() {
      const p = await paused();
      for (const cause of PAUSE_CAUSES) this.set({ cause }, p.byCause[cause]);
    },
  });
  new Gauge({
    name: 'fairsend_campaign_breaker_tripped',
    help: 'Campaigns a safety breaker paused (1 each, until resumed), with the breaker that tripped',
    labelNames: ['campaign_id', 'campaign', 'breaker'] as const,
    registers: [registry],
    async collect() {
      const p = await paused();
      this.reset();
      for (const t of p.tripped) this.set({ campaign_id: String(t.id), campaign: t.name, breaker: t.breaker }, 1);
    },
  });
  new Gauge({
    name: 'fairsend_users_paused',
    help: 'Users paused across campaigns by an admin',
    registers: [registry],
    async collect() {
      this.set((await paused()).usersPaused);
    },
  });
  // Deliverability (docs/deliverability.md): per service and mailbox provider this process sends to.
  const scopes = () =>
    engine.scheduler.status().services.flatMap((svc) => svc.deliverability.providers.map((p) => ({ service_id: String(svc.id), ...p })));
  new Gauge({
    name: 'fairsend_provider_rate_per_second',
    help: 'Rate in force (current) and configured for a (service, mailbox provider) pair; no current series while the pair has no pace of its own',
    labelNames: ['service_id', 'provider', 'kind'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const p of scopes()) {
        if (p.rate !== null) this.set({ service_id: p.service_id, provider: p.provider, kind: 'current' }, p.rate);
        if (p.configuredRate !== null) this.set({ service_id: p.service_id, provider: p.provider, kind: 'configured' }, p.configuredRate);
      }
    },
  });
  new Gauge({
    name: 'fairsend_provider_state',
    help: '1 for the state of a (service, mailbox provider) pair: normal, slowed or suspended',
    labelNames: ['service_id', 'provider', 'state'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const p of scopes())
        for (const state of ['normal', 'slowed', 'suspended'] as const)
          this.set({ service_id: p.service_id, provider: p.provider, state }, p.state === state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'fairsend_provider_suspended_until_seconds',
    help: 'End of the suspension of a (service, mailbox provider) pair, Unix time; 0 when not suspended',
    labelNames: ['service_id', 'provider'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const p of scopes())
        this.set({ service_id: p.service_id, provider: p.provider }, p.suspendedUntil ? Date.parse(p.suspendedUntil) / 1000 : 0);
    },
  });
  new Gauge({
    name: 'fairsend_provider_deferrals',
    help: 'Deferral replies matched by a throttling rule for a (service, mailbox provider) pair since the process started',
    labelNames: ['service_id', 'provider'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const p of scopes()) this.set({ service_id: p.service_id, provider: p.provider }, p.deferrals);
    },
  });
  new Gauge({
    name: 'fairsend_deferred_by_throttle',
    help: 'Messages sent back to the queue (not_before) because their (service, provider) pair was blocked for a while, since the process started',
    registers: [registry],
    collect() {
      this.set(engine.scheduler.status().deferredByThrottle);
    },
  });
  new Gauge({
    name: 'fairsend_send_worker_threads',
    help: 'Send worker threads (SEND_WORKERS) of the running scheduler; 0: SMTP work on the main thread',
    registers: [registry],
    collect() {
      this.set(engine.scheduler.status().sendWorkers.threads);
    },
  });
  new Counter({
    name: 'fairsend_send_worker_restarts_total',
    help: 'Send worker threads started again after one died (its sends under way were classified ambiguous), since the scheduler started',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(engine.scheduler.status().sendWorkers.restarts);
    },
  });
  new Counter({
    name: 'fairsend_send_worker_lost_sends_total',
    help: 'Sends under way on a send worker thread when it died (the delivery mode decides: resent or unknown), since the scheduler started',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(engine.scheduler.status().sendWorkers.lostSends);
    },
  });

  const onSent = (e: SentEvent) => {
    countSend(String(e.serviceId), 'sent');
    // dispatchedAt is wall-clock ms; `at` comes from the engine's clock (injectable): never negative.
    latency.observe({ service_id: String(e.serviceId) }, Math.max(0, e.at.getTime() - e.dispatchedAt) / 1000);
  };
  const serviceOf = (e: unknown) => String((e as { serviceId?: unknown })?.serviceId ?? 'unknown');
  const onFailed = (e: unknown) => countSend(serviceOf(e), 'failed');
  const onRetry = (e: unknown) => countSend(serviceOf(e), 'retry');
  const onTick = () => ticks.inc();
  engine.scheduler.on('sent', onSent);
  engine.scheduler.on('failed', onFailed);
  engine.scheduler.on('retry', onRetry);
  engine.scheduler.on('tick', onTick);

  return {
    registry,
    detach() {
      engine.scheduler.off('sent', onSent as (...args: never[]) => void);
      engine.scheduler.off('failed', onFailed);
      engine.scheduler.off('retry', onRetry);
      engine.scheduler.off('tick', onTick);
    },
  };
}
