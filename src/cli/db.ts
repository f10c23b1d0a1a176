/** `fairsend migrate` and `fairsend seed`: the schema and the demo data. */
import type { Command } from 'commander';
import { migrateUp, seedAll } from '../migrator.js';
import type { CliContext } from './context.js';

export function registerDb(program: Command, ctx: CliContext): void {
  const { out, withCore } = ctx;
  program
    .command('migrate')
    .description('apply pending migrations')
    .action(async () => {
      await withCore(false, async (core) => {
        out(`migrating ${core.databaseLabel} ...\n`);
        const ran = await migrateUp(core.apiDb);
        out(ran.length ? ran.map((m) => `  applied ${m}\n`).join('') + `${ran.length} migration(s) applied\n` : 'already up to date\n');
      });
    });

  program
    .command('seed')
    .description('load the demo data set (three users, three services, contacts, campaigns)')
    .action(async () => {
      await withCore(true, async (core) => {
        out(`seeding ${core.databaseLabel} ...\n`);
        const ran = await seedAll(core.apiDb);
        out(ran.length ? ran.map((m) => `  loaded ${m}\n`).join('') : 'nothing to load: every seeder has run\n');
      });
    });
}
