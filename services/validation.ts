/**
 * Input schemas for every public entry point, and the one conversion from zod's issues to
 * fairsend's ValidationError (field path + reason). Limits are here, in one place, so the
 * HTTP layer and the programmatic API refuse the same things with the same words.
 */
import { z } from 'zod';
import { ValidationError, type FieldIssue } from './kernel/errors.js';
import { validateSendWindow } from './send-window.js';
import { USER_ROLES } from '../models/user.js';
import { isKnownZone } from './timezones.js';
import { caProblem } from './delivery/tls-policy.js';
import { canonicalEmail } from './email-address.js';
import { serviceShapingSchema } from './deliverability/shaping.js';

export const LIMITS = {
  name: 200,
  email: 320,
  subject: 998,
  body: 1024 * 1024,
  tagsPerContact: 100,
  tag: 100,
  attributesJson: 16 * 1024,
  contactsPerBatch: 100_000,
  explicitContacts: 1_000_000,
  templatesPerCampaign: 20,
  dailyQuota: 100_000_000,
  userQuota: 1_000_000_000,
  sendingRate: 86_400,
  /** A service's private CA bundle (PEM). */
  caPem: 256 * 1024,
} as const;

/** Formats a zod path: ['contacts', 3, 'email'] -> 'contacts[3].email'. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

export function issuesFrom(error: z.ZodError, prefix: readonly PropertyKey[] = []): FieldIssue[] {
  return error.issues.flatMap((i) => unionBranch(i).map((b) => ({ path: formatPath([...prefix, ...b.path]), message: b.message })));
}

/**
 * zod 4 reports a union none of whose options matched as one "Invalid input", unless exactly one
 * option failed on checks alone; an option with a transform (the canonical email) never counts as
 * that. The input's own type decides which option was meant: when exactly one option's issues are
 * not all "wrong type" at the union's own path, its issues are the ones to report, e.g.
 * `from: is not a valid email address` for `from: "nope"` against `address | { address, name }`.
 */
function unionBranch(i: z.core.$ZodIssue): { path: PropertyKey[]; message: string }[] {
  if (i.code !== 'invalid_union' || !i.errors.length) return [{ path: i.path, message: i.message }];
  const meant = i.errors.filter((branch) => !branch.every((b) => b.code === 'invalid_type' && b.path.length === 0));
  if (meant.length !== 1) return [{ path: i.path, message: i.message }];
  return meant[0]!.flatMap((b) => unionBranch(b).map((x) => ({ path: [...i.path, ...x.path], message: x.message })));
}

const UNSTORABLE_TEXT = 'must be valid Unicode text without NUL characters (U+0000 and unpaired surrogates cannot be stored)';
const UNSTORABLE_KEY = 'has a key with a NUL character or an unpaired surrogate, which cannot be stored';

// With the u flag, \p{Cs} matches only unpaired surrogates: a valid pair is one code point.
// eslint-disable-next-line no-control-regex -- NUL is exactly what this looks for
const UNSTORABLE_RE = /[\u0000\p{Cs}]/u;
/** Text PostgreSQL cannot store as given: a NUL anywhere, or an unpaired UTF-16 surrogate (no Unicode character). */
const unstorable = (s: string) => UNSTORABLE_RE.test(s);

/**
 * Every string (value or object key) in `input` that PostgreSQL could not store as given, with its
 * path. Without this check a NUL fails the write with an untyped database error, or worse is stored
 * as the two characters `\0`, and an unpaired surrogate is silently replaced by U+FFFD. Walks plain
 * objects and arrays without recursion and at most once each (cycles and deep nesting are safe).
 */
export function unstorableTextIssues(input: unknown, prefix: readonly PropertyKey[] = [], max = 20): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const seen = new Set<object>();
  const stack: [unknown, PropertyKey[]][] = [[input, [...prefix]]];
  while (stack.length && issues.length < max) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'string') {
      if (unstorable(v)) issues.push({ path: formatPath(path), message: UNSTORABLE_TEXT });
      continue;
    }
    if (v === null || typeof v !== 'object' || seen.has(v)) continue;
    seen.add(v);
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], [...path, i]]);
    } else if (Object.getPrototypeOf(Object.getPrototypeOf(v) ?? Object.prototype) === null) {
      // A plain object (of any realm): its keys are stored too (attributes are jsonb).
      for (const [k, child] of Object.entries(v).reverse()) {
        if (unstorable(k)) issues.push({ path: formatPath(path), message: UNSTORABLE_KEY });
        stack.push([child, [...path, k]]);
      }
    }
  }
  return issues.slice(0, max);
}

/** Parses `input` with `schema`, or throws a ValidationError naming each field at fault. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, prefix: readonly PropertyKey[] = []): z.output<S> {
  const r = schema.safeParse(input);
  const text = unstorableTextIssues(input, prefix);
  if (!r.success || text.length) throw new ValidationError([...(r.success ? [] : issuesFrom(r.error, prefix)), ...text]);
  return r.data;
}

const noNewline = (what: string) => (s: string) => !/[\r\n]/.test(s) || `${what} must not contain CR or LF (header injection)`;
const refineNoNewline = (what: string) =>
  z.string().superRefine((s, ctx) => {
    const ok = noNewline(what)(s);
    if (ok !== true) ctx.addIssue({ code: 'custom', message: ok });
  });

// One canonical address per mailbox (services/email-address.ts): NFC, invisible characters refused,
// the domain in lowercase punycode (UTS 46), no trailing dot, fullwidth local parts refused. The
// schema's output is the canonical form, so every door (contacts, users, campaign senders) stores it.
export const emailSchema = z
  .string({ error: 'must be a string' })
  .trim()
  .max(LIMITS.email, `must be at most ${LIMITS.email} characters`)
  .transform((s, ctx) => {
    const c = canonicalEmail(s);
    if (c.ok) return c.email;
    ctx.addIssue({ code: 'custom', message: c.message });
    return z.NEVER;
  });

// Through a cache built once (services/timezones.ts): luxon's check costs an Intl.DateTimeFormat a call.
export const zoneSchema = z.string().refine((z) => isKnownZone(z), { message: 'is not a known IANA time zone' });

const nameSchema = z.string().trim().min(1, 'must not be empty').max(LIMITS.name, `must be at most ${LIMITS.name} characters`);
// Ids of users, services and templates are PostgreSQL integers; contacts and campaigns are bigints.
// Bounded here, so an out-of-range id is a 400 with its path, never a database error.
const idSchema = z
  .number({ error: 'must be a number' })
  .int('must be an integer')
  .positive('must be a positive id')
  .max(2_147_483_647, 'is not a known id');
const bigIdSchema = z
  .number({ error: 'must be a number' })
  .int('must be an integer')
  .positive('must be a positive id')
  .max(Number.MAX_SAFE_INTEGER, 'is not a known id');

export const createUserSchema = z.strictObject({
  name: nameSchema.pipe(refineNoNewline('name')),
  email: emailSchema,
  quota: z.number({ error: 'must be a number' }).int('must be an integer').min(0, 'must not be negative').max(LIMITS.userQuota),
  timezone: zoneSchema.optional(),
  role: z.enum(USER_ROLES).optional(),
});
export type CreateUserInput = z.input<typeof createUserSchema>;

// A host name or an address literal ([192.0.2.1], [IPv6:...]): what EHLO and SNI may carry.
const HOSTNAME_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?|\[[A-Za-z0-9:.]+\])$/;

const smtpAuthSchema = z
  .strictObject({
    user: z.string().min(1).max(320),
    pass: z.string().max(1024).optional(),
    accessToken: z.string().min(1, 'must not be empty').max(8192).optional(),
    method: z.enum(['PLAIN', 'LOGIN', 'XOAUTH2'], { error: 'must be PLAIN, LOGIN or XOAUTH2' }).optional(),
  })
  .superRefine((a, ctx) => {
    const oauth = a.method === 'XOAUTH2' || (a.method === undefined && a.accessToken !== undefined);
    if (oauth) {
      if (a.accessToken === undefined) ctx.addIssue({ code: 'custom', path: ['accessToken'], message: 'is required with method XOAUTH2' });
      if (a.pass !== undefined) ctx.addIssue({ code: 'custom', path: ['pass'], message: 'is not used with XOAUTH2 (give accessToken)' });
    } else {
      if (a.pass === undefined)
        ctx.addIssue({ code: 'custom', path: ['pass'], message: `is required${a.method ? ` with method ${a.method}` : ''}` });
      if (a.accessToken !== undefined) ctx.addIssue({ code: 'custom', path: ['accessToken'], message: 'is only used with method XOAUTH2' });
    }
  });

const transportTlsSchema = z.strictObject({
  ca: z
    .string({ error: 'must be PEM text' })
    .max(LIMITS.caPem, `must be at most ${LIMITS.caPem} characters`)
    .superRefine((pem, ctx) => {
      const problem = caProblem(pem);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .optional(),
  servername: z.string().max(255).regex(HOSTNAME_RE, 'must be a host name').optional(),
  minVersion: z.enum(['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'], { error: 'must be TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3' }).optional(),
  rejectUnauthorized: z.boolean({ error: 'must be true or false' }).optional(),
});

const transportSchema = z
  .strictObject({
    host: z.string().trim().min(1, 'must not be empty').max(255),
    port: z
      .number({ error: 'must be a number' })
      .int()
      .min(1, 'must be a port from 1 to 65535')
      .max(65535, 'must be a port from 1 to 65535'),
    secure: z.boolean().optional(),
    requireTLS: z.boolean({ error: 'must be true or false' }).optional(),
    auth: smtpAuthSchema.optional(),
    timeoutMs: z.number().int().min(100).max(600_000).optional(),
    tlsInsecure: z.boolean().optional(),
    tls: transportTlsSchema.optional(),
    name: z.string().max(255).regex(HOSTNAME_RE, 'must be a host name or an address literal such as [192.0.2.1]').optional(),
  })
  .superRefine((t, ctx) => {
    if (t.tlsInsecure && t.tls?.rejectUnauthorized === true) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'rejectUnauthorized'], message: 'contradicts tlsInsecure: true' });
    }
  });

const dkimSchema = z.strictObject({
  domainName: z.string().min(1).max(255),
  keySelector: z.string().min(1).max(63),
  privateKey: z.string().min(1).max(16_384),
});

const serviceFields = {
  name: nameSchema,
  transport: transportSchema,
  sendingRate: z
    .number({ error: 'must be a number of seconds' })
    .min(0, 'must not be negative')
    .max(LIMITS.sendingRate, `must be at most ${LIMITS.sendingRate} seconds`),
  dailyQuota: z
    .number({ error: 'must be a number' })
    .int('must be an integer')
    .min(0, 'must not be negative')
    .max(LIMITS.dailyQuota, `must be at most ${LIMITS.dailyQuota}`),
  quotaTimezone: zoneSchema.optional(),
  maxConnections: z.number().int().min(1, 'must be at least 1').max(100, 'must be at most 100').optional(),
  userIds: z.array(idSchema).max(10_000).optional(),
  enabled: z.boolean().optional(),
  dkim: dkimSchema.nullable().optional(),
  /** Limits per mailbox provider, deferral rules and warm-up (docs/deliverability.md); null: the defaults. */
  deliverability: serviceShapingSchema.nullable().optional(),
};
export const createServiceSchema = z.strictObject(serviceFields);
export type CreateServiceInput = z.input<typeof createServiceSchema>;
export const updateServiceSchema = z
  .strictObject({ ...serviceFields, userIds: serviceFields.userIds.nullable() })
  .partial()
  .refine((p) => Object.keys(p).length > 0, { message: 'must change at least one field' });
export type UpdateServiceInput = z.input<typeof updateServiceSchema>;

const tagSchema = z.string().trim().min(1, 'must not be empty').max(LIMITS.tag, `must be at most ${LIMITS.tag} characters`);

export const contactInputSchema = z.strictObject({
  email: emailSchema,
  name: z.string().trim().max(LIMITS.name).pipe(refineNoNewline('name')).nullable().optional(),
  tags: z.array(tagSchema).max(LIMITS.tagsPerContact, `must hold at most ${LIMITS.tagsPerContact} tags`).optional(),
  attributes: z
    .record(z.string().regex(/^[A-Za-z_][\w-]{0,63}$/, 'attribute names are letters, digits, _ and -'), z.unknown())
    .refine((a) => JSON.stringify(a).length <= LIMITS.attributesJson, { message: `must be at most ${LIMITS.attributesJson} bytes as JSON` })
    .optional(),
  timezone: zoneSchema.nullable().optional(),
  status: z.enum(['active', 'unsubscribed', 'bounced']).optional(),
});
export type ContactInput = z.input<typeof contactInputSchema>;

export const createTemplateSchema = z
  .strictObject({
    name: nameSchema,
    subject: z
      .string({ error: 'must be a string' })
      .min(1, 'must not be empty')
      .max(LIMITS.subject, `must be at most ${LIMITS.subject} characters`)
      .pipe(refineNoNewline('subject')),
    html: z.string().max(LIMITS.body, `must be at most ${LIMITS.body} characters`).optional(),
    text: z.string().max(LIMITS.body, `must be at most ${LIMITS.body} characters`).optional(),
  })
  .refine((t) => t.html !== undefined || t.text !== undefined, { message: 'needs html or text', path: ['html'] });
export type CreateTemplateInput = z.input<typeof createTemplateSchema>;

const recipientRuleSchema = z.discriminatedUnion(
  'type',
  [
    z.strictObject({ type: z.literal('all') }),
    z.strictObject({
      type: z.literal('tag_based'),
      includeTags: z.array(tagSchema).max(100).optional(),
      excludeTags: z.array(tagSchema).max(100).optional(),
    }),
  ],
  { error: 'type must be "all" or "tag_based"' },
);
export type RecipientRule = z.input<typeof recipientRuleSchema>;

const sendWindowSchema = z
  .strictObject({
    start: z.string(),
    end: z.string(),
    days: z.array(z.number()).optional(),
    timezone: z.union([z.literal('recipient'), zoneSchema]).optional(),
  })
  .superRefine((w, ctx) => {
    for (const issue of validateSendWindow({ start: w.start, end: w.end, days: w.days })) {
      ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path ? issue.path.split('.') : [] });
    }
  });
export type SendWindowInput = z.input<typeof sendWindowSchema>;

const scheduledAtSchema = z.union([z.date(), z.string().min(1)]);

export const createCampaignSchema = z
  .strictObject({
    userId: idSchema,
    name: nameSchema.pipe(refineNoNewline('name')),
    from: z.union([
      emailSchema,
      z.strictObject({ address: emailSchema, name: z.string().max(LIMITS.name).pipe(refineNoNewline('from.name')).optional() }),
    ]),
    templates: z.array(idSchema).min(1, 'needs at least one template').max(LIMITS.templatesPerCampaign),
    contacts: z.array(bigIdSchema).max(LIMITS.explicitContacts).optional(),
    recipientRule: recipientRuleSchema.optional(),
    scheduledAt: scheduledAtSchema.optional(),
    timezone: zoneSchema.optional(),
    priority: z.number().int('must be an integer').min(-1000).max(1000).optional(),
    sendWindow: sendWindowSchema.optional(),
  })
  .refine((c) => (c.contacts && c.contacts.length > 0) || c.recipientRule, {
    message: 'needs recipients: contacts, recipientRule, or both',
    path: ['contacts'],
    // Checked even when a field failed (zod skips object checks after a failed transform, such as
    // the canonical email's): every invalid field is named in one error.
    when: (p) => typeof p.value === 'object' && p.value !== null,
  });
export type CreateCampaignInput = z.input<typeof createCampaignSchema>;

export function parseId(value: unknown, field = 'id'): number {
  return parseInput(field === 'campaignId' || field === 'contactId' ? bigIdSchema : idSchema, value, [field]);
}
