/** `fairsend services list | add`: sending services. */
import { Option, type Command } from 'commander';
import { duration, table } from './format.js';
import { addTransportFlags, tlsCells, transportFromFlags, type TransportFlags } from './transport-options.js';
import { intArg, jsonOption, numArg, when, type CliContext } from './context.js';

export function registerServices(program: Command, ctx: CliContext): void {
  const { io, out, json, withEngine } = ctx;
  const services = program.command('services').description('sending services');
  services
    .command('list')
    .description('services with remaining quota today and reset time')
    .addOption(jsonOption())
    .action(async (o: { json?: boolean }) => {
      await withEngine(async (engine) => {
        const [views, quota] = await Promise.all([engine.services.list(), engine.services.quota()]);
        const q = new Map(quota.map((x) => [x.id, x]));
        if (o.json) return json(views.map((v) => ({ ...v, quota: q.get(v.id) })));
        const now = Date.now();
        out(
          table(
            ['id', 'name', 'every (s)', 'remaining', 'used', 'daily', 'resets at', 'in', 'health', 'enabled', 'tls', 'certificates'],
            views.map((v) => {
              const x = q.get(v.id)!;
              return [
                v.id,
                v.name,
                v.sendingRate,
                x.remainingQuota,
                x.usedQuota,
                x.dailyQuota,
                `${when(x.resetsAt)} (${v.quotaTimezone})`,
                duration(x.resetsAt.getTime() - now),
                x.healthy ? 'ok' : 'unhealthy',
                v.enabled ? 'yes' : 'no',
                ...tlsCells(v.transport),
              ];
            }),
          ),
        );
      });
    });
  const addService = services
    .command('add')
    .description('add a sending service (SMTP); the password is read from an environment variable, never from the command line')
    .requiredOption('--name <name>', 'unique name')
    .requiredOption('--host <host>', 'SMTP host')
    .addOption(new Option('--port <port>', 'SMTP port').argParser(intArg('port', 1, 65535)).default(587))
    .addOption(new Option('--rate <seconds>', 'seconds between two sends').argParser(numArg('rate')).makeOptionMandatory())
    .addOption(new Option('--quota <n>', 'daily quota').argParser(intArg('quota')).makeOptionMandatory())
    .option('--timezone <zone>', 'zone whose midnight resets the quota (default: DEFAULT_TIMEZONE)')
    .addOption(new Option('--max-connections <n>', 'SMTP connections at most').argParser(intArg('max-connections', 1, 100)))
    .option('--secure', 'TLS from the first byte (port 465)');
  addTransportFlags(addService).action(
    async (
      o: TransportFlags & {
        name: string;
        rate: number;
        quota: number;
        timezone?: string;
        maxConnections?: number;
      },
    ) => {
      const transport = await transportFromFlags(o, io.env);
      await withEngine(async (engine) => {
        const s = await engine.services.create({
          name: o.name,
          transport,
          sendingRate: o.rate,
          dailyQuota: o.quota,
          ...(o.timezone ? { quotaTimezone: o.timezone } : {}),
          ...(o.maxConnections ? { maxConnections: o.maxConnections } : {}),
        });
        out(`service #${s.id} ${s.name}: one send every ${s.sendingRate}s, ${s.dailyQuota} a day (${s.quotaTimezone})\n`);
      });
    },
  );
}
