/**
 * The service transport against real SMTP servers on loopback (smtp-server, with a private CA and
 * a server certificate made for the test): STARTTLS with the service's own CA, implicit TLS,
 * requireTLS against a server without STARTTLS, each AUTH method, the EHLO name. What a failure
 * means for the message is checked here too (classifySendError on the real error); what the
 * scheduler does with it is in scheduler-tls.test.ts.
 */
import type { TransportConfig } from '../models/index.js';
import { classifySendError } from '../services/delivery/classify.js';
import { createServiceTransport } from '../services/delivery/transport.js';
import { makeTestPki, startTlsSmtp, type TestPki, type TlsSmtp } from './helpers/tls.js';

let pki: TestPki;
const servers: TlsSmtp[] = [];
beforeAll(() => {
  pki = makeTestPki();
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function server(opts: Omit<Parameters<typeof startTlsSmtp>[0], 'pki'> = {}): Promise<TlsSmtp> {
  const s = await startTlsSmtp({ pki, ...opts });
  servers.push(s);
  return s;
}

/** Sends one message through a service transport built from `t`; resolves to the error, or null when sent. */
async function send(t: TransportConfig): Promise<Error | null> {
  const transport = createServiceTransport({ timeoutMs: 5000, ...t }, 1, null);
  try {
    await transport.sendMail({ from: 'sender@example.test', to: 'rcpt@example.test', subject: 'tls', text: 'hello' });
    return null;
  } catch (err) {
    return err as Error;
  } finally {
    transport.close();
  }
}

describe('STARTTLS', () => {
  it('delivers over STARTTLS to a server whose certificate a private CA signed, when the service trusts that CA', async () => {
    const s = await server();
    // Checked against the name in the certificate (SNI and verification), while connecting to 127.0.0.1.
    const err = await send({ host: '127.0.0.1', port: s.port, tls: { ca: pki.ca, servername: 'mail.test' } });
    expect(err).toBeNull();
    expect(s.accepted).toBe(1);
    expect(s.mailFrom).toEqual([{ address: 'sender@example.test', secure: true }]);
  });

  it('refuses the same server without the CA: a TLS failure that never reached the server', async () => {
    const s = await server();
    const err = await send({ host: '127.0.0.1', port: s.port });
    expect(err).not.toBeNull();
    expect(s.mailFrom).toEqual([]);
    expect(classifySendError(err)).toEqual({
      kind: 'connection',
      serviceFault: true,
      bounce: false,
      type: 'tls',
      message: 'TLS: unable to verify the first certificate',
    });
  });

  it("reads the same on Node 22 and 24: Node 24's --use-system-ca hint is dropped from the message", () => {
    const err = Object.assign(
      new Error('unable to verify the first certificate; if the root CA is installed locally, try running Node.js with --use-system-ca'),
      { code: 'ETLS' },
    );
    expect(classifySendError(err).message).toBe('TLS: unable to verify the first certificate');
  });

  it('refuses a certificate that does not name the server, even from the trusted CA', async () => {
    const s = await server();
    const err = await send({ host: '127.0.0.1', port: s.port, tls: { ca: pki.ca, servername: 'other.test' } });
    expect(s.mailFrom).toEqual([]);
    expect(classifySendError(err)).toMatchObject({ kind: 'connection', type: 'tls' });
    expect(err!.message).toMatch(/other\.test/);
  });

  it('delivers without the CA when certificate checking is off (tls.rejectUnauthorized false, or tlsInsecure)', async () => {
    const s = await server();
    expect(await send({ host: '127.0.0.1', port: s.port, tls: { rejectUnauthorized: false } })).toBeNull();
    expect(await send({ host: '127.0.0.1', port: s.port, tlsInsecure: true })).toBeNull();
    expect(s.mailFrom.map((m) => m.secure)).toEqual([true, true]);
  });

  it('refuses a server below tls.minVersion before anything is sent', async () => {
    const s = await server({ maxTlsVersion: 'TLSv1.2' });
    const err = await send({ host: '127.0.0.1', port: s.port, tls: { ca: pki.ca, minVersion: 'TLSv1.3' } });
    expect(classifySendError(err)).toMatchObject({ kind: 'connection', type: 'tls' });
    expect(s.mailFrom).toEqual([]);
    expect(await send({ host: '127.0.0.1', port: s.port, tls: { ca: pki.ca, minVersion: 'TLSv1.2' } })).toBeNull();
    expect(s.accepted).toBe(1);
  });
});

describe('requireTLS', () => {
  it('sends nothing in clear to a server that offers no STARTTLS: not the password, not the message', async () => {
    const s = await server({ noStartTls: true, authMethods: ['PLAIN', 'LOGIN'], credentials: { user: 'mailer', secret: 'pw' } });
    const err = await send({ host: '127.0.0.1', port: s.port, requireTLS: true, auth: { user: 'mailer', pass: 'pw' } });
    expect(err).not.toBeNull();
    expect(s.authAttempts).toEqual([]);
    expect(s.mailFrom).toEqual([]);
    expect(s.accepted).toBe(0);
    // The server's 500 to STARTTLS is about the connection, not the message: not a permanent failure.
    expect(classifySendError(err)).toMatchObject({ kind: 'connection', type: 'tls' });
  });

  it('without requireTLS the same server gets the message in clear (what requireTLS prevents)', async () => {
    const s = await server({ noStartTls: true });
    expect(await send({ host: '127.0.0.1', port: s.port, requireTLS: false })).toBeNull();
    expect(s.mailFrom).toEqual([{ address: 'sender@example.test', secure: false }]);
  });

  it('upgrades with STARTTLS when the server offers it', async () => {
    const s = await server();
    expect(await send({ host: '127.0.0.1', port: s.port, requireTLS: true, tls: { ca: pki.ca } })).toBeNull();
    expect(s.mailFrom).toEqual([{ address: 'sender@example.test', secure: true }]);
  });
});

describe('implicit TLS', () => {
  it('delivers over TLS from the first byte on a second port, trusting the private CA', async () => {
    const starttls = await server();
    const implicit = await server({ secure: true });
    expect(implicit.port).not.toBe(starttls.port);
    expect(await send({ host: '127.0.0.1', port: implicit.port, secure: true, tls: { ca: pki.ca } })).toBeNull();
    expect(implicit.mailFrom).toEqual([{ address: 'sender@example.test', secure: true }]);
    expect(starttls.mailFrom).toEqual([]);
  });

  it('refuses it without the CA, and a clear-text port spoken to with TLS, as TLS failures', async () => {
    const implicit = await server({ secure: true });
    const untrusted = await send({ host: '127.0.0.1', port: implicit.port, secure: true });
    expect(classifySendError(untrusted)).toMatchObject({ kind: 'connection', type: 'tls' });
    const plain = await server({ noStartTls: true });
    const wrong = await send({ host: '127.0.0.1', port: plain.port, secure: true, tls: { ca: pki.ca } });
    expect(classifySendError(wrong)).toMatchObject({ kind: 'connection', type: 'tls' });
    expect(implicit.mailFrom).toEqual([]);
    expect(plain.mailFrom).toEqual([]);
  });
});

describe('SMTP AUTH', () => {
  const credentials = { user: 'mailer@example.test', secret: 'n0t-a-real-secret' };
  const base = () => ({ host: '127.0.0.1', tls: { ca: pki.ca } });

  it.each(['PLAIN', 'LOGIN'] as const)('authenticates with %s against a server that requires it', async (method) => {
    const s = await server({ authMethods: [method], credentials });
    expect(await send({ ...base(), port: s.port, auth: { user: credentials.user, pass: credentials.secret, method } })).toBeNull();
    expect(s.authAttempts).toEqual([{ method, secure: true }]);
    expect(s.sessions).toEqual([{ ehlo: expect.any(String), secure: true, auth: { method, user: credentials.user } }]);
  });

  it('authenticates with XOAUTH2 and a given access token against a server that requires it', async () => {
    const s = await server({ authMethods: ['XOAUTH2'], credentials });
    const err = await send({
      ...base(),
      port: s.port,
      auth: { user: credentials.user, accessToken: credentials.secret, method: 'XOAUTH2' },
    });
    expect(err).toBeNull();
    expect(s.authAttempts).toEqual([{ method: 'XOAUTH2', secure: true }]);
    expect(s.sessions[0]!.auth).toEqual({ method: 'XOAUTH2', user: credentials.user });
  });

  it('refuses a wrong secret for each method without sending the message (an auth failure, not a send)', async () => {
    for (const method of ['PLAIN', 'LOGIN', 'XOAUTH2'] as const) {
      const s = await server({ authMethods: [method], credentials });
      const auth =
        method === 'XOAUTH2' ? { user: credentials.user, accessToken: 'wrong', method } : { user: credentials.user, pass: 'wrong', method };
      const err = await send({ ...base(), port: s.port, auth });
      expect(classifySendError(err)).toMatchObject({ kind: 'connection', type: 'auth' });
      expect(s.authAttempts.map((a) => a.method)).toContain(method);
      expect(s.mailFrom).toEqual([]);
    }
  });

  it('with no method given, uses one the server offers', async () => {
    const s = await server({ authMethods: ['LOGIN'], credentials });
    expect(await send({ ...base(), port: s.port, auth: { user: credentials.user, pass: credentials.secret } })).toBeNull();
    expect(s.authAttempts).toEqual([{ method: 'LOGIN', secure: true }]);
  });
});

describe('EHLO name', () => {
  it('is the service’s `name` when set', async () => {
    const s = await server();
    expect(await send({ host: '127.0.0.1', port: s.port, tls: { ca: pki.ca }, name: 'mta1.sender.example' })).toBeNull();
    expect(s.sessions.map((x) => x.ehlo)).toEqual(['mta1.sender.example']);
  });
});
