/**
 * The secrets of a sending service row and of its provider webhooks, and the whole-table passes
 * over them.
 *
 * Which fields are secret is data (`SERVICE_SECRET_FIELDS`): the SMTP password, the DKIM private
 * key and the TLS material of the transport (a CA bundle may be one string or a list). A field
 * absent from a row is skipped, so a field listed before its feature exists costs nothing.
 *
 * Values are sealed when a service is written (services/sending-services.ts) and opened only
 * where its SMTP transport is built (services/delivery/transport.ts). Plain values stored before
 * encryption existed are sealed at engine start-up (`secureStoredSecrets`), not by a migration: a
 * migration also runs from sequelize-cli and other tools that do not hold FAIRSEND_SECRET_KEY,
 * and a migration that silently skipped without a key would leave the secrets plain while
 * recording itself as done. Start-up always has the key when there is one, and runs again after a
 * key is set later.
 */
import type { Sequelize } from 'sequelize';
import { queryRows } from './kernel/db-query.js';
import type { Logger } from './kernel/logger.js';
import { ErrorCodes } from './kernel/errors.js';
import { isSealed, sealedKeyId, SecretKeyError, type Keyring } from './kernel/secrets.js';

export interface SecretField {
  column: 'transport' | 'dkim';
  path: readonly string[];
}

/** Every secret a service row holds: the column, then the path inside its JSONB. */
export const SERVICE_SECRET_FIELDS: readonly SecretField[] = [
  { column: 'transport', path: ['auth', 'pass'] },
  { column: 'transport', path: ['auth', 'accessToken'] },
  { column: 'transport', path: ['tls', 'ca'] },
  { column: 'transport', path: ['tls', 'key'] },
  { column: 'transport', path: ['tls', 'pfx'] },
  { column: 'transport', path: ['tls', 'passphrase'] },
  { column: 'dkim', path: ['privateKey'] },
];

/** The name a field is sealed for (the additional authenticated data). */
export const fieldName = (f: SecretField): string => `${f.column}.${f.path.join('.')}`;

interface SecretColumns {
  transport: unknown;
  dkim: unknown;
}

/** A copy of `cols` with every secret string (or every string of a secret list) replaced by `fn`. */
export function mapServiceSecrets<T extends Partial<SecretColumns>>(cols: T, fn: (value: string, field: string) => string): T {
  const out = structuredClone(cols) as Record<string, unknown>;
  for (const f of SERVICE_SECRET_FIELDS) {
    let parent = out[f.column] as Record<string, unknown> | null | undefined;
    for (const p of f.path.slice(0, -1)) parent = parent && typeof parent === 'object' ? (parent[p] as Record<string, unknown>) : undefined;
    const last = f.path[f.path.length - 1]!;
    if (!parent || typeof parent !== 'object' || !(last in parent)) continue;
    const v = parent[last];
    const name = fieldName(f);
    if (typeof v === 'string') parent[last] = fn(v, name);
    else if (Array.isArray(v)) parent[last] = v.map((x: unknown) => (typeof x === 'string' ? fn(x, name) : x));
  }
  return out as T;
}

/** Every secret value of `cols`, with its field name. */
export function listServiceSecrets(cols: Partial<SecretColumns>): { field: string; value: string }[] {
  const found: { field: string; value: string }[] = [];
  mapServiceSecrets(cols, (value, field) => {
    found.push({ field, value });
    return value;
  });
  return found;
}

/** Seals every secret of a service's input with the current key (refused without a key). */
export function sealServiceSecrets<T extends Partial<SecretColumns>>(keyring: Keyring, cols: T): T {
  return mapServiceSecrets(cols, (v, field) => keyring.seal(v, field));
}

/** Opens every secret of a stored row; only the transport builder calls this. */
export function openServiceSecrets<T extends Partial<SecretColumns>>(keyring: Keyring, cols: T): T {
  return mapServiceSecrets(cols, (v, field) => keyring.open(v, field));
}

/**
 * The secret fields of a provider webhook's credentials (webhook_credentials.credentials): the
 * Mailgun signing key and the basic-auth password of Postmark and SparkPost. The SendGrid public
 * key, the user names and the SNS topics are not secrets and stay readable.
 */
export const WEBHOOK_SECRET_FIELDS = ['signingKey', 'password'] as const;

/** A copy of webhook credentials with every secret string replaced by `fn` (field name `webhook.<field>`). */
export function mapWebhookSecrets<T extends object>(credentials: T, fn: (value: string, field: string) => string): T {
  const out = { ...credentials } as Record<string, unknown>;
  for (const k of WEBHOOK_SECRET_FIELDS) {
    const v = out[k];
    if (typeof v === 'string') out[k] = fn(v, `webhook.${k}`);
  }
  return out as T;
}

/** Seals the secrets of webhook credentials with the current key (refused without a key). */
export function sealWebhookSecrets<T extends object>(keyring: Keyring, credentials: T): T {
  return mapWebhookSecrets(credentials, (v, field) => keyring.seal(v, field));
}

/** Opens the secrets of stored webhook credentials; only the webhook verifier calls this. */
export function openWebhookSecrets<T extends object>(keyring: Keyring, credentials: T): T {
  return mapWebhookSecrets(credentials, (v, field) => keyring.open(v, field));
}

function webhookSecretValues(credentials: unknown): string[] {
  const found: string[] = [];
  if (credentials && typeof credentials === 'object') {
    mapWebhookSecrets(credentials, (v) => {
      found.push(v);
      return v;
    });
  }
  return found;
}

interface StoredRow {
  id: number;
  transport: unknown;
  dkim: unknown;
}

interface StoredWebhookRow {
  service_id: number;
  provider: string;
  credentials: Record<string, unknown>;
}

/** What the tables hold (services and webhooks): plain secrets, and sealed ones by key id. */
export async function scanStoredSecrets(db: Sequelize): Promise<{ plain: number; sealed: Map<string, number> }> {
  const rows = await queryRows<StoredRow>(db, 'SELECT id, transport, dkim FROM email_services');
  const hooks = await queryRows<StoredWebhookRow>(db, 'SELECT service_id, provider, credentials FROM webhook_credentials');
  const sealed = new Map<string, number>();
  let plain = 0;
  const count = (value: string) => {
    const kid = sealedKeyId(value);
    if (kid === undefined) plain++;
    else sealed.set(kid, (sealed.get(kid) ?? 0) + 1);
  };
  for (const r of rows) for (const { value } of listServiceSecrets(r)) count(value);
  for (const h of hooks) for (const value of webhookSecretValues(h.credentials)) count(value);
  return { plain, sealed };
}

/**
 * Seals stored secrets with the current key in one transaction: `plain` seals only values still
 * in plain text (start-up); `all` also re-seals values of earlier keys (`fairsend secrets rotate`).
 * A value no configured key opens stops the pass and nothing is written.
 */
export async function resealStoredSecrets(
  db: Sequelize,
  keyring: Keyring,
  mode: 'plain' | 'all',
): Promise<{ services: number; webhooks: number; values: number }> {
  if (!keyring.hasKey) throw new SecretKeyError(ErrorCodes.SECRET_KEY_MISSING, 'no FAIRSEND_SECRET_KEY is set');
  return db.transaction(async (transaction) => {
    const rows = await queryRows<StoredRow>(db, 'SELECT id, transport, dkim FROM email_services ORDER BY id FOR UPDATE', {}, transaction);
    let services = 0;
    let webhooks = 0;
    let values = 0;
    let changed = 0;
    const reseal = (v: string, field: string) => {
      if (isSealed(v) && (mode === 'plain' || sealedKeyId(v) === keyring.currentId)) {
        keyring.open(v, field); // proves the value opens before anything is written
        return v;
      }
      changed++;
      return keyring.seal(keyring.open(v, field), field);
    };
    for (const r of rows) {
      changed = 0;
      const next = mapServiceSecrets({ transport: r.transport, dkim: r.dkim }, reseal);
      if (!changed) continue;
      await queryRows(
        db,
        'UPDATE email_services SET transport = $transport::jsonb, dkim = $dkim::jsonb WHERE id = $id',
        { id: r.id, transport: JSON.stringify(next.transport), dkim: next.dkim === null ? null : JSON.stringify(next.dkim) },
        transaction,
      );
      services++;
      values += changed;
    }
    const hooks = await queryRows<StoredWebhookRow>(
      db,
      'SELECT service_id, provider, credentials FROM webhook_credentials ORDER BY service_id, provider FOR UPDATE',
      {},
      transaction,
    );
    for (const h of hooks) {
      changed = 0;
      const next = mapWebhookSecrets(h.credentials, reseal);
      if (!changed) continue;
      await queryRows(
        db,
        `UPDATE webhook_credentials SET credentials = $credentials::jsonb, updated_at = now()
          WHERE service_id = $serviceId AND provider = $provider`,
        { serviceId: h.service_id, provider: h.provider, credentials: JSON.stringify(next) },
        transaction,
      );
      webhooks++;
      values += changed;
    }
    return { services, webhooks, values };
  });
}

/**
 * The start-up step: refuses to run when stored secrets are sealed with a key this engine does not
 * hold (a clear SecretKeyError instead of every send failing later), and seals plain ones when a
 * key is set. Without a key, plain secrets (from before encryption) are left as they are, with a
 * warning: refusing would lock out an upgrade; new secrets are refused until a key is set.
 */
export async function secureStoredSecrets(db: Sequelize, keyring: Keyring, logger: Logger): Promise<void> {
  const { plain, sealed } = await scanStoredSecrets(db);
  const unknown = [...sealed.entries()].filter(([kid]) => !keyring.knows(kid));
  if (unknown.length) {
    const n = unknown.reduce((s, [, c]) => s + c, 0);
    const ids = unknown.map(([kid]) => kid).join(', ');
    throw keyring.hasKey
      ? new SecretKeyError(
          ErrorCodes.SECRET_KEY_UNKNOWN,
          `${n} stored secret(s) are encrypted with key ${ids}, which is neither FAIRSEND_SECRET_KEY (${keyring.currentId}) nor in FAIRSEND_SECRET_KEY_PREVIOUS`,
        )
      : new SecretKeyError(
          ErrorCodes.SECRET_KEY_MISSING,
          `${n} stored secret(s) are encrypted (key ${ids}) and FAIRSEND_SECRET_KEY is not set: set it to the key they were encrypted with`,
        );
  }
  if (!plain) return;
  if (!keyring.hasKey) {
    logger.warn(
      { plainSecrets: plain },
      'stored secrets are in plain text: set FAIRSEND_SECRET_KEY and restart to encrypt them (new secrets are refused until then)',
    );
    return;
  }
  const r = await resealStoredSecrets(db, keyring, 'plain');
  if (r.values)
    logger.info({ services: r.services, webhooks: r.webhooks, secrets: r.values, keyId: keyring.currentId }, 'stored secrets encrypted');
}
