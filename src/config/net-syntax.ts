/**
 * Strict syntax checks for the network values of lb.yaml: host:port, IPs, CIDRs, interface names, URLs.
 * Strict because some of these end up as arguments of `ip` and `arping`: a value that starts with `-`
 * or carries shell metacharacters must never get that far (reliability cases 83-84).
 */
import { isIP, isIPv4, isIPv6, SocketAddress } from 'node:net';
import type { HostPort } from './types.js';

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

// RFC 1123 labels; the last label may not be all digits, so "1.2.3" is not taken for a name.
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const HOSTNAME_RE = new RegExp(`^(?:${LABEL}\\.)*${LABEL}\\.?$`);

export function isHostname(s: string): boolean {
  if (s.length > 253 || !HOSTNAME_RE.test(s)) return false;
  const labels = s.replace(/\.$/, '').split('.');
  return !/^\d+$/.test(labels[labels.length - 1]!);
}

/** "0.0.0.0:1883", "[::]:1883", "broker-1.example:1883"; the host of an IPv6 address comes back unbracketed. */
export function parseHostPortDetailed(s: string): Parsed<HostPort> {
  let host: string;
  let portText: string;
  const words = s.trim().split(/\s+/);
  if (words.length > 1) {
    // HAProxy's `bind 0.0.0.0:8883 ssl crt ...`: its options are keys of the listener here.
    const options = words.slice(1).map((w) => w.toLowerCase());
    const note = options.includes('ssl') || options.includes('crt')
      ? ': TLS is the listener\'s `tls` (`cert`, `key`)'
      : options.includes('accept-proxy')
        ? ': the PROXY protocol is the listener\'s `acceptProxyProtocol`'
        : '';
    return { ok: false, error: `\`${s}\`: write host:port alone, \`${words[0]}\`${note}` };
  }
  if (s.startsWith('[')) {
    const m = /^\[([^\]]*)\]:([^:]*)$/.exec(s);
    if (m === null) return { ok: false, error: `\`${s}\` is not host:port (IPv6 is written \`[::1]:1883\`)` };
    host = m[1]!;
    portText = m[2]!;
    if (!isIPv6(host)) return { ok: false, error: `\`${host}\` in brackets is not an IPv6 address` };
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) {
      // HAProxy's `bind :1883` habit, or a port alone: the host is what is missing.
      if (/^\d+$/.test(s)) return { ok: false, error: `\`${s}\` has no host: write host:port, e.g. \`0.0.0.0:${s}\` (every IPv4 address) or \`127.0.0.1:${s}\`` };
      return { ok: false, error: `\`${s}\` has no port: write host:port, e.g. \`${s}:1883\`` };
    }
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (host.includes(':')) {
      // `tcp://host:1883`, `mqtt://...`: a URL, not host:port.
      const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(s);
      if (scheme !== null) return { ok: false, error: `\`${s}\` is a URL: write host:port without \`${scheme[1]}://\`, e.g. \`${s.slice(scheme[0].length).replace(/\/.*$/, '')}\`` };
      if (isIPv6(host)) return { ok: false, error: `\`${s}\`: an IPv6 address needs brackets, e.g. \`[${host}]:${portText}\`` };
      if (s.includes(',')) return { ok: false, error: `\`${s}\` holds several addresses: write one host:port` };
      return { ok: false, error: `\`${s}\` is not host:port: too many \`:\` (IPv6 is written \`[::1]:1883\`)` };
    }
    if (host === '') return { ok: false, error: `\`${s}\` has no host: write host:port, e.g. \`0.0.0.0${s}\`` };
    if (host === '*') return { ok: false, error: `\`*\` (HAProxy's "every address") is written \`0.0.0.0:${portText}\` here (\`[::]:${portText}\` for IPv6 too)` };
    if (!isIPv4(host) && !isHostname(host)) {
      return { ok: false, error: `\`${host}\` is neither an IPv4 address nor a host name` };
    }
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    return { ok: false, error: `port \`${portText}\` must be an integer between 1 and 65535` };
  }
  return { ok: true, value: { host, port: Number(portText) } };
}

/** Contract signature: null when `s` is not a valid host:port. */
export function parseHostPort(s: string): HostPort | null {
  const r = parseHostPortDetailed(s);
  return r.ok ? r.value : null;
}

/**
 * `localhost`, 127.0.0.0/8 and ::1, however written: `0:0:0:0:0:0:0:1`, `::ffff:127.0.0.1`, `::ffff:7f00:1` (an IPv6
 * audit: the config refused those as admin binds without a token, and the admin port's Host check turned them away).
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  const c = canonicalHost(h);
  return c === '::1' || (isIPv4(c) && c.startsWith('127.'));
}

export function isWildcardHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

/** An address as the kernel binds it: IPv6 in canonical form ([0:0::1] is ::1), IPv4-mapped IPv6 as IPv4. */
export function canonicalHost(host: string): string {
  if (!isIPv6(host)) return host;
  const canonical = new SocketAddress({ address: host, family: 'ipv6' }).address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(canonical);
  return mapped !== null ? mapped[1]! : canonical;
}

/** Two binds that cannot both be made: one port, and one address or a wildcard on either side (names as written). */
export function bindsCollide(a: HostPort, b: HostPort): boolean {
  if (a.port !== b.port) return false;
  const [x, y] = [canonicalHost(a.host), canonicalHost(b.host)];
  return x === y || isWildcardHost(x) || isWildcardHost(y);
}

/** bindsCollide, or one port with a host name on either side (it may resolve onto the other address). */
export function bindsMayCollide(a: HostPort, b: HostPort): boolean {
  return bindsCollide(a, b) || (a.port === b.port && (isIP(a.host) === 0 || isIP(b.host) === 0));
}

export interface Cidr {
  address: string;
  prefix: number;
  family: 4 | 6;
}

/** "10.0.0.0/8", "2001:db8::/32"; a bare address means a single host (/32, /128). */
export function parseCidr(s: string): Parsed<Cidr> {
  const slash = s.indexOf('/');
  const address = slash < 0 ? s : s.slice(0, slash);
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : 0;
  if (family === 0) return { ok: false, error: `\`${s}\` is not an IP address or CIDR (e.g. \`10.0.0.0/8\`)` };
  const max = family === 4 ? 32 : 128;
  if (slash < 0) return { ok: true, value: { address, prefix: max, family } };
  const prefixText = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
    return { ok: false, error: `prefix \`/${prefixText}\` must be between 0 and ${max}` };
  }
  return { ok: true, value: { address, prefix: Number(prefixText), family } };
}

export function formatCidr(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

function ipv4Octets(a: string): number[] {
  return a.split('.').map(Number);
}

export function isIPv4Multicast(a: string): boolean {
  if (!isIPv4(a)) return false;
  const first = ipv4Octets(a)[0]!;
  return first >= 224 && first <= 239;
}

/**
 * A virtual IP: an IPv4 unicast address with a prefix of 1..32 (a bare address means /32).
 * Returned normalized as "a.b.c.d/n", the form `ip addr add` receives.
 */
export function parseVip(s: string): Parsed<string> {
  const slash = s.indexOf('/');
  const address = slash < 0 ? s : s.slice(0, slash);
  if (isIPv6(address)) return { ok: false, error: 'IPv6 VIPs are not supported yet' };
  const c = parseCidr(s);
  if (!c.ok) return { ok: false, error: `\`${s}\` is not an IPv4 address with a prefix (e.g. \`192.0.2.10/24\`)` };
  if (c.value.prefix < 1) return { ok: false, error: `prefix \`/${c.value.prefix}\` must be between 1 and 32` };
  const first = ipv4Octets(c.value.address)[0]!;
  if (first === 0 || first === 127 || first >= 224) {
    return { ok: false, error: `\`${c.value.address}\` cannot be a VIP (unspecified, loopback, multicast or reserved)` };
  }
  // A host address: not the network or broadcast address of its own prefix (a /31 or /32 has neither).
  const { prefix } = c.value;
  if (prefix <= 30) {
    const n = ipv4Octets(c.value.address).reduce((acc, o) => acc * 256 + o, 0);
    const hostBits = 2 ** (32 - prefix);
    const host = n % hostBits;
    if (host === 0 || host === hostBits - 1) {
      return { ok: false, error: `\`${s}\` is the ${host === 0 ? 'network' : 'broadcast'} address of its /${prefix}: a VIP is a host address (e.g. \`192.0.2.10/24\`)` };
    }
  }
  return { ok: true, value: formatCidr(c.value) };
}

// Linux refuses `/`, `:` and whitespace in an interface name and more than 15 bytes (dev_valid_name; `eth0:1`
// is an address label, not a device `ip` or `arping` can use); we accept only what cannot be read as an option
// or shell syntax either, nor as iproute2's `help` (reference catalogue #84). The one definition: `mqtt-lb check`
// and the failover code at start (ipv4.ts) agree.
export const INTERFACE_RE = /^(?!help$)[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;

export function isInterfaceName(s: string): boolean {
  return INTERFACE_RE.test(s);
}

/**
 * A health URL: absolute http(s) with a host. Its credentials (an EMQX API key) never appear in a message, in its
 * user information or in its query string.
 */
export function parseHttpUrl(s: string): Parsed<string> {
  // Quoted only in a refusal, so a text that may not parse: everything up to its last `@` is masked, whatever it holds
  // (a space, a tab, an unencoded `/`, `?` or `#` in a password: the re-audits found each quoted), a path's `@` too.
  const shown = urlForLog(s.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^]*@/, (_m, scheme: string | undefined) => `${scheme ?? ''}***@`));
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return { ok: false, error: `\`${shown}\` is not a URL (e.g. \`http://10.0.0.11:18083/api/v5/status\`)` };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return { ok: false, error: `\`${shown}\` must be an http:// or https:// URL` };
  }
  if (url.hostname === '') return { ok: false, error: `\`${shown}\` has no host` };
  // The URL parser drops tabs and line breaks anywhere (`http://\t/h` is `http:///h`: a re-audit) and spaces and
  // control characters at either end (another): none belongs in a URL (a space inside is written %20).
  if (/[\u0000-\u0020\u007f]/.test(s)) {
    const escaped = shown.replace(/[\u0000-\u001f\u007f]/g, (c) => (c === '\t' ? '\\t' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
    return { ok: false, error: `\`${escaped}\` holds a space, a tab, a line break or another control character: write the URL without them (a space as %20)` };
  }
  // It reads `http:///s`, `http:/s`, `http:s` and `http:\\s` as host `s` (special schemes skip any slashes): a slip
  // that would probe a host nobody wrote. Exactly `//` and the authority, as curl wants.
  if (!/^https?:\/\/[^/\\\s]/i.test(s)) {
    return { ok: false, error: `\`${shown}\` must be written \`${url.protocol}//HOST[:PORT]/PATH\`: two slashes, then the host` };
  }
  // Port 0 parses (WHATWG keeps it) but nothing listens there: every probe would fail, the server never come up.
  if (url.port === '0') return { ok: false, error: `\`${shown}\` has port 0: give the port the broker's HTTP API listens on` };
  return { ok: true, value: s };
}

/**
 * `scheme://user:password@host/...` with the user information masked, as written (the text may not parse as a URL:
 * a typo in the port is when a key would otherwise land in the journal or a CI log; a security audit).
 */
export function withoutCredentials(s: string): string {
  // With its scheme or without one (`user:key@host:18083/...`, which is refused for that very reason).
  return s.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^/?#]*@/, (_m, scheme: string | undefined) => `${scheme ?? ''}***@`);
}

/**
 * A URL, or a text holding URLs (a probe target: `address url`), for a message or a log line: user information and
 * every query parameter's value masked (`?token=***`: an API key passed as a parameter; an audit found one in the
 * journal), the parameters' names kept.
 */
export function urlForLog(s: string): string {
  return (
    s
      .replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^/?#\s]*@/, (_m, scheme: string | undefined) => `${scheme ?? ''}***@`)
      .replace(/(https?:\/\/)[^/?#\s]*@/gi, '$1***@')
      // Path parameters (`/status;token=...`, `/status;KEY`) too, to the next delimiter, whitespace included.
      .replace(/;([^;=/?#]*)(=[^;/?#]*)?/g, (_m, name: string, value: string | undefined) => (value === undefined ? (name === '' ? ';' : ';***') : `;${name}=***`))
      // The query to the fragment, whitespace included: the URL parser drops a tab and encodes a space, so a
      // value is not over where they stand (a URL is the last thing in a probe target).
      .replace(/\?[^#]*/g, (query) => query.replace(/([?&])([^&=]*)(=[^&]*)?/g, (_m, sep: string, name: string, value: string | undefined) => (value === undefined ? (name === '' ? sep : `${sep}***`) : `${sep}${name}=***`)))
  );
}
