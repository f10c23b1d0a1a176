import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's root folder (where package.json, migrations/ and seeders/ live), from src/ or dist/src/. */
export const packageRoot: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'migrations'))) return dir;
    const parent = resolve(dir, '..');
    if (parent === dir) throw new Error('fairsend: cannot find the package root (package.json with migrations/)');
    dir = parent;
  }
})();

export const migrationsDir = join(packageRoot, 'migrations');
export const seedersDir = join(packageRoot, 'seeders');
