/**
 * One migration runner for both paths: `npx sequelize-cli db:migrate` and the engine's start-up
 * run the same `.cjs` files in migrations/, and record them in the same `SequelizeMeta` table
 * (file names with their extension), so either can follow the other.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Sequelize } from 'sequelize';
import { SequelizeStorage, Umzug } from 'umzug';
import { migrationsDir, seedersDir } from './paths.js';
import type { Logger } from '../services/kernel/logger.js';

const require = createRequire(import.meta.url);

interface MigrationModule {
  up: (qi: unknown, S: typeof Sequelize) => Promise<unknown>;
  down: (qi: unknown, S: typeof Sequelize) => Promise<unknown>;
}

function umzugFor(sequelize: Sequelize, kind: 'migrations' | 'seeders', logger?: Logger) {
  const dir = kind === 'migrations' ? migrationsDir : seedersDir;
  const table = kind === 'migrations' ? 'SequelizeMeta' : 'SequelizeData';
  return new Umzug({
    migrations: {
      glob: join(dir, '*.cjs'),
      resolve: ({ name, path, context }) => {
        const mod = require(path!) as MigrationModule;
        return { name, up: () => mod.up(context, Sequelize), down: () => mod.down(context, Sequelize) };
      },
    },
    context: sequelize.getQueryInterface(),
    // sequelize-cli's table names: SequelizeMeta for migrations, SequelizeData for seeders.
    // Table names pinned: an instance defined with `underscored: true` would otherwise look for
    // "sequelize_meta" and re-run everything.
    storage: new SequelizeStorage({ sequelize, modelName: table, tableName: table }),
    logger: logger
      ? {
          info: (m) => logger.info(m, kind),
          warn: (m) => logger.warn(m, kind),
          error: (m) => logger.error(m, kind),
          debug: (m) => logger.debug(m, kind),
        }
      : undefined,
  });
}

/** Runs the pending migrations; `to` (a file name) stops after that one. */
export async function migrateUp(sequelize: Sequelize, logger?: Logger, options: { to?: string } = {}): Promise<string[]> {
  const done = await umzugFor(sequelize, 'migrations', logger).up(options.to ? { to: options.to } : {});
  return done.map((m) => m.name);
}

export async function migrateDownAll(sequelize: Sequelize, logger?: Logger): Promise<string[]> {
  const done = await umzugFor(sequelize, 'migrations', logger).down({ to: 0 });
  return done.map((m) => m.name);
}

export async function seedAll(sequelize: Sequelize, logger?: Logger): Promise<string[]> {
  const done = await umzugFor(sequelize, 'seeders', logger).up();
  return done.map((m) => m.name);
}
