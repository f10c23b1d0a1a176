/**
 * Time zone names, validated through a cache built once.
 *
 * luxon's `IANAZone.isValidZone` builds an `Intl.DateTimeFormat` on every call: about 0.15 ms and
 * 22 KB of native memory each. Run once per row of a 100,000-row import, that was 15 s of event
 * loop and 5.5 GB of RSS (issue 17). The set of valid zones is small (418 canonical names in
 * Node 20's ICU, and a few hundred aliases such as `US/Eastern` or `UTC`), and Intl compares them
 * case-insensitively, so the cache is keyed by the lower-cased name:
 *
 * - seeded once with `Intl.supportedValuesOf('timeZone')` (one call, no formatter);
 * - a name outside the seed is checked once with luxon and its answer kept: valid answers are
 *   bounded by the zone database itself; invalid ones are kept up to `MAX_REFUSED`, after which
 *   they are checked again each time (an attacker sending distinct garbage pays, the cache does
 *   not grow);
 * - anything that is not shaped like a zone name (letters, digits, `_ + - /`, 64 characters at
 *   most) is refused without asking Intl at all.
 */
import { IANAZone } from 'luxon';

const SHAPE = /^[A-Za-z0-9_+\-/]{1,64}$/;
const MAX_REFUSED = 1024;

let known: Map<string, boolean> | undefined;
let refused = 0;

function cache(): Map<string, boolean> {
  if (!known) {
    known = new Map();
    for (const z of Intl.supportedValuesOf('timeZone')) known.set(z.toLowerCase(), true);
  }
  return known;
}

/** True when `name` is an IANA time zone name (or alias) that Intl and luxon accept. */
export function isKnownZone(name: unknown): boolean {
  if (typeof name !== 'string' || !SHAPE.test(name)) return false;
  const key = name.toLowerCase();
  const map = cache();
  const hit = map.get(key);
  if (hit !== undefined) return hit;
  const valid = IANAZone.isValidZone(name);
  if (valid) map.set(key, true);
  else if (refused < MAX_REFUSED) {
    refused++;
    map.set(key, false);
  }
  return valid;
}

/** How many names the cache holds (for tests: it must stay bounded). */
export function knownZoneCacheSize(): number {
  return cache().size;
}
