/**
 * delivery/classify.ts as pure code: what each SMTP failure means for the message and whether it
 * counts against the service (serviceFault; the 421 rule lives here, not in the scheduler).
 */
import { classifySendError } from '../services/delivery/classify.js';

describe('classifySendError', () => {
  it('a send lost with its worker thread is ambiguous, and not the service’s fault', () => {
    expect(classifySendError({ code: 'EWORKER', message: 'send worker thread 0 exited (code 70)' })).toEqual({
      kind: 'ambiguous',
      serviceFault: false,
      bounce: false,
      type: 'ambiguous_worker',
      message: 'send worker thread 0 exited (code 70)',
    });
  });

  it('a held send that failed before its release was never delivered: connection, unless a reply code says more', () => {
    const lost = { code: 'ECONNECTION', message: 'Connection closed unexpectedly', command: 'CONN' };
    // Without the flag, the same failure may have reached the server.
    expect(classifySendError(lost).kind).toBe('ambiguous');
    expect(classifySendError({ ...lost, unreleased: true })).toEqual({
      kind: 'connection',
      serviceFault: true,
      bounce: false,
      type: 'unreleased',
      message: 'Connection closed unexpectedly',
    });
    expect(classifySendError({ code: 'EWORKER', message: 'thread died', unreleased: true })).toMatchObject({
      kind: 'connection',
      serviceFault: false,
      type: 'worker_unreleased',
    });
    // The envelope refused before the hold: the reply decides.
    expect(
      classifySendError({ code: 'EENVELOPE', responseCode: 550, command: 'RCPT TO', response: '550 no such user', unreleased: true }),
    ).toMatchObject({ kind: 'permanent', bounce: true });
    expect(
      classifySendError({ code: 'EENVELOPE', responseCode: 451, command: 'RCPT TO', response: '451 later', unreleased: true }),
    ).toMatchObject({
      kind: 'transient',
    });
  });

  it('a 5xx at RCPT for a missing mailbox is permanent and a bounce, and not the service’s fault', () => {
    expect(classifySendError({ code: 'EENVELOPE', responseCode: 550, command: 'RCPT TO', response: '550 no such user' })).toEqual({
      kind: 'permanent',
      serviceFault: false,
      bounce: true,
      type: 'smtp_550',
      message: '550 no such user',
    });
    expect(classifySendError({ code: 'EMESSAGE', responseCode: 554, command: 'DATA', response: '554 spam' })).toMatchObject({
      kind: 'permanent',
      bounce: false,
      serviceFault: false,
    });
  });

  it('a 4xx is transient; only 421 (the server closing the channel) is the service’s fault', () => {
    expect(classifySendError({ code: 'EENVELOPE', responseCode: 451, command: 'RCPT TO', response: '451 later' })).toMatchObject({
      kind: 'transient',
      serviceFault: false,
      type: 'smtp_451',
    });
    expect(classifySendError({ code: 'EMESSAGE', responseCode: 452, command: 'DATA', response: '452 mailbox full' })).toMatchObject({
      kind: 'transient',
      serviceFault: false,
    });
    expect(classifySendError({ code: 'ECONNECTION', responseCode: 421, response: '421 shutting down' })).toMatchObject({
      kind: 'transient',
      serviceFault: true,
      type: 'smtp_421',
    });
  });

  it('a refused connect never reached the server; a drop without a reply code is ambiguous; both are the service’s fault', () => {
    expect(classifySendError({ code: 'ESOCKET', command: 'CONN', message: 'connect ECONNREFUSED 127.0.0.1:1' })).toMatchObject({
      kind: 'connection',
      serviceFault: true,
      type: 'connection',
    });
    expect(classifySendError({ code: 'ECONNECTION', command: 'CONN', message: 'Connection closed unexpectedly' })).toMatchObject({
      kind: 'ambiguous',
      serviceFault: true,
      type: 'ambiguous_econnection',
    });
    expect(classifySendError(new Error('boom'))).toMatchObject({ kind: 'ambiguous', type: 'ambiguous' });
  });

  it('TLS and login failures happen before MAIL: connection failures, checked before the reply code', () => {
    expect(classifySendError({ code: 'ETLS', command: 'STARTTLS', responseCode: 500, response: '500 no', message: 'x' })).toMatchObject({
      kind: 'connection',
      type: 'tls',
      message: 'TLS: the server refused STARTTLS: 500 no',
    });
    expect(classifySendError({ code: 'EAUTH', responseCode: 535, response: '535 bad credentials' })).toMatchObject({
      kind: 'connection',
      type: 'auth',
      serviceFault: true,
    });
  });
});
