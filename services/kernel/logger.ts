import { pino, type Logger } from 'pino';
import { build as prettyStream } from 'pino-pretty';

export type { Logger };

/** LOG_FORMAT: `auto` is readable text on a terminal and JSON lines everywhere else (files, pipes, log shippers). */
export type LogFormat = 'auto' | 'pretty' | 'json';

/**
 * Paths pino replaces with "[redacted]" wherever they appear in a log record:
 * SMTP credentials, API tokens, database URLs with passwords.
 */
export const REDACT_PATHS = [
  'password',
  'pass',
  '*.password',
  '*.pass',
  '*.auth.pass',
  '*.*.auth.pass',
  'auth.pass',
  'transport.auth',
  '*.transport.auth',
  'token',
  '*.token',
  'apiToken',
  '*.apiToken',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'databaseUrl',
  '*.databaseUrl',
  'dkim.privateKey',
  '*.dkim.privateKey',
  'secretKey',
  '*.secretKey',
  'secretKeyPrevious',
  '*.secretKeyPrevious',
  'bounceImapUrl',
  '*.bounceImapUrl',
  'accessToken',
  '*.accessToken',
  '*.auth.accessToken',
  '*.*.auth.accessToken',
  'transport.tls.ca',
  '*.transport.tls.ca',
  'tls.ca',
  '*.tls.ca',
];

type Destination = NodeJS.WritableStream | pino.DestinationStream;

/** Whether `format` means readable text for this destination (stdout when none is given). */
export function isPretty(format: LogFormat, destination?: Destination): boolean {
  if (format !== 'auto') return format === 'pretty';
  const target = (destination ?? process.stdout) as { isTTY?: boolean };
  return target.isTTY === true;
}

/**
 * A pino logger at `level` writing to `destination` (stdout when none): JSON lines, or with
 * `format` pretty (or auto on a terminal) one readable line per record: time, level name,
 * message, then the record's fields as compact JSON.
 *
 * The pretty stream runs in this thread and writes synchronously (pino-pretty's stream, not a
 * pino transport): a transport's worker thread would have to be flushed and closed at every exit,
 * Ctrl-C and `process.exit` included, or the last lines ("stopped") are lost. A person at a
 * terminal writes little enough that the synchronous write costs nothing that matters.
 */
export function createLogger(level: string, destination?: Destination, format: LogFormat = 'json'): Logger {
  const options = {
    level,
    base: { app: 'fairsend' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  if (isPretty(format, destination)) {
    const pretty = prettyStream({
      destination: (destination as NodeJS.WritableStream | undefined) ?? 1,
      sync: true,
      singleLine: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,app',
      colorize: isPretty('auto', destination), // colours for a terminal only, not for a file forced to pretty
    });
    return pino(options, pretty);
  }
  return destination ? pino(options, destination as pino.DestinationStream) : pino(options);
}

/**
 * `logger` with `component` bound, once: a logger that already carries the same component is
 * returned as it is. pino does not merge bindings, so binding a key twice writes it twice in
 * every line (`"component":"maintenance","component":"maintenance"`), which is invalid for
 * many log shippers.
 */
export function componentLogger(logger: Logger, component: string): Logger {
  return logger.bindings().component === component ? logger : logger.child({ component });
}

/** Replaces the password of a connection string, for messages a person reads. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = 'redacted';
    return u.toString();
  } catch {
    return '[unparseable url]';
  }
}
