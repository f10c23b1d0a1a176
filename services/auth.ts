/**
 * API tokens: one per user, stored hashed in users.api_token_hash, shown in plain text once.
 *
 * A token is `fst_` + 32 random bytes in base64url (256 bits). It is hashed with a single SHA-256,
 * not a slow password hash (bcrypt, scrypt, argon2): slow hashes exist to make guessing a
 * low-entropy password expensive, and there is nothing to guess in 256 random bits; a leaked hash
 * cannot be reversed either way. A fast hash also lets every request find its user with one
 * indexed equality lookup (the column is UNIQUE) instead of a per-request KDF costing tens of
 * milliseconds of CPU, which would itself be a denial-of-service lever.
 *
 * Rotating a token replaces the hash, so the previous token stops working at once.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Sequelize } from 'sequelize';
import { NotFoundError } from './kernel/errors.js';
import type { UserRole } from '../models/index.js';
import { parseId } from './validation.js';

/** What auth needs of the engine: the API pool. */
export type AuthDeps = { apiDb: Sequelize };

export interface AuthenticatedUser {
  id: number;
  name: string;
  email: string;
  role: UserRole;
}

export const TOKEN_PREFIX = 'fst_';
const TOKEN_RE = /^fst_[A-Za-z0-9_-]{43}$/;

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A new random token (not stored). */
export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/**
 * Gives the user a new API token and returns it in plain text: the only time it is visible.
 * Any previous token of the user stops working (this is also `rotateToken`).
 */
export async function createToken(engine: AuthDeps, userId: number): Promise<string> {
  const id = parseId(userId, 'userId');
  const token = generateToken();
  const [rows] = (await engine.apiDb.query('UPDATE users SET api_token_hash = $hash, updated_at = now() WHERE id = $id RETURNING id', {
    bind: { id, hash: hashToken(token) },
  })) as [unknown[], unknown];
  if (!rows.length) throw new NotFoundError('user', id);
  return token;
}

/** Replaces the user's token; the old one is refused from now on. */
export const rotateToken = createToken;

/** Removes the user's token: the user can no longer use the API until given a new one. */
export async function revokeToken(engine: AuthDeps, userId: number): Promise<void> {
  await engine.apiDb.query('UPDATE users SET api_token_hash = NULL, updated_at = now() WHERE id = $id', {
    bind: { id: parseId(userId, 'userId') },
  });
}

/** The user a token belongs to, or undefined for a malformed, unknown or revoked token. */
export async function authenticate(engine: AuthDeps, token: string | undefined | null): Promise<AuthenticatedUser | undefined> {
  // Malformed tokens are refused without a query.
  if (!token || !TOKEN_RE.test(token)) return undefined;
  const [rows] = (await engine.apiDb.query('SELECT id, name, email, role FROM users WHERE api_token_hash = $hash', {
    bind: { hash: hashToken(token) },
  })) as [{ id: number; name: string; email: string; role: UserRole }[], unknown];
  const u = rows[0];
  return u ? { id: Number(u.id), name: u.name, email: u.email, role: u.role } : undefined;
}
