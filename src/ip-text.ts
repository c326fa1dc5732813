/**
 * IP addresses as text and bytes: IPv6 parsing and its canonical form (RFC 5952, as Node reports socket addresses),
 * IPv4-mapped addresses, the network of an address under a prefix. Shared by the PROXY protocol, the config's CIDR
 * checks and the log lines' client addresses.
 */
import net from 'node:net';

/** 4 bytes at `at` → dotted quad. */
export function formatIPv4(b: Uint8Array, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/** IPv6 text (with optional "::" and trailing dotted quad) → 16 bytes, or null. Zone ids are refused. */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.includes('%') || !net.isIPv6(text)) return null;
  const words: number[] = [];
  const tailWords: number[] = [];
  const gap = text.indexOf('::');
  const head = gap < 0 ? text : text.slice(0, gap);
  const tail = gap < 0 ? '' : text.slice(gap + 2);
  if (!pushGroups(head, words) || !pushGroups(tail, tailWords)) return null;
  const missing = 8 - words.length - tailWords.length;
  if (gap < 0 ? missing !== 0 : missing < 1) return null;
  for (let i = 0; i < missing; i++) words.push(0);
  words.push(...tailWords);
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = words[i]! >> 8;
    out[2 * i + 1] = words[i]! & 0xff;
  }
  return out;
}

function pushGroups(s: string, words: number[]): boolean {
  if (s === '') return true;
  for (const g of s.split(':')) {
    if (g.includes('.')) {
      if (!net.isIPv4(g)) return false;
      const [a, b, c, d] = g.split('.').map(Number) as [number, number, number, number];
      words.push((a << 8) | b, (c << 8) | d);
    } else {
      if (!/^[0-9A-Fa-f]{1,4}$/.test(g)) return false;
      words.push(parseInt(g, 16));
    }
  }
  return true;
}

/**
 * 16 bytes → text as Node reports socket addresses (inet_ntop style, RFC 5952 lowercase, longest zero
 * run of 2+ compressed, leftmost on ties, ::ffff:a.b.c.d and ::a.b.c.d with a dotted quad).
 */
export function formatIPv6(b: Uint8Array, at: number): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((b[at + 2 * i]! << 8) | b[at + 2 * i + 1]!);
  let bestBase = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestBase = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestBase = -1;
  if (bestBase === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
    return `${bestLen === 5 ? '::ffff:' : '::'}${formatIPv4(b, at + 12)}`;
  }
  let s = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestBase) {
      s += '::';
      i += bestLen - 1;
      continue;
    }
    if (s !== '' && !s.endsWith(':')) s += ':';
    s += words[i]!.toString(16);
  }
  return s;
}

/** IPv6 text in the form Node reports (formatIPv6), or null when not IPv6 (or with a zone id). */
export function canonicalIPv6(text: string): string | null {
  const bytes = parseIPv6(text);
  return bytes === null ? null : formatIPv6(bytes, 0);
}

/** 16 bytes of `::ffff:a.b.c.d`. */
export function isIPv4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * An IPv4 host as a dual-stack (`[::]`) listener reports it, `::ffff:a.b.c.d`, as `a.b.c.d`; anything else as given.
 * One spelling per client: the per-source limits, `exempt` and the PROXY header sent on treat both as one IPv4 host.
 */
export function unmappedIPv4(address: string): string {
  return address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}

/**
 * The network address of `address` (IPv6, no zone) under `prefix`, canonical (`fd00::1`, 64 -> `fd00::`); null when
 * not an IPv6 address.
 */
export function ipv6Network(address: string, prefix: number): string | null {
  const bytes = parseIPv6(address);
  if (bytes === null) return null;
  for (let bit = Math.max(0, prefix); bit < 128; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return formatIPv6(bytes, 0);
}
