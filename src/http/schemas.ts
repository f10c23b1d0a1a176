/**
 * Route schemas that are not input schemas of the programmatic API (those live in
 * services/validation.ts and are reused as they are): path and query parameters, and response
 * shapes. Written in camelCase like the rest of the code; the wire is snake_case (casing.ts).
 * Response schemas are whitelists: the serializer drops any field they do not name.
 */
import { z } from 'zod';
import { USER_ROLES } from '../../models/user.js';

/** Ids of int4 columns (users, services, templates): beyond 2^31-1 PostgreSQL would refuse the value. */
export const intId = z.coerce
  .number({ error: 'must be a number' })
  .int('must be an integer')
  .positive('must be a positive id')
  .max(2_147_483_647, 'is too large');
/** Ids of bigint columns (campaigns, contacts), bounded by what a JS number holds exactly. */
export const bigId = z.coerce
  .number({ error: 'must be a number' })
  .int('must be an integer')
  .positive('must be a positive id')
  .max(Number.MAX_SAFE_INTEGER, 'is too large');

export const idParams = z.strictObject({ id: intId });
export const campaignParams = z.strictObject({ id: bigId });
export const taskParams = z.strictObject({ taskId: bigId });
export const jobParams = z.strictObject({ name: z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/, 'is not a job name') });

export const pageQuery = z.strictObject({
  userId: intId.optional().describe('Admins: whose items (default: all for lists, yourself for creation). Others: only your own id.'),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  afterId: bigId.optional().describe('Keyset pagination: items with an id above this one'),
});
export const userQuery = z.strictObject({
  userId: intId.optional().describe('Admins: act for this user (default: yourself). Others: only your own id.'),
});
export const campaignListQuery = pageQuery.extend({
  status: z.enum(['scheduled', 'sending', 'paused', 'completed', 'cancelled']).optional(),
});

export const errorSchema = z
  .object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
      required: z.number().optional(),
      available: z.number().optional(),
    }),
  })
  .describe('Every error: a stable code, a message, and for validation errors each field at fault');

/** The error answers a route can give, for the OpenAPI document. */
export function errors(...codes: (400 | 401 | 403 | 404 | 409 | 413 | 415 | 422 | 429 | 503)[]) {
  return Object.fromEntries(codes.map((c) => [c, errorSchema])) as Record<number, typeof errorSchema>;
}

const date = z.date();
const poolUsage = z.object({ size: z.number(), available: z.number(), using: z.number(), waiting: z.number(), max: z.number() });

export const quotaFields = {
  dailyQuota: z.number(),
  usedQuota: z.number(),
  remainingQuota: z.number(),
  usagePercentage: z.number().describe('used / daily quota, 0 to 100, one decimal'),
  resetsAt: date.describe('Next local midnight in the quota time zone'),
  lastSent: date.nullable(),
  isHealthy: z.boolean(),
};

export const serviceSchema = z.object({
  id: z.number(),
  name: z.string(),
  sendingRate: z.number().describe('Seconds between two sends'),
  quotaTimezone: z.string(),
  enabled: z.boolean(),
  ...quotaFields,
  // Admins only; never a password, an access token, a private CA or a DKIM private key.
  transport: z
    .object({
      host: z.string(),
      port: z.number(),
      secure: z.boolean(),
      requireTLS: z.boolean().describe('As applied: unset means true on port 587 without secure'),
      tlsMode: z.enum(['implicit', 'starttls-required', 'opportunistic']),
      certificateChecking: z.boolean().describe('false: tls_insecure or tls.reject_unauthorized false'),
      privateCa: z.boolean().describe('The service trusts its own CA (tls.ca, never returned)'),
      servername: z.string().optional(),
      minVersion: z.string().optional(),
      name: z.string().optional().describe('EHLO name'),
      timeoutMs: z.number().optional(),
      auth: z.object({ user: z.string(), method: z.enum(['PLAIN', 'LOGIN', 'XOAUTH2']).optional() }).optional(),
    })
    .optional(),
  maxConnections: z.number().optional(),
  userIds: z.array(z.number()).nullable().optional().describe('null: open to every user'),
  dkim: z.object({ domainName: z.string(), keySelector: z.string() }).nullable().optional(),
  deliverability: z
    .record(z.string(), z.unknown())
    .nullable()
    .optional()
    .describe('Limits per mailbox provider, deferral rules, warm-up (docs/deliverability.md); null: the defaults'),
  lastError: z.string().nullable().optional(),
});

export const userSchema = z.object({
  id: z.number(),
  name: z.string(),
  email: z.string(),
  role: z.enum(USER_ROLES),
  remainingQuota: z.number(),
  timezone: z.string(),
});

export const templateSchema = z.object({
  id: z.number(),
  userId: z.number(),
  name: z.string(),
  subject: z.string(),
  html: z.string().nullable(),
  text: z.string().nullable(),
});

export const contactSchema = z.object({
  id: z.number(),
  email: z.string(),
  name: z.string().nullable(),
  tags: z.array(z.string()),
  attributes: z.record(z.string(), z.unknown()),
  status: z.enum(['active', 'unsubscribed', 'bounced']),
  timezone: z.string().nullable(),
});

export const importResultSchema = z.object({
  created: z.number(),
  updated: z.number(),
  ids: z.array(z.number()).describe('Contact ids in the order of the input rows'),
  inactive: z.number().describe('Existing contacts that are unsubscribed or bounced and stay so: an import never re-activates'),
  inactiveContacts: z
    .array(z.object({ id: z.number(), email: z.string(), status: z.enum(['unsubscribed', 'bounced']) }))
    .describe('The first 100 of them'),
});

export const importJobSchema = z.object({
  id: z.number(),
  userId: z.number(),
  format: z.enum(['csv', 'json']),
  status: z.enum(['running', 'completed', 'failed']),
  rowsRead: z.number(),
  rowsTotal: z.number().nullable(),
  bytesRead: z.number(),
  bytesTotal: z.number().nullable(),
  percent: z.number().nullable(),
  result: z.object({ created: z.number(), updated: z.number(), inactive: z.number() }).nullable(),
  error: z
    .object({ code: z.string(), message: z.string(), issues: z.array(z.object({ path: z.string(), message: z.string() })).optional() })
    .nullable(),
  createdAt: date,
  updatedAt: date,
  finishedAt: date.nullable(),
});

const counts = {
  total: z.number(),
  queued: z.number(),
  sending: z.number(),
  sent: z.number(),
  failed: z.number(),
  cancelled: z.number(),
  unknown: z.number(),
};

export const progressSchema = z.object({
  ...counts,
  waitReason: z.string().nullable(),
  /** Why the campaign paused itself (safety breaker, user pause). */
  pauseReason: z.string().nullable().optional(),
  percent: z.number(),
  forecast: z
    .object({
      completesAt: date.nullable().describe('Expected completion; null when nothing can send the rest now (see reason)'),
      reason: z.enum(['paused', 'no_service', 'blocked', 'beyond_horizon']).nullable(),
      ratePerSecond: z.number().describe('The campaign’s expected rate now, msg/s (0 while it waits)'),
    })
    .nullable()
    .optional()
    .describe(
      'Completion forecast from the rates, fair share, quotas, caps, send windows and warm-up in force (an estimate; ' +
        'docs/deliverability.md). Null for a completed or cancelled campaign.',
    ),
});

export const campaignSchema = z.object({
  id: z.number(),
  userId: z.number(),
  name: z.string(),
  status: z.enum(['scheduled', 'sending', 'paused', 'completed', 'cancelled']),
  scheduledAt: date,
  timezone: z.string(),
  from: z.object({ address: z.string(), name: z.string().nullable() }),
  templates: z.array(z.number()),
  contacts: z.array(z.number()),
  recipientRule: z
    .object({
      type: z.enum(['all', 'tag_based']),
      includeTags: z.array(z.string()).optional(),
      excludeTags: z.array(z.string()).optional(),
    })
    .nullable(),
  sendWindow: z.object({ start: z.string(), end: z.string(), days: z.array(z.number()).optional(), timezone: z.string() }).nullable(),
  priority: z.number(),
  recipients: z.number(),
  generatedAt: date.nullable(),
  createdAt: date,
  progress: progressSchema,
});

export const campaignStateSchema = z.object({ id: z.number(), status: campaignSchema.shape.status });

/** Paused campaigns and why: a safety breaker (with its figures), a user pause, or by hand. */
export const pausedCampaignsSchema = z
  .array(
    z.object({
      id: z.number(),
      userId: z.number(),
      name: z.string(),
      cause: z.enum(['complaint_breaker', 'hard_bounce_breaker', 'user_pause', 'manual']),
      reason: z.string().nullable().describe('The breaker or user pause, with its figures; null when paused by hand'),
    }),
  )
  .describe('Paused campaigns (yours, for a user) and why, oldest first');

const scopeStatusSchema = z.object({
  provider: z.string().describe('google, microsoft, yahoo, apple or other:<domain>'),
  state: z.enum(['normal', 'slowed', 'suspended']),
  rate: z.number().nullable().describe('msg/s in force for the pair; null: no pace of its own (the service pace only)'),
  configuredRate: z.number().nullable(),
  suspendedUntil: z.string().nullable(),
  lastDeferral: z.object({ rule: z.string(), reply: z.string(), at: z.string() }).nullable(),
  deferrals: z.number(),
  inFlight: z.number(),
  limits: z.object({
    ratePerSecond: z.number().nullable(),
    concurrency: z.number().nullable(),
    hourly: z.number().nullable(),
    daily: z.number().nullable(),
  }),
  sentThisHour: z.number(),
  sentToday: z.number(),
  warmup: z.object({ day: z.number(), cap: z.number().nullable(), sentToday: z.number() }).nullable(),
  blocked: z
    .string()
    .nullable()
    .describe(
      'why the pair may not send now: suspended, rate, concurrency, hourly, daily, warmup, reserving (units of a cap being reserved)',
    ),
});

const warmupStatusSchema = z.object({
  provider: z.string().nullable(),
  day: z.number(),
  date: z.string(),
  cap: z.number().nullable(),
  sentToday: z.number(),
});

/** One service's throttles per mailbox provider and its warm-up schedules (services/deliverability/shaper.ts). */
export const deliverabilitySchema = z.object({ providers: z.array(scopeStatusSchema), warmup: z.array(warmupStatusSchema) });

/**
 * What a plain user sees of it (src/http/user-status.ts): on a service shared with other users, no
 * counts of sends (other users' traffic) and no reply text (it may name another user's recipient),
 * only the state, rates, the rule of the last deferral, and the warm-up day and cap.
 */
export const userDeliverabilitySchema = z.object({
  providers: z.array(
    scopeStatusSchema
      .extend({
        lastDeferral: z.object({ rule: z.string(), reply: z.string().optional(), at: z.string() }).nullable(),
        warmup: z.object({ day: z.number(), cap: z.number().nullable(), sentToday: z.number().optional() }).nullable(),
      })
      .partial({ inFlight: true, sentThisHour: true, sentToday: true }),
  ),
  warmup: z.array(warmupStatusSchema.partial({ sentToday: true })),
});

export const statusSchema = z.object({
  uptimeSeconds: z.number(),
  version: z.string(),
  isRunning: z.boolean(),
  startedAt: date.nullable(),
  instanceId: z.string(),
  deliveryMode: z.string(),
  activeServices: z.number(),
  activeCampaigns: z.number(),
  queuedSubtasks: z.number().describe('Subtasks waiting in the database (all campaigns, or yours)'),
  bufferedMessages: z.number(),
  pendingOutcomes: z.number(),
  processingRate: z
    .object({ perMinute1: z.number(), perMinute5: z.number(), perMinute15: z.number() })
    .describe('Emails sent per minute, averaged over the last 1, 5 and 15 minutes'),
  rateHistory: z
    .object({ bucketSeconds: z.number(), startsAt: date })
    .describe("The buckets of services[].sent_per_bucket: the oldest starts at starts_at, the newest holds now (this process's sends)"),
  services: z.array(
    z.object({
      id: z.number(),
      name: z.string(),
      state: z.string().describe('running, disabled, unhealthy, exhausted, or stopped when the scheduler does not run it'),
      enabled: z.boolean(),
      sendingRate: z.number(),
      inFlight: z.number().describe('Sends under way now: handed to the SMTP server, not yet answered (not claimed messages)'),
      tlsMode: z
        .enum(['implicit', 'starttls-required', 'opportunistic'])
        .describe('implicit TLS, STARTTLS required, or STARTTLS when offered'),
      certificateChecking: z.boolean().describe('false: tls_insecure or tls.reject_unauthorized false'),
      concurrency: z
        .object({
          current: z.number(),
          max: z.number(),
          backlog: z.number(),
          latencyMs: z.number().nullable(),
          lastChange: z.enum(['up', 'down']).nullable(),
        })
        .nullable()
        .describe(
          'Concurrent sends now, their bound (maxConnections), and the backlog and latency they were decided on; null when this process does not run the service',
        ),
      fairnessLag: z
        .number()
        .nullable()
        .describe(
          "The worst user's lag behind an ideal round robin on this service, in turns (owed while sendable minus got; goal at most one); null when this process does not run the service",
        ),
      ...quotaFields,
      sentPerBucket: z
        .array(z.number())
        .describe('Sends accepted by this process in each bucket of rate_history, oldest first: the last 15 minutes in 10 s buckets'),
      deliverability: deliverabilitySchema
        .nullable()
        .describe('Throttles per mailbox provider (admins; null for users and when this process does not run the service)'),
    }),
  ),
  instances: z
    .array(
      z.object({
        id: z.string(),
        host: z.string(),
        pid: z.number(),
        startedAt: date,
        heartbeatAt: date,
        services: z.array(z.number()),
        self: z.boolean(),
      }),
    )
    .describe('Live engine processes on this database (heartbeat within 3 x HEARTBEAT_MS) and the services each owns'),
  pools: z.object({ api: poolUsage, scheduler: poolUsage, prepared: poolUsage }),
  sendWorkers: z
    .object({
      threads: z.number(),
      restarts: z.number(),
      lostSends: z.number(),
      lastCrash: z.object({ at: date, thread: z.number(), exitCode: z.number(), error: z.string().nullable() }).nullable(),
    })
    .describe(
      'Send worker threads of this process (SEND_WORKERS; 0: SMTP work on the main thread), threads restarted after one died, and the sends under way they lost (classified ambiguous)',
    ),
  pausedCampaigns: pausedCampaignsSchema,
  pausedUsers: z
    .array(z.object({ id: z.number(), name: z.string(), reason: z.string() }))
    .describe('Users paused across campaigns (engine.breakers.pauseUser), with why'),
});

export const statsSchema = z.object({
  campaigns: z.array(z.object({ id: z.number(), userId: z.number(), name: z.string(), status: z.string(), ...counts })),
  services: z.array(
    z.object({
      id: z.number(),
      name: z.string().nullable(),
      sending: z.number(),
      sent: z.number(),
      failed: z.number(),
      cancelled: z.number(),
      unknown: z.number(),
      queued: z.number(),
    }),
  ),
});
