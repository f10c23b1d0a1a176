/**
 * nodemailer's header-key normalization, remembered per key.
 *
 * nodemailer's MIME builder normalizes a header's name (`_normalizeHeaderKey`: strip what a field
 * name cannot hold, lower-case it, then four regular expressions to restore the canonical casing)
 * on every getHeader and setHeader of every node, dozens of times per message, for the same dozen
 * names. bench/mime-build.ts measures it: building and streaming a campaign message
 * (multipart/alternative, text and HTML, the List-Unsubscribe headers) cost 471 us of CPU as
 * nodemailer does it and 405 us with the normalization remembered (0.77x, a contended day on the
 * development machine); callgrind counts 2.01 against 1.63 million instructions a message. The send
 * worker thread builds every message, and it is what limits throughput (W1) and what starves a
 * fast paced service (W3 at 500 msg/s).
 *
 * The result depends on the key alone (a string function of it), so it is remembered per key, for
 * at most MAX_KEYS distinct keys (the engine's messages use about twenty; beyond
 * the bound a key is normalized as before, uncached). It reaches into nodemailer's MimeNode
 * prototype, as in nodemailer 10: when the method is not there (another nodemailer), nothing is
 * changed. test/header-keys.test.ts checks that the results are nodemailer's own for awkward keys,
 * that a whole message is byte for byte the same, and that the builder nodemailer uses has it.
 */
import MimeNode from 'nodemailer/lib/mime-node';

/** Distinct keys remembered per thread. */
export const MAX_KEYS = 1000;

type Normalize = (this: unknown, key: unknown) => string;
interface Patched extends Normalize {
  original: Normalize;
}

const proto = MimeNode.prototype as unknown as { _normalizeHeaderKey?: Normalize | Patched };

/** nodemailer's own normalization (undefined when this nodemailer has none). */
export const originalNormalize: Normalize | undefined =
  proto._normalizeHeaderKey && 'original' in proto._normalizeHeaderKey ? proto._normalizeHeaderKey.original : proto._normalizeHeaderKey;

/** Installs the remembered normalization once per thread; returns whether it is in place. */
export function rememberHeaderKeys(): boolean {
  const original = originalNormalize;
  if (typeof original !== 'function') return false;
  if (headerKeysRemembered()) return true;
  const known = new Map<string, string>();
  const remembered = function (this: unknown, key: unknown): string {
    // nodemailer's first step, so that the cache key is exactly what it normalizes.
    const k = (key || '').toString();
    let v = known.get(k);
    if (v === undefined) {
      v = original.call(this, k);
      if (known.size < MAX_KEYS) known.set(k, v);
    }
    return v;
  } as Patched;
  remembered.original = original;
  proto._normalizeHeaderKey = remembered;
  return true;
}

/** Puts nodemailer's own normalization back (bench/mime-build.ts compares the two). */
export function forgetHeaderKeys(): void {
  if (originalNormalize && headerKeysRemembered()) proto._normalizeHeaderKey = originalNormalize;
}

/** Whether the builder nodemailer uses normalizes keys through the remembered function. */
export function headerKeysRemembered(): boolean {
  return !!proto._normalizeHeaderKey && 'original' in proto._normalizeHeaderKey;
}
