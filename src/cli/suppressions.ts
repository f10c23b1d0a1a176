/**
 * `fairsend suppressions`: the suppression list from the command line, straight on the database.
 *
 *   fairsend suppressions list   (--user ID | --global) [--limit N]
 *   fairsend suppressions add    (--user ID | --global) EMAIL... [--reason manual] [--detail TEXT]
 *   fairsend suppressions remove (--user ID | --global) EMAIL
 *   fairsend suppressions import (--user ID | --global) FILE.csv   (header: email[,reason,detail])
 *   fairsend suppressions export (--user ID | --global) [--output FILE]   (CSV on stdout by default)
 *
 * Also `fairsend users pause ID [--reason TEXT]` and `users resume ID`: a user pause across campaigns.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Engine } from '../engine.js';
import { SUPPRESSION_REASONS, type SuppressionReason } from '../../services/suppressions.js';
import { table } from './format.js';

export interface SuppressionCliDeps {
  withEngine: <T>(fn: (engine: Engine) => Promise<T>) => Promise<T>;
  out: (s: string) => void;
}

const userId = (v: string): number => {
  if (!/^\d{1,10}$/.test(v.trim()) || Number(v) < 1 || Number(v) > 2_147_483_647) throw new InvalidArgumentError('user must be a user id');
  return Number(v);
};

interface ScopeOpts {
  user?: number;
  global?: boolean;
}
function scopeOf(o: ScopeOpts): number | null {
  if (o.global && o.user !== undefined) throw new Error('give either --user or --global, not both');
  if (o.global) return null;
  if (o.user === undefined) throw new Error('say whose list: --user ID, or --global for the global list');
  return o.user;
}
const scoped = (cmd: Command) =>
  cmd.addOption(new Option('--user <id>', "a user's list").argParser(userId)).option('--global', 'the global list (applies to every user)');

export function registerSuppressionCommands(program: Command, { withEngine, out }: SuppressionCliDeps): void {
  const s = program.command('suppressions').description('the suppression list: addresses never mailed');
  scoped(s.command('list').description('list a suppression list'))
    .addOption(new Option('--limit <n>', 'at most this many').argParser(userId).default(1000))
    .action(async (o: ScopeOpts & { limit: number }) =>
      withEngine(async (engine) => {
        const page = await engine.suppressions.list({ userId: scopeOf(o), limit: Math.min(o.limit, 10_000) });
        out(
          table(
            ['email', 'reason', 'source', 'added'],
            page.items.map((x) => [x.email, x.reason, x.source, x.createdAt.toISOString().replace(/\.\d+Z$/, 'Z')]),
          ),
        );
        if (page.nextCursor !== null) out(`(more: raise --limit or use export)\n`);
      }),
    );
  scoped(s.command('add').description('add addresses (their queued mail is cancelled, credit refunded)'))
    .argument('<emails...>', 'addresses')
    .addOption(new Option('--reason <reason>', 'why').choices(SUPPRESSION_REASONS).default('manual'))
    .option('--detail <text>', 'a note kept with each entry')
    .action(async (emails: string[], o: ScopeOpts & { reason: SuppressionReason; detail?: string }) =>
      withEngine(async (engine) => {
        const r = await engine.suppressions.add({
          userId: scopeOf(o),
          emails,
          reason: o.reason,
          source: 'cli',
          ...(o.detail ? { detail: o.detail } : {}),
        });
        out(`${r.added} added, ${r.existing} already listed; ${r.cancelled} queued messages cancelled\n`);
      }),
    );
  scoped(s.command('remove').description('remove an address (contacts keep their status)'))
    .argument('<email>', 'address')
    .action(async (email: string, o: ScopeOpts) =>
      withEngine(async (engine) => {
        const r = await engine.suppressions.remove({ userId: scopeOf(o), email });
        out(r.removed ? `${email} removed\n` : `${email} was not on that list\n`);
      }),
    );
  scoped(s.command('import').description('import a CSV (header: email, optional reason and detail); all rows or none'))
    .argument('<file>', 'CSV file')
    .action(async (file: string, o: ScopeOpts) =>
      withEngine(async (engine) => {
        const scope = scopeOf(o);
        const r = await engine.suppressions.importCsv(scope, await readFile(file, 'utf8'), { source: 'cli-import' });
        out(`${r.rows} rows: ${r.added} added, ${r.existing} already listed; ${r.cancelled} queued messages cancelled\n`);
      }),
    );
  scoped(s.command('export').description('write a list as CSV'))
    .option('--output <file>', 'write to this file instead of stdout')
    .action(async (o: ScopeOpts & { output?: string }) =>
      withEngine(async (engine) => {
        const csv = await engine.suppressions.exportCsv(scopeOf(o));
        if (o.output) await writeFile(o.output, csv);
        else out(csv);
      }),
    );

  const users = program.commands.find((c) => c.name() === 'users') ?? program.command('users');
  users
    .command('pause')
    .description("pause all of a user's campaigns (and new ones) until resumed")
    .argument('<id>', 'user id', userId)
    .option('--reason <text>', 'why (shown in campaign status)', 'paused by an admin')
    .action(async (id: number, o: { reason: string }) =>
      withEngine(async (engine) => {
        const r = await engine.breakers.pauseUser(id, o.reason);
        out(`user #${id} paused; campaigns paused: ${r.campaigns.join(', ') || 'none'}\n`);
      }),
    );
  users
    .command('resume')
    .description('lift a user pause and resume the campaigns it paused')
    .argument('<id>', 'user id', userId)
    .action(async (id: number) =>
      withEngine(async (engine) => {
        const r = await engine.breakers.resumeUser(id);
        out(`user #${id} resumed; campaigns resumed: ${r.campaigns.join(', ') || 'none'}\n`);
      }),
    );
}
