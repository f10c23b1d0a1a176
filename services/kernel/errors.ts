/**
 * Every error fairsend raises on purpose is a FairsendError with a stable `code`,
 * so callers branch on `err.code`, never on message text (nodemailer's lib/errors.js habit).
 */
export const ErrorCodes = {
  CONFIG_INVALID: 'CONFIG_INVALID',
  VALIDATION: 'VALIDATION',
  NOT_FOUND: 'NOT_FOUND',
  FORBIDDEN: 'FORBIDDEN',
  CONFLICT: 'CONFLICT',
  QUOTA_EXCEEDED: 'QUOTA_EXCEEDED',
  EMPTY_RECIPIENTS: 'EMPTY_RECIPIENTS',
  TEMPLATE_VARIABLE: 'TEMPLATE_VARIABLE',
  /** A template part does not parse (Liquid syntax); the error names the part, line and column. */
  TEMPLATE_SYNTAX: 'TEMPLATE_SYNTAX',
  HEADER_INJECTION: 'HEADER_INJECTION',
  ENGINE_CLOSED: 'ENGINE_CLOSED',
  /** PostgreSQL cannot be reached (stopped, restarting, refusing connections): try again shortly. */
  DATABASE_UNAVAILABLE: 'DATABASE_UNAVAILABLE',
  /** A secret must be stored or opened and no FAIRSEND_SECRET_KEY is set. */
  SECRET_KEY_MISSING: 'SECRET_KEY_MISSING',
  /** A stored secret names a key that is neither FAIRSEND_SECRET_KEY nor in FAIRSEND_SECRET_KEY_PREVIOUS. */
  SECRET_KEY_UNKNOWN: 'SECRET_KEY_UNKNOWN',
  /** A stored secret does not decrypt with its key (damaged or tampered with). */
  SECRET_UNREADABLE: 'SECRET_UNREADABLE',
  /** A state machine was asked for a transition it does not have: a bug, never bad input. */
  INVALID_TRANSITION: 'INVALID_TRANSITION',
  /** A bind value has no SQL literal form (kernel/sql-literal.ts, for COPY): a bug, never bad input. */
  SQL_LITERAL: 'SQL_LITERAL',
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface FieldIssue {
  /** Dotted path of the field at fault, e.g. `recipientRule.includeTags.0` or `contacts[3].email`. */
  path: string;
  message: string;
}

export class FairsendError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FairsendError';
    this.code = code;
  }
}

/** Start-up configuration is wrong; the message names each variable and what is wrong with it. */
export class ConfigError extends FairsendError {
  readonly issues: FieldIssue[];
  constructor(issues: FieldIssue[]) {
    super(ErrorCodes.CONFIG_INVALID, issues.map((i) => i.message).join('; '));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** Input to a public call is wrong; `issues` names each field and the reason. Nothing was written. */
export class ValidationError extends FairsendError {
  readonly issues: FieldIssue[];
  constructor(issues: FieldIssue[], code: ErrorCode = ErrorCodes.VALIDATION) {
    super(code, issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; '));
    this.name = 'ValidationError';
    this.issues = issues;
  }
}

export class NotFoundError extends FairsendError {
  constructor(what: string, id: number | string) {
    super(ErrorCodes.NOT_FOUND, `${what} ${id} not found`);
    this.name = 'NotFoundError';
  }
}

export class ConflictError extends FairsendError {
  constructor(message: string) {
    super(ErrorCodes.CONFLICT, message);
    this.name = 'ConflictError';
  }
}

export class QuotaExceededError extends FairsendError {
  readonly required: number;
  readonly available: number;
  constructor(required: number, available: number) {
    super(ErrorCodes.QUOTA_EXCEEDED, `user quota exceeded: campaign needs ${required} sends, user has ${available} remaining`);
    this.name = 'QuotaExceededError';
    this.required = required;
    this.available = available;
  }
}

/** A state machine (services/scheduler/state.ts) was asked for a transition it does not allow: a bug. */
export class InvalidTransitionError extends FairsendError {
  readonly machine: string;
  readonly from: string;
  readonly to: string;
  constructor(machine: string, from: string, to: string) {
    super(ErrorCodes.INVALID_TRANSITION, `${machine}: no transition ${from} -> ${to}`);
    this.name = 'InvalidTransitionError';
    this.machine = machine;
    this.from = from;
    this.to = to;
  }
}

/** A bind value that cannot be written as an SQL literal (services/kernel/sql-literal.ts): a bug. */
export class SqlLiteralError extends FairsendError {
  constructor(message: string) {
    super(ErrorCodes.SQL_LITERAL, message);
    this.name = 'SqlLiteralError';
  }
}
