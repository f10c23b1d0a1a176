/**
 * Prints `.env.example` (default) or the configuration table of docs/configuration.md
 * (`--markdown`) from the one table of variables in services/kernel/config.ts, so neither drifts
 * from the code (test/config.test.ts checks both):
 *   npx tsx scripts/env-example.ts > .env.example
 *   npx tsx scripts/env-example.ts --markdown   # paste over the table, then npx prettier --write docs/configuration.md
 */
import { configMarkdown, envExample } from './config-docs.js';

process.stdout.write(process.argv.includes('--markdown') ? configMarkdown() : envExample());
