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
 *
 * TLS failures happen before the first MAIL command, so the message never reached the server
 * (`connection`, type `tls`), measured against smtp-server with a private CA:
 *
 *   untrusted certificate   -> ESOCKET, originalCode UNABLE_TO_VERIFY_LEAF_SIGNATURE (and the
 *                              other certificate verification codes), command 'CONN', both for
 *                              STARTTLS and for implicit TLS
 *   name not in certificate -> ESOCKET, originalCode ERR_TLS_CERT_ALTNAME_INVALID
 *   no common TLS version   -> ESOCKET, originalCode ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION
 *   implicit TLS to a clear port -> ESOCKET, originalCode ERR_SSL_WRONG_VERSION_NUMBER
 *   requireTLS, no STARTTLS -> ETLS, responseCode 500 (the server's reply to STARTTLS), command
 *                              'STARTTLS': checked before the reply code, or it would read as a
 *                              permanent refusal of the message
 *   handshake cut           -> ETLS, 'Connection closed unexpectedly' while upgrading
 *
 * A held send (delivery/held-send.ts) that fails before its release never had its end of data
 * sent, so the server cannot have accepted it: `unreleased` reads as `connection` (type
 * `unreleased`, or `worker_unreleased` when its thread died) when no reply code says more.
 *
 * A refused login (EAUTH, responseCode 535 for PLAIN, LOGIN and XOAUTH2) is `connection` too, type
 * `auth`: the credentials were refused before MAIL, not the message.
 *
 * Only codes that a handshake can raise count (HANDSHAKE_CODES): a TLS record error in the middle
 * of a session stays `ambiguous`.
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
  /**
   * The failure says something is wrong with the sending service, not with this message: it counts
   * towards the service's consecutive failures (unhealthy after UNHEALTHY_AFTER in a row). True for
   * `connection` and `ambiguous` (the server could not be reached, or dropped us), and for a
   * transient refusal with reply code 421 (RFC 5321: "service not available, closing transmission
   * channel": the server is shutting the session, whatever the message). A 4xx or 5xx about the
   * message itself (mailbox full, no such user) is not the service's fault.
   */
  serviceFault: boolean;
  /** 550-class "no such user" on a recipient: the contact bounced. */
  bounce: boolean;
  /** Stable label for error_logs, e.g. `smtp_550`, `connection`, `ambiguous`. */
  type: string;
  message: string;
}

interface SmtpLikeError {
  code?: string;
  /** A held send (held-send.ts) that failed before its release: the server never had its end. */
  unreleased?: boolean;
  /** The system or TLS error code nodemailer replaced with its own (ESOCKET ...). */
  originalCode?: string;
  responseCode?: number;
  command?: string;
  message?: string;
  response?: string;
}

const CONNECT_FAILURE = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|Greeting never received|getaddrinfo/i;
const NO_SUCH_USER = new Set([550, 551, 553]);

/** Node's codes for a failed certificate check or TLS negotiation: raised by the handshake only. */
const HANDSHAKE_CODES = new Set([
  // OpenSSL's certificate verification results, as Node names them
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  // negotiation: no common version, cipher or key the other side accepts
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_UNSUPPORTED_PROTOCOL',
  'ERR_SSL_NO_PROTOCOLS_AVAILABLE',
  'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
  'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE',
  'ERR_SSL_NO_SHARED_CIPHER',
  'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
  'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
  'ERR_SSL_TLSV1_ALERT_INSUFFICIENT_SECURITY',
  'ERR_SSL_DH_KEY_TOO_SMALL',
  'ERR_SSL_EE_KEY_TOO_SMALL',
  'ERR_SSL_CA_KEY_TOO_SMALL',
  'ERR_SSL_CA_MD_TOO_WEAK',
]);

/** A failure to set up TLS (before any message data): see the table above. */
export function isTlsFailure(e: { code?: string; originalCode?: string; message?: string }): boolean {
  if (e.code === 'ETLS') return true;
  if (e.originalCode && HANDSHAKE_CODES.has(e.originalCode)) return true;
  // requireTLS against a server whose EHLO fails: nodemailer refuses to fall back to HELO.
  return e.code === 'ECONNECTION' && /does not support required STARTTLS/.test(e.message ?? '');
}

/**
 * Node.js 24 appends this to certificate errors. fairsend drops it: the remedy here is the
 * service's `tls.ca` (or NODE_EXTRA_CA_CERTS), and the same failure reads the same on Node 22 and 24
 * (in a service's last error, a campaign's wait reason, the error log).
 */
const NODE_SYSTEM_CA_HINT = /; if the root CA is installed locally, try running Node\.js with --use-system-ca$/;

/** `TLS: unable to verify the first certificate`, `TLS: the server refused STARTTLS: 500 ...`. */
function tlsMessage(e: SmtpLikeError): string {
  const text =
    e.code === 'ETLS' && e.command === 'STARTTLS' && e.response
      ? `the server refused STARTTLS: ${e.response}`
      : (e.message ?? '').replace(NODE_SYSTEM_CA_HINT, '');
  return `TLS: ${text}`.slice(0, 500);
}

export function classifySendError(err: unknown): Classified {
  const e = (err ?? {}) as SmtpLikeError;
  const message = (e.response ?? e.message ?? String(err)).slice(0, 500);
  const code = e.responseCode;
  // A send worker thread died with the send under way (worker-transport.ts): the message may have
  // reached the server, and the fault is the engine's, not the service's.
  // A held send whose end had not been released was not: the server cannot accept a message
  // before its end of data (RFC 5321, 4.1.1.4).
  if (e.code === 'EWORKER')
    return e.unreleased === true
      ? { kind: 'connection', serviceFault: false, bounce: false, type: 'worker_unreleased', message }
      : { kind: 'ambiguous', serviceFault: false, bounce: false, type: 'ambiguous_worker', message };
  // No send worker thread could take it (one keeps dying as it starts): never sent.
  if (e.code === 'EWORKERDOWN') return { kind: 'connection', serviceFault: true, bounce: false, type: 'worker_down', message };
  if (isTlsFailure(e)) return { kind: 'connection', serviceFault: true, bounce: false, type: 'tls', message: tlsMessage(e) };
  // Before the reply code too: a refused login (535) refuses the service's credentials, not the message.
  if (e.code === 'EAUTH') return { kind: 'connection', serviceFault: true, bounce: false, type: 'auth', message };
  if (typeof code === 'number' && code >= 500) {
    return {
      kind: 'permanent',
      serviceFault: false,
      bounce: e.command === 'RCPT TO' && NO_SUCH_USER.has(code),
      type: `smtp_${code}`,
      message,
    };
  }
  if (typeof code === 'number' && code >= 400)
    return { kind: 'transient', serviceFault: code === 421, bounce: false, type: `smtp_${code}`, message };
  if (
    (e.code === 'ESOCKET' || e.code === 'ECONNECTION' || e.code === 'EDNS' || e.code === 'ETIMEDOUT') &&
    CONNECT_FAILURE.test(e.message ?? '')
  ) {
    return { kind: 'connection', serviceFault: true, bounce: false, type: 'connection', message };
  }
  // Lost while held (the connection dropped or timed out before the release): never delivered.
  if (e.unreleased === true) return { kind: 'connection', serviceFault: true, bounce: false, type: 'unreleased', message };
  return {
    kind: 'ambiguous',
    serviceFault: true,
    bounce: false,
    type: e.code ? `ambiguous_${e.code.toLowerCase()}` : 'ambiguous',
    message,
  };
}
