/**
 * Mailbox providers: which receiving organisation a recipient domain belongs to, because Gmail,
 * Microsoft and Yahoo throttle a sender across all the domains they host, not per domain.
 *
 *   1. the built-in table (BUILTIN_DOMAINS): the consumer domains that carry most of the volume;
 *   2. otherwise the domain's MX hosts (MX_PATTERNS): a company on Google Workspace has MX hosts
 *      under google.com, one on Microsoft 365 under protection.outlook.com;
 *   3. otherwise `other:<domain>`: its own scope, so one small domain never slows another.
 *
 * MX lookups go through an injectable resolver (node:dns/promises' resolveMx by default) with a
 * cache and a timeout. A lookup that fails or times out resolves to `other:<domain>` and is cached
 * for the shorter `failureTtlMs`: generation must never wait on DNS for long, and a domain that
 * is wrongly `other:` for a while is only shaped by the defaults, never lost.
 */
import { promises as dns } from 'node:dns';

export type KnownProvider = 'google' | 'microsoft' | 'yahoo' | 'apple';
/** `google`, `microsoft`, `yahoo`, `apple` or `other:<domain>`. */
export type Provider = KnownProvider | `other:${string}`;
export const KNOWN_PROVIDERS: readonly KnownProvider[] = ['google', 'microsoft', 'yahoo', 'apple'];

/**
 * Domains whose provider is known without DNS. A trailing `.*` matches any last label
 * (hotmail.co.uk, hotmail.fr: `hotmail.*` is written once per suffix family below).
 */
export const BUILTIN_DOMAINS: Readonly<Record<string, KnownProvider>> = {
  'gmail.com': 'google',
  'googlemail.com': 'google',
  'google.com': 'google',
  'outlook.com': 'microsoft',
  'hotmail.*': 'microsoft',
  'live.*': 'microsoft',
  'msn.com': 'microsoft',
  'passport.com': 'microsoft',
  'windowslive.com': 'microsoft',
  'yahoo.*': 'yahoo',
  'ymail.com': 'yahoo',
  'rocketmail.com': 'yahoo',
  'aol.*': 'yahoo',
  'aim.com': 'yahoo',
  'verizon.net': 'yahoo',
  'icloud.com': 'apple',
  'me.com': 'apple',
  'mac.com': 'apple',
};

/** MX host suffixes of each provider (matched on a label boundary). */
export const MX_PATTERNS: readonly { suffix: string; provider: KnownProvider }[] = [
  { suffix: 'google.com', provider: 'google' },
  { suffix: 'googlemail.com', provider: 'google' },
  { suffix: 'protection.outlook.com', provider: 'microsoft' },
  { suffix: 'outlook.com', provider: 'microsoft' },
  { suffix: 'hotmail.com', provider: 'microsoft' },
  { suffix: 'yahoodns.net', provider: 'yahoo' },
  { suffix: 'mail.icloud.com', provider: 'apple' },
];

// 'hotmail.*' -> family 'hotmail' covering hotmail.com, hotmail.co.uk, hotmail.fr ...
const FAMILIES = new Map(
  Object.entries(BUILTIN_DOMAINS)
    .filter(([d]) => d.endsWith('.*'))
    .map(([d, p]) => [d.slice(0, -2), p] as const),
);
/** Public suffixes a family may end in: one or two labels of letters (com, fr, co.uk, com.br). */
const FAMILY_TAIL = /^[a-z]{2,3}(\.[a-z]{2})?$/;

export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return (at >= 0 ? address.slice(at + 1) : address).trim().toLowerCase().replace(/\.$/, '');
}

/** The provider from the built-in table alone, or undefined for a domain it does not list. */
export function builtinProvider(domain: string): KnownProvider | undefined {
  const d = domainOf(domain);
  const exact = BUILTIN_DOMAINS[d];
  if (exact && !d.endsWith('*')) return exact;
  const dot = d.indexOf('.');
  if (dot <= 0) return undefined;
  const family = FAMILIES.get(d.slice(0, dot));
  return family && FAMILY_TAIL.test(d.slice(dot + 1)) ? family : undefined;
}

/** The provider of a set of MX hosts: the one that most of them belong to, or undefined. */
export function providerFromMx(hosts: readonly string[]): KnownProvider | undefined {
  const votes = new Map<KnownProvider, number>();
  for (const raw of hosts) {
    const host = raw.toLowerCase().replace(/\.$/, '');
    const hit = MX_PATTERNS.find((p) => host === p.suffix || host.endsWith(`.${p.suffix}`));
    if (hit) votes.set(hit.provider, (votes.get(hit.provider) ?? 0) + 1);
  }
  let best: KnownProvider | undefined;
  let n = 0;
  for (const [p, v] of votes) if (v > n) [best, n] = [p, v];
  return best;
}

export function otherProvider(domain: string): Provider {
  return `other:${domainOf(domain)}`;
}

export function isProvider(value: string): value is Provider {
  return (KNOWN_PROVIDERS as readonly string[]).includes(value) || /^other:[^\s@]+$/.test(value);
}

/** Looks up a domain's MX hosts; resolves to host names, or rejects. */
export type MxLookup = (domain: string) => Promise<string[]>;
export const systemMxLookup: MxLookup = async (domain) => (await dns.resolveMx(domain)).map((r) => r.exchange);

export interface ProviderResolverOptions {
  lookup?: MxLookup;
  /** How long one MX lookup may take before the domain counts as `other:` (default 2 s; 0: no lookups). */
  timeoutMs?: number;
  /** How long a found answer is kept (default 6 h). */
  ttlMs?: number;
  /** How long a failed or timed-out lookup is kept (default 5 min). */
  failureTtlMs?: number;
  /** Most domains kept; the oldest entry goes first (default 50,000). */
  maxEntries?: number;
  /** Milliseconds since the epoch; tests inject their own. */
  now?: () => number;
}

/** How a domain's provider was found: the built-in table, its MX hosts, or neither (a failed or skipped lookup). */
export type ProviderSource = 'builtin' | 'mx' | 'fallback';

/**
 * Names that never have real MX records (RFC 2606, RFC 6761): resolved to `other:` without a
 * lookup, so tests and examples never wait on DNS.
 */
const RESERVED = /(^|\.)(example\.(com|net|org)|test|example|invalid|localhost|local)$/;

export interface ProviderResolver {
  resolve(domain: string): Promise<Provider>;
  /** The provider and how it was found. */
  explain(domain: string): Promise<{ provider: Provider; source: ProviderSource }>;
  /** Resolves many domains with at most `concurrency` lookups at once. */
  resolveAll(domains: Iterable<string>, concurrency?: number): Promise<Map<string, Provider>>;
  readonly stats: { lookups: number; hits: number; failures: number };
}

export function createProviderResolver(opts: ProviderResolverOptions = {}): ProviderResolver {
  const lookup = opts.lookup ?? systemMxLookup;
  const timeoutMs = opts.timeoutMs ?? 2000;
  const ttlMs = opts.ttlMs ?? 6 * 3600_000;
  const failureTtlMs = opts.failureTtlMs ?? 5 * 60_000;
  const maxEntries = opts.maxEntries ?? 50_000;
  const now = opts.now ?? Date.now;
  const cache = new Map<string, { provider: Provider; source: ProviderSource; until: number }>();
  const pending = new Map<string, Promise<{ provider: Provider; source: ProviderSource }>>();
  const stats = { lookups: 0, hits: 0, failures: 0 };

  function remember(domain: string, provider: Provider, source: ProviderSource, ttl: number) {
    cache.delete(domain);
    cache.set(domain, { provider, source, until: now() + ttl });
    if (cache.size > maxEntries) cache.delete(cache.keys().next().value!);
  }

  async function lookUp(domain: string): Promise<{ provider: Provider; source: ProviderSource }> {
    if (timeoutMs <= 0 || RESERVED.test(domain)) return { provider: otherProvider(domain), source: 'fallback' };
    stats.lookups++;
    let timer: NodeJS.Timeout | undefined;
    try {
      const hosts = await Promise.race([
        lookup(domain),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`MX lookup for ${domain} timed out after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      const provider = providerFromMx(hosts) ?? otherProvider(domain);
      remember(domain, provider, 'mx', ttlMs);
      return { provider, source: 'mx' as const };
    } catch {
      stats.failures++;
      const provider = otherProvider(domain);
      remember(domain, provider, 'fallback', failureTtlMs);
      return { provider, source: 'fallback' as const };
    } finally {
      clearTimeout(timer);
    }
  }

  async function explain(address: string): Promise<{ provider: Provider; source: ProviderSource }> {
    const domain = domainOf(address);
    const builtin = builtinProvider(domain);
    if (builtin) return { provider: builtin, source: 'builtin' };
    const hit = cache.get(domain);
    if (hit && hit.until > now()) {
      stats.hits++;
      return { provider: hit.provider, source: hit.source };
    }
    // One lookup per domain at a time: a campaign of 10,000 recipients at acme.com asks once.
    let p = pending.get(domain);
    if (!p) {
      p = lookUp(domain).finally(() => pending.delete(domain));
      pending.set(domain, p);
    }
    return p;
  }

  const resolve = async (address: string): Promise<Provider> => (await explain(address)).provider;

  async function resolveAll(domains: Iterable<string>, concurrency = 16): Promise<Map<string, Provider>> {
    const list = [...new Set([...domains].map(domainOf))];
    const out = new Map<string, Provider>();
    let next = 0;
    const worker = async () => {
      while (next < list.length) {
        const d = list[next++]!;
        out.set(d, await resolve(d));
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, list.length) }, worker));
    return out;
  }

  return { resolve, explain, resolveAll, stats };
}
