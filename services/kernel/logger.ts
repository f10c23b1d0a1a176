import { pino, type Logger } from 'pino';

export type { Logger };

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

export function createLogger(level: string, destination?: NodeJS.WritableStream | pino.DestinationStream): Logger {
  const options = {
    level,
    base: { app: 'fairsend' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  return destination ? pino(options, destination as pino.DestinationStream) : pino(options);
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
