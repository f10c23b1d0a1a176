/**
 * Mailbox providers as pure code: the built-in table, MX host patterns, and the resolver's cache,
 * timeout and failure handling with a fake MX lookup (these machines have no DNS).
 */
import {
  builtinProvider,
  createProviderResolver,
  domainOf,
  isProvider,
  providerFromMx,
  type MxLookup,
} from '../services/deliverability/providers.js';

describe('built-in domain table', () => {
  it.each([
    ['gmail.com', 'google'],
    ['GoogleMail.com', 'google'],
    ['outlook.com', 'microsoft'],
    ['hotmail.com', 'microsoft'],
    ['hotmail.co.uk', 'microsoft'],
    ['hotmail.fr', 'microsoft'],
    ['live.com', 'microsoft'],
    ['live.de', 'microsoft'],
    ['msn.com', 'microsoft'],
    ['yahoo.com', 'yahoo'],
    ['yahoo.co.jp', 'yahoo'],
    ['ymail.com', 'yahoo'],
    ['aol.com', 'yahoo'],
    ['icloud.com', 'apple'],
    ['me.com', 'apple'],
    ['mac.com', 'apple'],
    ['someone@Yahoo.FR', 'yahoo'],
  ])('%s -> %s', (domain, provider) => {
    expect(builtinProvider(domain)).toBe(provider);
  });

  it.each(['example.com', 'notgmail.com', 'gmail.com.evil.net', 'hotmail.example.org', 'yahoo', 'mail.yahoo.com.attacker.io', ''])(
    '%s is not in the table',
    (domain) => {
      expect(builtinProvider(domain)).toBeUndefined();
    },
  );

  it('reads the domain of an address, trailing dot and case folded', () => {
    expect(domainOf('Ann@Example.COM.')).toBe('example.com');
    expect(domainOf('example.com')).toBe('example.com');
  });
});

describe('MX hosts', () => {
  it('recognises the providers by their MX hosts', () => {
    expect(providerFromMx(['aspmx.l.google.com', 'alt1.aspmx.l.google.com.'])).toBe('google');
    expect(providerFromMx(['acme-com.mail.protection.outlook.com'])).toBe('microsoft');
    expect(providerFromMx(['mta5.am0.yahoodns.net'])).toBe('yahoo');
    expect(providerFromMx(['mx01.mail.icloud.com'])).toBe('apple');
    expect(providerFromMx(['SMTP.GOOGLE.COM'])).toBe('google');
  });

  it('matches on a label boundary only, and the majority wins', () => {
    expect(providerFromMx(['mx.notgoogle.com'])).toBeUndefined();
    expect(providerFromMx(['google.com.evil.net'])).toBeUndefined();
    expect(providerFromMx([])).toBeUndefined();
    expect(providerFromMx(['a.protection.outlook.com', 'b.protection.outlook.com', 'aspmx.l.google.com'])).toBe('microsoft');
  });

  it('validates provider names', () => {
    expect(isProvider('google')).toBe(true);
    expect(isProvider('other:acme.com')).toBe(true);
    expect(isProvider('other:')).toBe(false);
    expect(isProvider('gmail')).toBe(false);
  });
});

describe('provider resolver with a fake MX lookup', () => {
  const table: Record<string, string[]> = {
    'acme.com': ['acme-com.mail.protection.outlook.com'],
    'startup.io': ['aspmx.l.google.com', 'alt1.aspmx.l.google.com'],
    'self-hosted.org': ['mx.self-hosted.org'],
  };

  function fake() {
    const calls: string[] = [];
    const lookup: MxLookup = async (d) => {
      calls.push(d);
      const hosts = table[d];
      if (!hosts) throw Object.assign(new Error(`queryMx ENOTFOUND ${d}`), { code: 'ENOTFOUND' });
      return hosts;
    };
    return { calls, lookup };
  }

  it('resolves custom domains by MX, built-in ones without a lookup', async () => {
    const f = fake();
    const r = createProviderResolver({ lookup: f.lookup });
    expect(await r.resolve('bob@acme.com')).toBe('microsoft');
    expect(await r.resolve('startup.io')).toBe('google');
    expect(await r.resolve('self-hosted.org')).toBe('other:self-hosted.org');
    expect(await r.resolve('nowhere.xyz')).toBe('other:nowhere.xyz');
    expect(await r.resolve('gmail.com')).toBe('google');
    expect(f.calls).toEqual(['acme.com', 'startup.io', 'self-hosted.org', 'nowhere.xyz']);
    expect(r.stats.failures).toBe(1);
  });

  it('caches answers until their time to live, failures for the shorter one', async () => {
    const f = fake();
    let now = 1_000_000;
    const r = createProviderResolver({ lookup: f.lookup, ttlMs: 60_000, failureTtlMs: 5_000, now: () => now });
    await r.resolve('acme.com');
    await r.resolve('nowhere.xyz');
    now += 4_000;
    await r.resolve('acme.com');
    await r.resolve('nowhere.xyz');
    expect(f.calls).toEqual(['acme.com', 'nowhere.xyz']);
    expect(r.stats.hits).toBe(2);
    now += 2_000; // the failure expired, the answer did not
    await r.resolve('acme.com');
    await r.resolve('nowhere.xyz');
    expect(f.calls).toEqual(['acme.com', 'nowhere.xyz', 'nowhere.xyz']);
    now += 60_000;
    await r.resolve('acme.com');
    expect(f.calls.filter((d) => d === 'acme.com')).toHaveLength(2);
  });

  it('asks once for a domain that many recipients share, even concurrently', async () => {
    const f = fake();
    const r = createProviderResolver({ lookup: f.lookup });
    const all = await Promise.all(Array.from({ length: 50 }, (_, i) => r.resolve(`user${i}@acme.com`)));
    expect(new Set(all)).toEqual(new Set(['microsoft']));
    expect(f.calls).toEqual(['acme.com']);
  });

  it('gives up after the timeout and counts the domain as other:', async () => {
    const never: MxLookup = () => new Promise(() => undefined);
    const r = createProviderResolver({ lookup: never, timeoutMs: 20 });
    expect(await r.resolve('slow.xyz')).toBe('other:slow.xyz');
    expect(r.stats.failures).toBe(1);
  });

  it('never looks up reserved names, nor anything with lookups turned off', async () => {
    const f = fake();
    const r = createProviderResolver({ lookup: f.lookup });
    for (const d of ['a.example.com', 'example.org', 'x.test', 'host.invalid', 'localhost', 'shop.example']) {
      expect(await r.explain(d)).toEqual({ provider: `other:${d}`, source: 'fallback' });
    }
    const off = createProviderResolver({ lookup: f.lookup, timeoutMs: 0 });
    expect(await off.explain('acme.com')).toEqual({ provider: 'other:acme.com', source: 'fallback' });
    expect(await off.explain('gmail.com')).toEqual({ provider: 'google', source: 'builtin' });
    expect(f.calls).toEqual([]);
    expect(await r.explain('acme.com')).toEqual({ provider: 'microsoft', source: 'mx' });
  });

  it('evicts the oldest entry beyond maxEntries', async () => {
    const f = fake();
    const r = createProviderResolver({ lookup: f.lookup, maxEntries: 2 });
    await r.resolve('acme.com');
    await r.resolve('startup.io');
    await r.resolve('self-hosted.org');
    await r.resolve('startup.io'); // still cached
    await r.resolve('acme.com'); // evicted: asked again
    expect(f.calls).toEqual(['acme.com', 'startup.io', 'self-hosted.org', 'acme.com']);
  });

  it('resolveAll resolves distinct domains with bounded concurrency', async () => {
    let running = 0;
    let most = 0;
    const lookup: MxLookup = async (d) => {
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setImmediate(r));
      running--;
      return d.startsWith('g') ? ['aspmx.l.google.com'] : ['mx.' + d];
    };
    const r = createProviderResolver({ lookup });
    const domains = Array.from({ length: 20 }, (_, i) => (i % 2 ? `g${i}.com` : `o${i}.com`));
    const out = await r.resolveAll([...domains, ...domains, 'gmail.com'], 4);
    expect(out.size).toBe(21);
    expect(out.get('g1.com')).toBe('google');
    expect(out.get('o0.com')).toBe('other:o0.com');
    expect(out.get('gmail.com')).toBe('google');
    expect(most).toBeLessThanOrEqual(4);
  });
});
