/** `fairsend scheduler status`: a running server's scheduler, else what the database shows. */
import type { Command } from 'commander';
import { duration, table } from './format.js';
import { jsonOption, when, type CliContext } from './context.js';
import { tlsCells } from './transport-options.js';
import type { TlsMode } from '../../services/delivery/tls-policy.js';

export function registerScheduler(program: Command, ctx: CliContext): void {
  const { out, json, withEngine, remote, urlOption, tokenOption } = ctx;
  const scheduler = program.command('scheduler').description('the delivery scheduler');
  scheduler
    .command('status')
    .description('a running server’s scheduler (with --url), else what the database shows: live engines, queue, quota')
    .addOption(urlOption())
    .addOption(tokenOption())
    .addOption(jsonOption())
    .action(async (o: { url?: string; token?: string; json?: boolean }) => {
      const api = remote(o);
      if (api) {
        const s = await api<Record<string, unknown> & { services: Record<string, unknown>[] }>('GET', '/api/scheduler/status');
        if (o.json) return json(s);
        const rate = s.processing_rate as Record<string, number>;
        out(
          `scheduler ${s.is_running ? 'running' : 'stopped'} (${String(s.instance_id)}, version ${String(s.version)}, up ${duration(Number(s.uptime_seconds) * 1000)})\n` +
            `queued subtasks: ${String(s.queued_subtasks)}, buffered: ${String(s.buffered_messages)}, ` +
            `rate: ${rate.per_minute_1}/min (1m) ${rate.per_minute_5}/min (5m) ${rate.per_minute_15}/min (15m)\n`,
        );
        out(
          table(
            ['id', 'name', 'state', 'remaining', 'daily', 'resets at', 'health', 'tls', 'certificates', 'fair lag'],
            s.services.map((x) => [
              Number(x.id),
              String(x.name),
              String(x.state),
              Number(x.remaining_quota),
              Number(x.daily_quota),
              when(x.resets_at),
              x.is_healthy ? 'ok' : 'unhealthy',
              ...tlsCells({ tlsMode: x.tls_mode as TlsMode, certificateChecking: x.certificate_checking !== false }),
              // The worst user's lag behind a round robin, in turns; '-' where this server does not run the service.
              typeof x.fairness_lag === 'number' ? x.fairness_lag.toFixed(2) : '-',
            ]),
          ),
        );
        out(
          pausedLines(
            (s.paused_campaigns as { id: number; name: string; reason: string | null }[] | undefined) ?? [],
            (s.paused_users as { id: number; name: string; reason: string }[] | undefined) ?? [],
          ),
        );
        return;
      }
      await withEngine(async (engine) => {
        const [live, [[queued]], quota, paused] = await Promise.all([
          engine.scheduler.instances(),
          engine.apiDb.query(`SELECT count(*)::bigint AS n FROM subtasks WHERE status = 'queued'`),
          engine.services.quota(),
          engine.breakers.paused(),
        ]);
        if (o.json)
          return json({
            instances: live,
            queuedSubtasks: Number((queued as { n: string }).n),
            services: quota,
            pausedCampaigns: paused.campaigns,
            pausedUsers: paused.users,
          });
        out(
          `scheduler engines alive (heartbeat in the last ${(engine.config.heartbeatMs * 3) / 1000}s): ${live.length}\n` +
            live
              .map(
                (i) => `  ${i.id} on ${i.host} pid ${i.pid}, last heartbeat ${when(i.heartbeatAt)}, services [${i.services.join(', ')}]\n`,
              )
              .join('') +
            `queued subtasks: ${Number((queued as { n: string }).n)}\n`,
        );
        out(
          table(
            ['id', 'name', 'remaining', 'daily', 'resets at', 'health', 'enabled'],
            quota.map((x) => [
              x.id,
              x.name,
              x.remainingQuota,
              x.dailyQuota,
              when(x.resetsAt),
              x.healthy ? 'ok' : 'unhealthy',
              x.enabled ? 'yes' : 'no',
            ]),
          ),
        );
        out(pausedLines(paused.campaigns, paused.users));
      });
    });
}

/** Paused campaigns with why (a breaker's figures, a user pause, or "by hand"), and paused users. */
export function pausedLines(
  campaigns: { id: number; name: string; reason: string | null }[],
  users: { id: number; name: string; reason: string }[],
): string {
  return (
    campaigns.map((c) => `paused campaign ${c.id} ${c.name}: ${c.reason ?? 'by hand'}\n`).join('') +
    users.map((u) => `paused user ${u.id} ${u.name}: ${u.reason}\n`).join('')
  );
}
