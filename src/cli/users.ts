/** `fairsend users create | token`: users and their API tokens. */
import { Option, type Command } from 'commander';
import { createToken } from '../../services/auth.js';
import { USER_ROLES, type UserRole } from '../../models/user.js';
import { intArg, type CliContext } from './context.js';

export function registerUsers(program: Command, ctx: CliContext): void {
  const { out, withEngine } = ctx;
  const users = program.command('users').description('users and their API tokens');
  users
    .command('create')
    .description('create a user and print their API token (shown once)')
    .requiredOption('--name <name>', 'display name')
    .requiredOption('--email <email>', 'email address')
    .addOption(new Option('--quota <n>', 'sending credit').argParser(intArg('quota')).default(0))
    .option('--timezone <zone>', 'IANA zone (default: DEFAULT_TIMEZONE)')
    .option('--admin', 'may manage services and users and start or stop the scheduler (same as --role admin)')
    .addOption(new Option('--role <role>', 'admin, user, or metrics (may only scrape /metrics)').choices(USER_ROLES).default('user'))
    .action(async (o: { name: string; email: string; quota: number; timezone?: string; admin?: boolean; role: UserRole }) => {
      await withEngine(async (engine) => {
        const u = await engine.users.create({
          name: o.name,
          email: o.email,
          quota: o.quota,
          role: o.admin ? 'admin' : o.role,
          ...(o.timezone ? { timezone: o.timezone } : {}),
        });
        const token = await createToken(engine, u.id);
        out(`user #${u.id} ${u.email} (${u.role}), credit ${u.remainingQuota}\napi token (shown once, store it now): ${token}\n`);
      });
    });
  users
    .command('token')
    .description('give a user a new API token (the old one stops working) and print it')
    .argument('<id>', 'user id', intArg('id', 1, 2_147_483_647))
    .action(async (id: number) => {
      await withEngine(async (engine) => {
        const u = await engine.users.get(id);
        out(`api token of user #${u.id} ${u.email} (shown once): ${await createToken(engine, id)}\n`);
      });
    });
}
