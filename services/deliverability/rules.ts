/**
 * Deferral rules: what a receiving server's 4xx/5xx reply asks of the sender, as data (the shape
 * of KumoMTA's shaping.toml automation rules: match the reply, then slow down or suspend for a
 * time). A rule matches on any of
 *
 *   - `code`: the basic reply code (421, 451, 550 ...);
 *   - `enhanced`: the RFC 3463 enhanced code, exactly (`4.7.28`) or as a range of the last part
 *     (`4.7.500-4.7.699`);
 *   - `pattern`: a case-insensitive regular expression over the reply text (`\[TS04\]`);
 *   - `provider`: the recipient's mailbox provider (omitted: any);
 *
 * all of those given must hold. The first matching rule wins, so user rules (placed before the
 * built-in ones) override them. `scope` says what the reply is about:
 *
 *   - `provider`: the (service, provider) pair: every message of this service to this provider
 *     slows down or waits (Gmail's 4.7.28 names the IP or the DKIM domain: both are the service's);
 *   - `message`: only this message is retried later (a full mailbox, greylisting);
 *
 * and `action` what to do: `slow` (multiply the pair's rate by `factor`, down to its floor),
 * `suspend` (no sends to the pair for `seconds`, then resume slowed), `retry` (only this message,
 * after the usual backoff) or `fail` (a 5xx the message cannot get past).
 *
 * Sources for the built-in table: Google's "SMTP errors and codes" page and Postmaster guidance
 * (421 4.7.28 "unusual rate of unsolicited mail ... rate limited", 421 4.7.0 "Try again later"),
 * Yahoo's postmaster error codes (TS01/TS02 complaints or volume, TS03 "permanently deferred",
 * TS04 "temporarily deferred due to unexpected volume or user complaints"), Microsoft's
 * Exchange Online NDR reference (451 4.7.500-4.7.650 "Access denied, please try again later",
 * 550 5.7.515 "sending domain does not meet the required authentication level").
 */
import { z } from 'zod';
import { ValidationError, type FieldIssue } from '../kernel/errors.js';
import type { Provider } from './providers.js';

export interface ParsedReply {
  code?: number;
  /** `4.7.28`, when the reply carries one. */
  enhanced?: string;
  text: string;
}

const ENHANCED = /\b([245])\.(\d{1,3})\.(\d{1,3})\b/;

/** Reads `421-4.7.28 [1.2.3.4] Our system ...` (multi-line replies joined) into its parts. */
export function parseReply(reply: string, responseCode?: number): ParsedReply {
  const text = reply.replace(/\r?\n/g, ' ').trim();
  const lead = /^(\d{3})[ -]/.exec(text);
  const code = responseCode ?? (lead ? Number(lead[1]) : undefined);
  const enhanced = ENHANCED.exec(text.slice(lead ? 4 : 0, 200));
  return { ...(code !== undefined ? { code } : {}), ...(enhanced ? { enhanced: enhanced.slice(1, 4).join('.') } : {}), text };
}

const enhancedSpec = z
  .string()
  .regex(/^[245]\.\d{1,3}\.\d{1,3}(-[245]\.\d{1,3}\.\d{1,3})?$/, 'must be like 4.7.28 or 4.7.500-4.7.699')
  .refine((s) => {
    const [a, b] = s.split('-');
    if (!b) return true;
    const [x, y] = [a!.split('.'), b.split('.')];
    return x[0] === y[0] && x[1] === y[1] && Number(x[2]) <= Number(y[2]);
  }, 'a range must keep its first two parts and run upwards');

const patternSpec = z.string().refine((s) => {
  try {
    new RegExp(s, 'i');
    return true;
  } catch {
    return false;
  }
}, 'must be a valid regular expression');

export const ruleActionSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('slow'), factor: z.number().gt(0).lt(1) }).strict(),
  z
    .object({
      type: z.literal('suspend'),
      seconds: z
        .number()
        .int()
        .positive()
        .max(7 * 86400),
    })
    .strict(),
  z.object({ type: z.literal('retry') }).strict(),
  z.object({ type: z.literal('fail') }).strict(),
]);

export const deferralRuleSchema = z
  .object({
    name: z.string().min(1).max(100),
    provider: z
      .string()
      .regex(/^(google|microsoft|yahoo|apple|other:[^\s@]+)$/, 'must be google, microsoft, yahoo, apple or other:<domain>')
      .optional(),
    code: z.number().int().min(400).max(599).optional(),
    enhanced: enhancedSpec.optional(),
    pattern: patternSpec.optional(),
    scope: z.enum(['provider', 'message']),
    action: ruleActionSchema,
  })
  .strict()
  .refine((r) => r.code !== undefined || r.enhanced !== undefined || r.pattern !== undefined, {
    message: 'a rule needs at least one of code, enhanced or pattern',
  })
  .refine((r) => r.scope === 'provider' || r.action.type === 'retry' || r.action.type === 'fail', {
    message: 'scope "message" allows only the actions retry and fail',
    path: ['action'],
  });
export type DeferralRule = z.infer<typeof deferralRuleSchema>;
export type RuleAction = z.infer<typeof ruleActionSchema>;

/** The rules fairsend ships. Order matters: specific first, the generic "try later" last. */
export const BUILTIN_RULES: readonly DeferralRule[] = [
  // Gmail: rate limited for unsolicited mail (IP, SPF domain, DKIM domain or netblock).
  {
    name: 'gmail-4.7.28-rate-limited',
    provider: 'google',
    enhanced: '4.7.28',
    scope: 'provider',
    action: { type: 'suspend', seconds: 900 },
  },
  // Gmail's other throttles under 4.7.0 ("Try again later", "unusual rate").
  {
    name: 'gmail-4.7.0-try-later',
    provider: 'google',
    code: 421,
    enhanced: '4.7.0',
    scope: 'provider',
    action: { type: 'slow', factor: 0.5 },
  },
  // Gmail 450/452 4.2.1: this one recipient receives too fast; only the message waits.
  { name: 'gmail-4.2.1-recipient-rate', provider: 'google', enhanced: '4.2.1', scope: 'message', action: { type: 'retry' } },
  // Yahoo TS03: "permanently deferred", retrying does not help.
  { name: 'yahoo-ts03-blocked', provider: 'yahoo', pattern: '\\[TSS?03\\]', scope: 'message', action: { type: 'fail' } },
  // Yahoo TS01/TS02 (complaints, volume): back off hard; Yahoo asks for about 4 hours.
  {
    name: 'yahoo-ts01-ts02-complaints',
    provider: 'yahoo',
    pattern: '\\[TSS?0[12]\\]',
    scope: 'provider',
    action: { type: 'suspend', seconds: 4 * 3600 },
  },
  // Yahoo TS04: unexpected volume or complaints.
  { name: 'yahoo-ts04-volume', provider: 'yahoo', pattern: '\\[TSS?04\\]', scope: 'provider', action: { type: 'suspend', seconds: 3600 } },
  // Microsoft: 451 4.7.500-4.7.650 "Access denied, please try again later" (reputation throttling).
  {
    name: 'microsoft-4.7.5xx-6xx-throttled',
    provider: 'microsoft',
    enhanced: '4.7.500-4.7.650',
    scope: 'provider',
    action: { type: 'slow', factor: 0.5 },
  },
  // Microsoft 550 5.7.515: the sending domain fails authentication; retrying cannot help.
  { name: 'microsoft-5.7.515-authentication', provider: 'microsoft', enhanced: '5.7.515', scope: 'message', action: { type: 'fail' } },
  // Anyone: a generic "try later" from the receiver.
  { name: 'generic-421-try-later', code: 421, scope: 'provider', action: { type: 'slow', factor: 0.5 } },
  {
    name: 'generic-451-try-later',
    code: 451,
    pattern: 'try (again )?later|too many|rate|throttl|busy',
    scope: 'provider',
    action: { type: 'slow', factor: 0.5 },
  },
];

/** Validates user rules; a bad rule is refused with the field named (`rules.2.enhanced: ...`). */
export function parseRules(input: unknown, path = 'rules'): DeferralRule[] {
  const r = z.array(deferralRuleSchema).safeParse(input);
  if (r.success) return r.data;
  const issues: FieldIssue[] = r.error.issues.map((i) => ({ path: [path, ...i.path.map(String)].join('.'), message: i.message }));
  throw new ValidationError(issues);
}

interface Compiled {
  rule: DeferralRule;
  pattern?: RegExp;
  lo?: number[];
  hi?: number[];
}

function compile(rule: DeferralRule): Compiled {
  const c: Compiled = { rule };
  if (rule.pattern) c.pattern = new RegExp(rule.pattern, 'i');
  if (rule.enhanced) {
    const [a, b] = rule.enhanced.split('-');
    c.lo = a!.split('.').map(Number);
    c.hi = (b ?? a!).split('.').map(Number);
  }
  return c;
}

function enhancedIn(c: Compiled, enhanced: string | undefined): boolean {
  if (!c.lo) return true;
  if (!enhanced) return false;
  const e = enhanced.split('.').map(Number);
  return e[0] === c.lo[0] && e[1] === c.lo[1] && e[2]! >= c.lo[2]! && e[2]! <= c.hi![2]!;
}

export interface RuleMatch {
  rule: DeferralRule;
  reply: ParsedReply;
}

/** Matches replies against user rules first, then the built-in ones. */
export class RuleSet {
  private readonly compiled: Compiled[];
  constructor(userRules: readonly DeferralRule[] = [], builtin: readonly DeferralRule[] = BUILTIN_RULES) {
    this.compiled = [...userRules, ...builtin].map(compile);
  }

  get rules(): DeferralRule[] {
    return this.compiled.map((c) => c.rule);
  }

  match(reply: ParsedReply | string, provider?: Provider): RuleMatch | undefined {
    const r = typeof reply === 'string' ? parseReply(reply) : reply;
    for (const c of this.compiled) {
      const rule = c.rule;
      if (rule.provider && rule.provider !== provider) continue;
      if (rule.code !== undefined && rule.code !== r.code) continue;
      if (!enhancedIn(c, r.enhanced)) continue;
      if (c.pattern && !c.pattern.test(r.text)) continue;
      return { rule, reply: r };
    }
    return undefined;
  }
}
