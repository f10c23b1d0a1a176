/**
 * What an SMTP failure means for the message, from nodemailer's error (code, responseCode,
 * command). Measured against smtp-server on loopback:
 *
 *   550 at RCPT        -> EENVELOPE, responseCode 550, command 'RCPT TO'
 *   451 at RCPT        -> EENVELOPE, responseCode 451, command 'RCPT TO'
 *   451 / 554 at DATA  -> EMESSAGE,  responseCode 451 / 554, command 'DATA'
 *   refused connect    -> ESOCKET,   'connect ECONNREFUSED ...', command 'CONN'
 *   dropped after DATA -> ECONNECTION, 'Connection closed unexpectedly', command 'CONN'
 *   reply too slow     -> ETIMEDOUT, command 'CONN'
 *   421 then hang-up   -> ECONNECTION, responseCode 421; or, when the pooled connection's close
 *                         wins the race, ECONNECTION 'Reached maximum number of retries after
 *                         connection was closed' (the transport never resends by itself)
 *
 * The last two cannot be told apart from a drop before DATA, so any failure without a reply code
 * that is not a failed connect is `ambiguous`: the message may have been accepted.
 */
export type FailureKind =
  /** The server refused it for good (5xx): do not retry. */
  | 'permanent'
  /** The server refused it for now (4xx): retry with backoff. */
  | 'transient'
  /** Never reached the server (refused connect, DNS, greeting timeout): definitely not sent. */
  | 'connection'
  /** The outcome is unknown: the server may have accepted it. */
  | 'ambiguous';

export interface Classified {
  kind: FailureKind;
  /** 550-class "no such user" on a recipient: the contact bounced. */
  bounce: boolean;
  /** Stable label for error_logs, e.g. `smtp_550`, `connection`, `ambiguous`. */
  type: string;
  message: string;
}

interface SmtpLikeError {
  code?: string;
  responseCode?: number;
  command?: string;
  message?: string;
  response?: string;
}

const CONNECT_FAILURE = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|Greeting never received|getaddrinfo/i;
const NO_SUCH_USER = new Set([550, 551, 553]);

export function classifySendError(err: unknown): Classified {
  const e = (err ?? {}) as SmtpLikeError;
  const message = (e.response ?? e.message ?? String(err)).slice(0, 500);
  const code = e.responseCode;
  if (typeof code === 'number' && code >= 500) {
    return { kind: 'permanent', bounce: e.command === 'RCPT TO' && NO_SUCH_USER.has(code), type: `smtp_${code}`, message };
  }
  if (typeof code === 'number' && code >= 400) return { kind: 'transient', bounce: false, type: `smtp_${code}`, message };
  if (e.code === 'EAUTH') return { kind: 'connection', bounce: false, type: 'auth', message };
  if (
    (e.code === 'ESOCKET' || e.code === 'ECONNECTION' || e.code === 'EDNS' || e.code === 'ETIMEDOUT') &&
    CONNECT_FAILURE.test(e.message ?? '')
  ) {
    return { kind: 'connection', bounce: false, type: 'connection', message };
  }
  return { kind: 'ambiguous', bounce: false, type: e.code ? `ambiguous_${e.code.toLowerCase()}` : 'ambiguous', message };
}
