/**
 * `fairsend contacts`: contact imports from the command line, with a progress bar.
 *
 *   fairsend contacts import FILE --user ID [--format csv|json]    straight on the database
 *   fairsend contacts import FILE [--user ID] --url URL --token T   through a running server
 *
 * FILE is CSV (a header row: email, name, tags, timezone, status, attribute columns) or JSON
 * (`{ "contacts": [...] }` or the bare array); the format follows the extension unless --format
 * says. The import runs as a background job (services/import-jobs.ts) polled for the bar: rows
 * for JSON, bytes for CSV (parsed as it streams). All or nothing: a bad row fails the command
 * with every bad row and field named (`row 5.timezone`), and nothing is written.
 */
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { InvalidArgumentError, Option, type Command } from 'commander';
import cliProgress from 'cli-progress';
import type { Engine } from '../engine.js';
import type { ImportJobView } from '../../services/contacts.js';
import { ValidationError } from '../../services/kernel/errors.js';

export interface ContactCliDeps {
  withEngine: <T>(fn: (engine: Engine) => Promise<T>) => Promise<T>;
  out: (s: string) => void;
  stdout: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

const userId = (v: string): number => {
  if (!/^\d{1,10}$/.test(v.trim()) || Number(v) < 1 || Number(v) > 2_147_483_647) throw new InvalidArgumentError('user must be a user id');
  return Number(v);
};
const interval = (v: string): number => {
  if (!/^\d+$/.test(v.trim()) || Number(v) < 50 || Number(v) > 60_000)
    throw new InvalidArgumentError('interval must be from 50 to 60000 ms');
  return Number(v);
};

interface ImportOpts {
  user?: number;
  format?: 'csv' | 'json';
  url?: string;
  token?: string;
  interval: number;
}

type Wire = Record<string, unknown>;
/** A server's snake_case import view, as the programmatic one. */
function fromWire(w: Wire): ImportJobView {
  return {
    id: Number(w.id),
    userId: Number(w.user_id),
    format: w.format as ImportJobView['format'],
    status: w.status as ImportJobView['status'],
    rowsRead: Number(w.rows_read),
    rowsTotal: w.rows_total === null ? null : Number(w.rows_total),
    bytesRead: Number(w.bytes_read),
    bytesTotal: w.bytes_total === null ? null : Number(w.bytes_total),
    percent: w.percent === null ? null : Number(w.percent),
    result: w.result as ImportJobView['result'],
    error: w.error as ImportJobView['error'],
    createdAt: new Date(String(w.created_at)),
    updatedAt: new Date(String(w.updated_at)),
    finishedAt: w.finished_at ? new Date(String(w.finished_at)) : null,
  };
}

async function readJsonContacts(file: string): Promise<unknown[]> {
  let input: unknown;
  try {
    input = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const contacts = Array.isArray(input) ? input : (input as { contacts?: unknown } | null)?.contacts;
  if (!Array.isArray(contacts))
    throw new ValidationError([{ path: 'contacts', message: `${file} must hold { "contacts": [...] } or an array` }]);
  return contacts;
}

export function registerContactCommands(program: Command, deps: ContactCliDeps): void {
  const { out } = deps;
  const contacts = program.command('contacts').description('contacts');
  contacts
    .command('import')
    .description('import contacts from a CSV or JSON file (all or nothing), with a progress bar')
    .argument('<file>', 'CSV or JSON file')
    .addOption(new Option('--user <id>', 'whose contacts (required without --url; admins with --url)').argParser(userId))
    .addOption(new Option('--format <format>', 'csv or json (default: from the extension)').choices(['csv', 'json']))
    .addOption(new Option('--url <url>', 'a running server (default: FAIRSEND_URL)'))
    .addOption(new Option('--token <token>', 'its API token (default: FAIRSEND_TOKEN)'))
    .addOption(new Option('--interval <ms>', 'progress refresh interval').argParser(interval).default(200))
    .action(async (file: string, o: ImportOpts) => {
      const format = o.format ?? (/\.json$/i.test(file) ? 'json' : 'csv');
      let size: number;
      try {
        size = (await stat(file)).size;
      } catch (err) {
        throw new Error(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
      }
      const url = o.url ?? deps.env.FAIRSEND_URL;
      const view = url
        ? await remoteImport(url, o.token ?? deps.env.FAIRSEND_TOKEN, file, format, o)
        : await deps.withEngine(async (engine) => {
            if (o.user === undefined) throw new Error('say whose contacts: --user ID (or --url and a token for a running server)');
            const job =
              format === 'csv'
                ? await engine.contacts.startImport(o.user, { csv: createReadStream(file), bytesTotal: size })
                : await engine.contacts.startImport(o.user, { contacts: (await readJsonContacts(file)) as never[] });
            return follow(job, () => engine.contacts.getImport(job.id), o.interval, deps.stdout);
          });
      if (view.status === 'completed') {
        const r = view.result!;
        const kept = r.inactive ? `; ${r.inactive} unsubscribed or bounced contact(s) stay so (an import never re-activates)` : '';
        out(`import #${view.id}: ${view.rowsRead} rows, ${r.created} created, ${r.updated} updated${kept}\n`);
        return;
      }
      const e = view.error ?? { code: 'INTERNAL', message: 'the import failed' };
      if (e.issues?.length) throw new ValidationError(e.issues);
      throw new Error(`import #${view.id} failed (${e.code}): ${e.message}`);
    });

  async function remoteImport(url: string, token: string | undefined, file: string, format: string, o: ImportOpts) {
    if (!token) throw new Error('a token is needed to talk to a running server: --token or FAIRSEND_TOKEN');
    const call = async (method: string, path: string, body?: Buffer) => {
      let res: Response;
      try {
        res = await fetch(new URL(path, url), {
          method,
          headers: {
            authorization: `Bearer ${token}`,
            accept: 'application/json',
            ...(body ? { 'content-type': format === 'csv' ? 'text/csv' : 'application/json' } : {}),
          },
          ...(body ? { body } : {}),
        });
      } catch (err) {
        const cause = (err as Error).cause;
        throw new Error(`cannot reach ${url}: ${cause instanceof Error ? cause.message : (err as Error).message}`, { cause: err });
      }
      const json = (await res.json().catch(() => undefined)) as { import?: Wire; error?: { message?: string } } | undefined;
      if (!res.ok) throw new Error(`${url} answered ${res.status}: ${json?.error?.message ?? res.statusText}`);
      return fromWire(json!.import!);
    };
    const query = `?background=true${o.user !== undefined ? `&user_id=${o.user}` : ''}`;
    const job = await call('POST', `/api/contacts${query}`, await readFile(file));
    return follow(job, () => call('GET', `/api/contacts/imports/${job.id}`), o.interval, deps.stdout);
  }
}

/** Polls `get` until the import ends, drawing a bar on `stream` (rows for JSON, bytes for CSV). */
async function follow(
  job: ImportJobView,
  get: () => Promise<ImportJobView>,
  every: number,
  stream: NodeJS.WritableStream,
): Promise<ImportJobView> {
  const byRows = job.rowsTotal !== null;
  const total = (v: ImportJobView) => Math.max(1, (byRows ? v.rowsTotal : v.bytesTotal) ?? 1);
  const done = (v: ImportJobView) => (byRows ? v.rowsRead : v.bytesRead);
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: ` {bar} {percentage}% | ${byRows ? '{value}/{total} rows' : '{rows} rows, {value}/{total} bytes'} | {state}`,
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: every,
    },
    cliProgress.Presets.shades_classic,
  );
  let view = job;
  bar.start(total(view), done(view), { rows: view.rowsRead, state: view.status });
  try {
    while (view.status === 'running') {
      await new Promise((r) => setTimeout(r, every));
      view = await get();
      bar.setTotal(total(view));
      bar.update(view.status === 'completed' ? total(view) : done(view), { rows: view.rowsRead, state: view.status });
    }
  } finally {
    bar.stop();
  }
  return view;
}
