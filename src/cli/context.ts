/**
 * What every command group of the CLI shares: the streams and environment (CliIo), the engine
 * openers, a running server's API client, option parsers and output helpers. A command group is a
 * file under src/cli/ exporting `register(program, ctx)`, listed in src/cli/index.ts.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import { createEngine, createEngineCore, type Engine, type EngineCore } from '../engine.js';
import { loadConfig } from '../../services/kernel/config.js';
import type { Logger } from '../../services/kernel/logger.js';
import type { JobsApi } from '../http/options.js';
import { findRunningEmbedded } from '../embedded-connection.js';
import { EMBEDDED_SECRET_KEY_FILE } from '../embedded-postgres.js';

export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Environment (default process.env; `.env` is loaded only then). */
  env: NodeJS.ProcessEnv;
  /** Ends `start` and `campaign status --watch` (besides SIGINT/SIGTERM); for tests and embedding. */
  signal?: AbortSignal;
  /** Maintenance jobs for in-process `jobs` commands, when the engine does not carry them. */
  jobs?: (engine: Engine) => JobsApi;
}

export interface CliContext {
  io: CliIo;
  logger: Logger;
  out: (s: string) => void;
  /** Prints `value` as indented JSON (the `--json` output of listing commands). */
  json: (value: unknown) => void;
  /** The full engine for one command, closed after it. */
  withEngine: <T>(fn: (engine: Engine) => Promise<T>) => Promise<T>;
  /** The engine core (no scheduler, no API) for one command. */
  withCore: <T>(migrate: boolean, fn: (core: EngineCore) => Promise<T>) => Promise<T>;
  /** An injected jobs API (tests, embedding) wins over the engine's own maintenance runner. */
  jobsOf: (engine: Engine) => JobsApi | undefined;
  /** The running server named by --url or FAIRSEND_URL, if any. */
  remote: (opts: { url?: string; token?: string }) => ReturnType<typeof apiClient> | undefined;
  urlOption: () => Option;
  tokenOption: () => Option;
}

/**
 * The database the CLI works on: DATABASE_URL; else an embedded PostgreSQL already running on
 * EMBEDDED_PG_DIR (found by the connection file the engine writes there, so no password is typed);
 * else the CLI starts the embedded cluster itself.
 */
async function databaseFor(env: NodeJS.ProcessEnv): Promise<{ env: NodeJS.ProcessEnv; databaseUrl?: string }> {
  if (env.DATABASE_URL) return { env };
  const dataDir = loadConfig(env).embeddedPgDir;
  const running = await findRunningEmbedded(dataDir);
  if (!running) return { env };
  // The embedded demo's secret key lives in its data folder (src/embedded-postgres.ts); an engine
  // given a database URL does not look there, so pass it on.
  const key = env.FAIRSEND_SECRET_KEY
    ? undefined
    : await readFile(join(dataDir, EMBEDDED_SECRET_KEY_FILE), 'utf8').then(
        (k) => k.trim(),
        () => undefined,
      );
  return { env: key ? { ...env, FAIRSEND_SECRET_KEY: key } : env, databaseUrl: running.url };
}

export function createContext(io: CliIo, logger: Logger): CliContext {
  const out = (s: string) => void io.stdout.write(s);
  return {
    io,
    logger,
    out,
    json: (value) => out(JSON.stringify(value, null, 2) + '\n'),
    withEngine: async (fn) => {
      const engine = await createEngine({ logger, ...(await databaseFor(io.env)) });
      try {
        return await fn(engine);
      } finally {
        await engine.close();
      }
    },
    withCore: async (migrate, fn) => {
      const core = await createEngineCore({ logger, migrate, ...(await databaseFor(io.env)) });
      try {
        return await fn(core);
      } finally {
        await core.close();
      }
    },
    jobsOf: (engine) => io.jobs?.(engine) ?? (engine as { jobs?: JobsApi }).jobs,
    remote: (opts) => {
      const url = opts.url ?? io.env.FAIRSEND_URL;
      return url ? apiClient(url, opts.token ?? io.env.FAIRSEND_TOKEN) : undefined;
    },
    urlOption: () => new Option('--url <url>', 'a running server (default: FAIRSEND_URL)'),
    tokenOption: () => new Option('--token <token>', 'its API token (default: FAIRSEND_TOKEN)'),
  };
}

/** `--json`: machine-readable output instead of the table. */
export const jsonOption = () => new Option('--json', 'print JSON (for scripts) instead of a table');

export const FINAL = new Set(['completed', 'cancelled']);

export function intArg(name: string, min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    if (!/^-?\d+$/.test(v.trim()) || Number(v) < min || Number(v) > max)
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return Number(v);
  };
}
export function numArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative number`);
    return n;
  };
}

/** Resolves after `ms`, or at once when `signal` aborts; true when aborted. */
export function wait(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(false);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(true);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** An AbortSignal that fires on SIGINT/SIGTERM or on the caller's signal; `dispose` removes the handlers. */
export function stopSignal(io: CliIo): { signal: AbortSignal; dispose: () => void; which: () => string | undefined } {
  const ctl = new AbortController();
  let which: string | undefined;
  const on = (sig: string) => () => {
    which = sig;
    ctl.abort();
  };
  const onInt = on('SIGINT');
  const onTerm = on('SIGTERM');
  process.once('SIGINT', onInt);
  process.once('SIGTERM', onTerm);
  const onCaller = () => ctl.abort();
  io.signal?.addEventListener('abort', onCaller, { once: true });
  if (io.signal?.aborted) ctl.abort();
  return {
    signal: ctl.signal,
    which: () => which,
    dispose: () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      io.signal?.removeEventListener('abort', onCaller);
    },
  };
}

/** A small client for a running server's API (scheduler status, jobs). */
export function apiClient(url: string, token: string | undefined) {
  return async <T>(method: 'GET' | 'POST', path: string): Promise<T> => {
    if (!token) throw new Error('a token is needed to talk to a running server: --token or FAIRSEND_TOKEN');
    let res: Response;
    try {
      res = await fetch(new URL(path, url), { method, headers: { authorization: `Bearer ${token}`, accept: 'application/json' } });
    } catch (err) {
      const cause = (err as Error).cause;
      throw new Error(`cannot reach ${url}: ${cause instanceof Error ? cause.message : (err as Error).message}`, { cause: err });
    }
    const body = (await res.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
    if (!res.ok) throw new Error(`${url} answered ${res.status}: ${body?.error?.message ?? res.statusText}`);
    return body as T;
  };
}

export const field = (o: unknown, camel: string): unknown => {
  const r = o as Record<string, unknown>;
  return r[camel] ?? r[camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)];
};
export const when = (v: unknown) => (v ? new Date(v as string).toISOString().replace(/\.\d+Z$/, 'Z') : '-');
