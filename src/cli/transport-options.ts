/**
 * The SMTP options of `fairsend services add`: host and port, TLS (implicit, STARTTLS required or
 * not, a private CA read from a file, SNI name, lowest version, certificate checking), the EHLO
 * name and AUTH. Secrets never come from the command line (it shows in `ps` and shell history):
 * the password or the XOAUTH2 access token is read from an environment variable, the CA from a file.
 */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import type { TransportConfig } from '../../models/index.js';
import { TLS_MODE_LABEL } from '../../services/delivery/tls-policy.js';
import type { TransportView } from '../../services/sending-services.js';

export interface TransportFlags {
  host: string;
  port: number;
  secure?: boolean;
  requireTls?: boolean;
  tlsCaFile?: string;
  tlsServername?: string;
  tlsMinVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  tlsInsecure?: boolean;
  ehloName?: string;
  smtpUser?: string;
  smtpAuthMethod?: 'PLAIN' | 'LOGIN' | 'XOAUTH2';
  smtpPassEnv: string;
}

/** Adds the TLS, EHLO and AUTH flags (host, port and --secure stay with the command). */
export function addTransportFlags(cmd: Command): Command {
  return cmd
    .option('--require-tls', 'refuse to send unless the server takes STARTTLS (the default on port 587)')
    .option('--no-require-tls', 'use STARTTLS only when the server offers it (opportunistic), even on port 587')
    .option('--tls-ca-file <path>', "PEM file of the CA this service trusts instead of the system's (a private CA)")
    .option('--tls-servername <name>', 'name to check the certificate against and send as SNI (default: the host)')
    .addOption(new Option('--tls-min-version <version>', 'lowest TLS version accepted').choices(['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']))
    .option('--tls-insecure', 'do not check the server certificate (local relays only)')
    .option('--ehlo-name <name>', 'name given in EHLO (default: this machine’s host name)')
    .option('--smtp-user <user>', 'SMTP user name')
    .addOption(
      new Option('--smtp-auth-method <method>', 'AUTH method (default: the first the server offers)').choices([
        'PLAIN',
        'LOGIN',
        'XOAUTH2',
      ]),
    )
    .option(
      '--smtp-pass-env <variable>',
      'environment variable holding the SMTP password (or the access token for XOAUTH2)',
      'FAIRSEND_SMTP_PASS',
    );
}

/** The transport input for engine.services.create, from the flags, the environment and the CA file. */
export async function transportFromFlags(o: TransportFlags, env: NodeJS.ProcessEnv): Promise<TransportConfig> {
  const secret = o.smtpUser ? env[o.smtpPassEnv] : undefined;
  const what = o.smtpAuthMethod === 'XOAUTH2' ? 'access token' : 'password';
  if (o.smtpUser && secret === undefined) throw new Error(`--smtp-user needs the ${what} in the environment variable ${o.smtpPassEnv}`);
  if (o.smtpAuthMethod && !o.smtpUser) throw new Error('--smtp-auth-method needs --smtp-user');
  let ca: string | undefined;
  if (o.tlsCaFile) {
    try {
      ca = await readFile(o.tlsCaFile, 'utf8');
    } catch (err) {
      throw new Error(`cannot read --tls-ca-file ${o.tlsCaFile}: ${(err as Error).message}`, { cause: err });
    }
  }
  const tls = {
    ...(ca !== undefined ? { ca } : {}),
    ...(o.tlsServername ? { servername: o.tlsServername } : {}),
    ...(o.tlsMinVersion ? { minVersion: o.tlsMinVersion } : {}),
  };
  const auth = o.smtpUser
    ? o.smtpAuthMethod === 'XOAUTH2'
      ? { user: o.smtpUser, accessToken: secret!, method: 'XOAUTH2' as const }
      : { user: o.smtpUser, pass: secret!, ...(o.smtpAuthMethod ? { method: o.smtpAuthMethod } : {}) }
    : undefined;
  return {
    host: o.host,
    port: o.port,
    ...(o.secure ? { secure: true } : {}),
    ...(o.requireTls !== undefined ? { requireTLS: o.requireTls } : {}),
    ...(o.tlsInsecure ? { tlsInsecure: true } : {}),
    ...(Object.keys(tls).length ? { tls } : {}),
    ...(o.ehloName ? { name: o.ehloName } : {}),
    ...(auth ? { auth } : {}),
  };
}

/** Table cells: the TLS mode, and whether certificates are checked. */
export function tlsCells(t: Pick<TransportView, 'tlsMode' | 'certificateChecking'>): [string, string] {
  return [TLS_MODE_LABEL[t.tlsMode], t.certificateChecking ? 'checked' : 'NOT CHECKED'];
}
