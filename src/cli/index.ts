/**
 * The `fairsend` command line (commander): a thin registry of command groups, one file each under
 * src/cli/ (`register(program, ctx)`; shared helpers in ./context.ts). `runCli(argv)` returns the
 * exit code instead of exiting, so tests run it in process with their own streams and
 * environment; bin/fairsend.js calls it with process.argv and sets process.exitCode.
 *
 *   fairsend start | migrate | seed | services ... | campaign ... | templates ... | scheduler status
 *   fairsend users ... | secrets ... | jobs ... | suppressions ...   (`fairsend help <command>` for each)
 *
 * Commands that read or change the database connect directly: DATABASE_URL, else the embedded
 * PostgreSQL of a running engine on EMBEDDED_PG_DIR (found by its connection file), else a newly
 * started embedded PostgreSQL. The scheduler's live state and the maintenance jobs' pause flags
 * live in the running server's memory, so `scheduler status` and `jobs` talk to a running server
 * when given --url (or FAIRSEND_URL) and a token (--token or FAIRSEND_TOKEN).
 *
 * Errors: one line on stderr, `fairsend: <message>` (a validation error lists every `path: message`),
 * and exit code 1; usage errors exit with 2.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { loadDotenv } from '../../services/kernel/config.js';
import { createLogger } from '../../services/kernel/logger.js';
import { packageRoot } from '../paths.js';
import { createContext, type CliContext, type CliIo } from './context.js';
import { errorLine } from './format.js';
import { registerStart } from './start.js';
import { registerDb } from './db.js';
import { registerServices } from './services.js';
import { registerCampaigns } from './campaigns.js';
import { registerTemplates } from './templates.js';
import { registerScheduler } from './scheduler.js';
import { registerUsers } from './users.js';
import { registerJobs } from './jobs.js';
import { registerSuppressionCommands } from './suppressions.js';
import { secretsCommand } from './secrets.js';
import { registerContactCommands } from './contacts.js';

export type { CliIo } from './context.js';

/** The command groups, in the order `fairsend --help` lists them. Add a group with one line. */
const GROUPS: ((program: Command, ctx: CliContext) => void)[] = [
  registerStart,
  registerDb,
  registerServices,
  registerCampaigns,
  registerTemplates,
  registerScheduler,
  registerUsers,
  (program, ctx) => void program.addCommand(secretsCommand(ctx)),
  registerJobs,
  registerSuppressionCommands,
  (program, ctx) => registerContactCommands(program, { ...ctx, stdout: ctx.io.stdout, env: ctx.io.env }),
];

const VERSION = (JSON.parse(readFileSync(`${packageRoot}/package.json`, 'utf8')) as { version: string }).version;

export async function runCli(argv: string[], ioIn: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env, ...ioIn };
  if (io.env === process.env) await loadDotenv();
  // Warnings go to stderr, readable on a terminal and JSON into a file (LOG_FORMAT forces either).
  const logFormat = (['pretty', 'json'] as const).find((f) => f === io.env.LOG_FORMAT) ?? 'auto';
  const ctx = createContext(io, createLogger(io.env.LOG_LEVEL ?? 'warn', io.stderr, logFormat));

  const program = new Command('fairsend')
    .description('fairsend: email campaign delivery with per-service rates and quotas, fair across users')
    .version(VERSION, '-V, --version', 'print the version')
    .exitOverride()
    .configureOutput({
      writeOut: ctx.out,
      writeErr: (s) => void io.stderr.write(s),
      outputError: (s, write) => write(`fairsend: ${s.replace(/^error: /, '')}`),
    });
  for (const register of GROUPS) register(program, ctx);

  try {
    await program.parseAsync(argv, { from: 'node' });
  } catch (err) {
    // Help and --version exit 0; usage errors (unknown command, missing option) 2.
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    io.stderr.write(errorLine(err));
    return 1;
  }
  return 0;
}
