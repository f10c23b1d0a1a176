/**
 * One canonical address per mailbox (issue 17). Every address that enters fairsend (contacts,
 * campaign senders, users, suppressions) goes through `canonicalEmail`, so variants of one mailbox
 * are one contact, and an unsubscribed or bounced address cannot come back as a variant:
 *
 * - NFC normalization (a precomposed and a decomposed `é` are one address);
 * - invisible code points are refused, never silently dropped: default-ignorable code points
 *   (soft hyphen U+00AD, zero-width space/joiners U+200B-U+200D, word joiner, BOM...), format
 *   characters (\p{Cf}) and bidi controls. They make two addresses look alike on screen and
 *   became the same address on the wire;
 * - the domain is converted to lowercase punycode with UTS 46 (`node:url`'s domainToASCII, the
 *   WHATWG URL host parser): `bücher.de` and `BÜCHER.de` are `xn--bcher-kva.de`. UTS 46 also maps
 *   fullwidth and other compatibility forms in the domain (`ｅxample.com` is `example.com`), which
 *   is what every resolver does with such a name anyway;
 * - a trailing dot on the domain is refused (it was accepted, then failed at send);
 * - fullwidth and other compatibility forms in the LOCAL part (`ｂob@`) are REFUSED, not mapped
 *   with NFKC: the local part belongs to the receiving server, which may not fold `ｂ` to `b`, so
 *   mapping could send to a mailbox the user did not name. The message says what to write instead.
 *
 * The local part keeps its case (RFC 5321 leaves it to the receiving server); fairsend compares
 * addresses case-insensitively (the unique index on lower(email)), as before.
 */
import { domainToASCII } from 'node:url';

export const NOT_AN_ADDRESS = 'is not a valid email address';

const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\p{Cf}\p{Bidi_Control}]/u;
// Unicode local parts are accepted (RFC 6531); spaces, control characters and specials are not.
const LOCAL = /^[^\s@\p{Cc}"<>,;:()\\[\]]{1,64}$/u;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const TLD = /^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$/;

export type CanonicalResult = { ok: true; email: string } | { ok: false; message: string };

const fail = (message: string): CanonicalResult => ({ ok: false, message });

/** The canonical form of `input` (already trimmed), or why it is refused. */
export function canonicalEmail(input: string): CanonicalResult {
  const s = input.normalize('NFC');
  if (INVISIBLE.test(s)) {
    return fail('contains an invisible character (soft hyphen, zero-width character, bidi control or similar), which is refused');
  }
  const at = s.indexOf('@');
  if (at <= 0 || at !== s.lastIndexOf('@')) return fail(NOT_AN_ADDRESS);
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  if (!LOCAL.test(local)) return fail(NOT_AN_ADDRESS);
  if (local.normalize('NFKC') !== local) {
    return fail(`has fullwidth or compatibility characters in its local part: write it as ${local.normalize('NFKC')}`);
  }
  if (domain.endsWith('.')) return fail('must not end with a dot');
  const ascii = domain.length > 0 && domain.length <= 255 ? domainToASCII(domain) : '';
  const labels = ascii.split('.');
  if (!ascii || ascii.length > 253 || labels.length < 2 || !labels.every((l) => LABEL.test(l)) || !TLD.test(labels.at(-1)!)) {
    return fail(NOT_AN_ADDRESS);
  }
  return { ok: true, email: `${local}@${ascii}` };
}

/** The key two addresses of one mailbox share: the canonical form, lower-cased; the input lower-cased when it has none. */
export function mailboxKey(email: string): string {
  const c = canonicalEmail(email.trim());
  return (c.ok ? c.email : email.trim()).toLowerCase();
}
