/**
 * The shaping table: limits per (service, mailbox provider) pair, the adaptive settings and the
 * user's deferral rules. Three layers, each overriding the one before field by field:
 *
 *   1. DEFAULT_SHAPING below (fairsend's defaults);
 *   2. the file named by DELIVERABILITY_SHAPING_FILE (JSON, same shape), for the whole install;
 *   3. the service's own `deliverability` settings (same shape, plus warm-up schedules).
 *
 * Within a layer, `providers.<name>` overrides `default` for that provider; `providers.other`
 * covers every `other:<domain>` that has no entry of its own. A null limit means "none of its
 * own": the service's rate and quota still bind the sum of all its pairs.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, ValidationError, type FieldIssue } from '../kernel/errors.js';
import { deferralRuleSchema, type DeferralRule } from './rules.js';
import { DEFAULT_ADAPTIVE, type AdaptiveSettings } from './throttle.js';
import { warmupScheduleSchema, type WarmupSchedule } from './warmup.js';
import type { Provider } from './providers.js';

const nullablePositive = (int: boolean) => (int ? z.number().int().positive() : z.number().positive()).nullable().optional();

export const pairLimitsSchema = z
  .object({
    /** Messages per second to this provider; null: only the service's rate. */
    ratePerSecond: nullablePositive(false),
    /** Sends to this provider under way at once. */
    concurrency: nullablePositive(true),
    /** Messages per clock hour. */
    hourly: nullablePositive(true),
    /** Messages per quota day (the service's quota time zone). */
    daily: nullablePositive(true),
  })
  .strict();
export type PairLimitsInput = z.infer<typeof pairLimitsSchema>;

export interface PairLimits {
  ratePerSecond: number | null;
  concurrency: number | null;
  hourly: number | null;
  daily: number | null;
}

const providerKey = z
  .string()
  .regex(/^(google|microsoft|yahoo|apple|other|other:[^\s@]+)$/, 'must be google, microsoft, yahoo, apple, other or other:<domain>');

export const adaptiveSchema = z
  .object({
    floorFraction: z.number().gt(0).max(1),
    quietMs: z.number().int().positive(),
    recoveryStep: z.number().gt(0).max(1),
    holdMs: z.number().int().nonnegative(),
    resumeFactor: z.number().gt(0).max(1),
    /** The base rate (msg/s) a slow-down starts from when neither pair nor service has a rate. */
    unlimitedBaseRate: z.number().positive(),
  })
  .strict()
  .partial();

export const shapingTableSchema = z
  .object({
    default: pairLimitsSchema.optional(),
    providers: z.record(providerKey, pairLimitsSchema).optional(),
    adaptive: adaptiveSchema.optional(),
    rules: z.array(deferralRuleSchema).optional(),
  })
  .strict();
export type ShapingTableInput = z.infer<typeof shapingTableSchema>;

/** A service's `deliverability` settings: the table's shape plus warm-up schedules. */
export const serviceShapingSchema = shapingTableSchema.extend({ warmup: z.array(warmupScheduleSchema).max(20).optional() }).strict();
export type ServiceShapingInput = z.infer<typeof serviceShapingSchema>;

/**
 * fairsend's defaults. No rate or cap of its own: a provider accepts what the service's rate
 * allows until it says otherwise, and the adaptive throttle answers that. Concurrency follows the
 * providers' published or commonly observed connection limits (Yahoo is the strictest).
 */
export const DEFAULT_SHAPING = {
  default: { ratePerSecond: null, concurrency: null, hourly: null, daily: null },
  providers: {
    google: { concurrency: 20 },
    microsoft: { concurrency: 10 },
    yahoo: { concurrency: 5 },
    apple: { concurrency: 10 },
  },
  adaptive: { ...DEFAULT_ADAPTIVE, unlimitedBaseRate: 50 },
  rules: [],
} satisfies ShapingTableInput;

export type FullAdaptive = AdaptiveSettings & { unlimitedBaseRate: number };

export interface ResolvedShaping {
  limitsFor(provider: Provider): PairLimits;
  adaptive: FullAdaptive;
  /** User rules, most specific layer first (service, then file). */
  rules: DeferralRule[];
  warmup: WarmupSchedule[];
}

function issuesOf(error: z.ZodError, path: string): FieldIssue[] {
  return error.issues.map((i) => {
    const p = [path, ...i.path.map(String)].filter(Boolean).join('.');
    return { path: p, message: i.message };
  });
}

/** Validates a service's settings; throws ValidationError naming each field (`deliverability.providers.google.hourly`). */
export function parseServiceShaping(input: unknown, path = 'deliverability'): ServiceShapingInput {
  const r = serviceShapingSchema.safeParse(input);
  if (!r.success) throw new ValidationError(issuesOf(r.error, path));
  return r.data;
}

/** Reads the install-wide table (DELIVERABILITY_SHAPING_FILE); throws ConfigError naming the file and field. */
export function loadShapingFile(file: string | undefined): ShapingTableInput {
  if (!file) return {};
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError([
      {
        path: 'DELIVERABILITY_SHAPING_FILE',
        message: `DELIVERABILITY_SHAPING_FILE ${file} cannot be read as JSON: ${(e as Error).message}`,
      },
    ]);
  }
  const r = shapingTableSchema.safeParse(raw);
  if (!r.success) {
    throw new ConfigError(
      issuesOf(r.error, '').map((i) => ({
        path: `DELIVERABILITY_SHAPING_FILE.${i.path}`,
        message: `DELIVERABILITY_SHAPING_FILE ${file}: ${i.path}: ${i.message}`,
      })),
    );
  }
  return r.data;
}

function pick(layer: ShapingTableInput | undefined, provider: Provider): PairLimitsInput[] {
  if (!layer) return [];
  const own = layer.providers?.[provider];
  const other = provider.startsWith('other:') ? layer.providers?.other : undefined;
  return [layer.default ?? {}, other ?? {}, own ?? {}];
}

/** Merges the three layers for one service. */
export function resolveShaping(file: ShapingTableInput, service: ServiceShapingInput | null | undefined): ResolvedShaping {
  const layers: (ShapingTableInput | undefined)[] = [DEFAULT_SHAPING, file, service ?? undefined];
  const cache = new Map<Provider, PairLimits>();
  return {
    limitsFor(provider) {
      let hit = cache.get(provider);
      if (!hit) {
        hit = { ratePerSecond: null, concurrency: null, hourly: null, daily: null };
        for (const layer of layers) {
          for (const part of pick(layer, provider)) {
            for (const k of ['ratePerSecond', 'concurrency', 'hourly', 'daily'] as const) {
              if (part[k] !== undefined) hit[k] = part[k];
            }
          }
        }
        cache.set(provider, hit);
      }
      return hit;
    },
    adaptive: { ...DEFAULT_SHAPING.adaptive, ...file.adaptive, ...service?.adaptive },
    rules: [...(service?.rules ?? []), ...(file.rules ?? [])],
    warmup: service?.warmup ?? [],
  };
}
