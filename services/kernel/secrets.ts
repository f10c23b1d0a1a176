/**
 * Secrets at rest: AES-256-GCM through node:crypto, one 32-byte key from FAIRSEND_SECRET_KEY.
 *
 * A sealed value is one string, `fsenc:v1:<key id>:<iv>:<tag>:<ciphertext>` (base64url parts), so
 * it fits wherever the plain string stood (a JSONB field of a service row). The key id is derived
 * from the key (the first 8 hex digits of a SHA-256 of it), so no id has to be configured, and a
 * value names the key that can open it: after a rotation the previous keys
 * (FAIRSEND_SECRET_KEY_PREVIOUS) still open old values while every new one is sealed with the
 * current key. The additional authenticated data is the field's name (`transport.auth.pass`), so
 * a value copied into another field does not open.
 *
 * Any module that stores a secret (SMTP passwords, DKIM keys, TLS keys, webhook secrets) seals it
 * with `keyring.seal(plain, field)` and opens it with `keyring.open(sealed, field)` only where it
 * is used.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { ErrorCodes, FairsendError } from './errors.js';

const PREFIX = 'fsenc:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;

export type SecretErrorCode =
  typeof ErrorCodes.SECRET_KEY_MISSING | typeof ErrorCodes.SECRET_KEY_UNKNOWN | typeof ErrorCodes.SECRET_UNREADABLE;

/** A secret cannot be sealed or opened: no key, a key that is not configured, or a damaged value. */
export class SecretKeyError extends FairsendError {
  constructor(code: SecretErrorCode, message: string) {
    super(code, message);
    this.name = 'SecretKeyError';
  }
}

/** A new random key, as FAIRSEND_SECRET_KEY takes it (base64 of 32 bytes). */
export function generateSecretKey(): string {
  return randomBytes(32).toString('base64');
}

/** Decodes a key given as 64 hex digits or base64 of 32 bytes; undefined when it is neither. */
export function parseSecretKey(text: string): Buffer | undefined {
  const v = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(v)) return Buffer.from(v, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(v)) {
    const b = Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (b.length === 32) return b;
  }
  return undefined;
}

export function keyIdOf(key: Buffer): string {
  return createHash('sha256').update('fairsend-secret-key-id\0').update(key).digest('hex').slice(0, 8);
}

export function isSealed(value: unknown): value is string {
  return typeof value === 'string' && value.startsWith(PREFIX);
}

/** The key id a sealed value names (undefined for a plain value). */
export function sealedKeyId(value: unknown): string | undefined {
  return isSealed(value) ? value.slice(PREFIX.length).split(':')[0] : undefined;
}

export class Keyring {
  private readonly keys = new Map<string, Buffer>();
  /** Id of the key new values are sealed with; undefined when no key is configured. */
  readonly currentId: string | undefined;

  constructor(current: Buffer | undefined, previous: Buffer[] = []) {
    for (const k of [...(current ? [current] : []), ...previous]) {
      if (k.length !== 32) throw new Error('a secret key has 32 bytes');
      this.keys.set(keyIdOf(k), k);
    }
    this.currentId = current ? keyIdOf(current) : undefined;
  }

  /** From the text of FAIRSEND_SECRET_KEY and FAIRSEND_SECRET_KEY_PREVIOUS (comma-separated), already validated by config. */
  static fromConfig(current: string | undefined, previous: string | undefined): Keyring {
    const prev = (previous ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map((s) => parseSecretKey(s)!);
    return new Keyring(current ? parseSecretKey(current) : undefined, prev);
  }

  get hasKey(): boolean {
    return this.currentId !== undefined;
  }

  /** Can this keyring open a value sealed with `keyId`? */
  knows(keyId: string): boolean {
    return this.keys.has(keyId);
  }

  /** Seals `plain` for the field `field` with the current key. */
  seal(plain: string, field: string): string {
    if (!this.currentId) {
      throw new SecretKeyError(
        ErrorCodes.SECRET_KEY_MISSING,
        `cannot store ${field}: no FAIRSEND_SECRET_KEY is set, and fairsend stores no secret in plain text (generate one with \`fairsend secrets generate-key\`)`,
      );
    }
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.keys.get(this.currentId)!, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(field, 'utf8'));
    const ct = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    const b = (x: Buffer) => x.toString('base64url');
    return `${PREFIX}${this.currentId}:${b(iv)}:${b(cipher.getAuthTag())}:${b(ct)}`;
  }

  /** Opens a value sealed for `field`; a plain value (stored before encryption) is returned as it is. */
  open(value: string, field: string): string {
    if (!isSealed(value)) return value;
    const [kid, iv, tag, ct] = value.slice(PREFIX.length).split(':');
    const key = kid ? this.keys.get(kid) : undefined;
    if (!key) {
      throw new SecretKeyError(
        this.currentId ? ErrorCodes.SECRET_KEY_UNKNOWN : ErrorCodes.SECRET_KEY_MISSING,
        this.currentId
          ? `${field} is encrypted with key ${kid}, which is neither FAIRSEND_SECRET_KEY (${this.currentId}) nor in FAIRSEND_SECRET_KEY_PREVIOUS`
          : `${field} is encrypted (key ${kid}) and no FAIRSEND_SECRET_KEY is set`,
      );
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv ?? '', 'base64url'), { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(field, 'utf8'));
      decipher.setAuthTag(Buffer.from(tag ?? '', 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(ct ?? '', 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretKeyError(ErrorCodes.SECRET_UNREADABLE, `${field} does not decrypt with key ${kid}: the stored value is damaged`);
    }
  }
}
