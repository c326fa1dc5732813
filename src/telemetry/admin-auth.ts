/**
 * Who may call the mutating admin API (design.md §6): a bearer `admin.token` when one is configured;
 * without a token, only when the admin server is bound to loopback. Pure decisions, no I/O.
 *
 * Loopback-without-token must not turn every web page the operator visits into an admin client:
 * cross-site browser requests are refused (Origin / Sec-Fetch-Site, CSRF), and without a token the
 * Host header must name a loopback address (DNS rebinding).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isLoopbackHost as isLoopbackAddressOrName } from '../config/net-syntax.js';

export interface AdminRequestHeaders {
  authorization?: string | undefined;
  host?: string | undefined;
  origin?: string | undefined;
  secFetchSite?: string | undefined;
}

export type AuthDecision = { ok: true } | { ok: false; status: 401 | 403; message: string };

/** True for 127.0.0.0/8, ::1 (however written: net-syntax.ts isLoopbackHost), `localhost` and `*.localhost`. */
export function isLoopbackHost(host: string): boolean {
  return host.toLowerCase().endsWith('.localhost') || isLoopbackAddressOrName(host);
}

/** The host part of a Host header value: `[::1]:9883` -> `::1`, `localhost:9883` -> `localhost`. */
export function hostOfHostHeader(value: string): string {
  const v = value.trim();
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    // `[::1]` or `[::1]:9883`; anything else after the bracket (`[::1]evil.example`) is no loopback name.
    return end > 0 && (end === v.length - 1 || v[end + 1] === ':') ? v.slice(1, end) : v;
  }
  const colon = v.indexOf(':');
  // More than one colon without brackets: a bare IPv6 address, no port.
  if (colon >= 0 && v.indexOf(':', colon + 1) < 0) return v.slice(0, colon);
  return v;
}

/** Where a request goes: its path (no query) and the authority it names, if any. */
export interface RequestTarget {
  readonly path: string;
  readonly host: string | undefined;
}

/**
 * The origin form (`/metrics`) names its host in the Host header. The absolute form (`http://127.0.0.1:9883/metrics`)
 * must be accepted too, and then its authority is the host and the Host header is ignored (RFC 9112 §3.2.2). Its
 * path is taken as written, as an origin form's is (no dot-segment or percent normalisation). Null (a 400) for
 * anything else: `*`, another scheme, no authority, userinfo in it (RFC 9110 §4.2.4), a fragment.
 */
export function requestTarget(url: string | undefined, hostHeader: string | undefined): RequestTarget | null {
  const raw = url ?? '/';
  if (raw.includes('#')) return null;
  if (raw.startsWith('/')) return { path: raw.split('?', 1)[0]!, host: hostHeader };
  const m = /^https?:\/\/([^/?]+)(.*)$/i.exec(raw);
  if (m === null || m[1]!.includes('@')) return null;
  const rest = m[2]!;
  return { path: rest === '' || rest.startsWith('?') ? '/' : rest.split('?', 1)[0]!, host: m[1]!.toLowerCase() };
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Constant-time comparison of the presented bearer token with the configured one. */
export function bearerMatches(authorization: string | undefined, token: string): boolean {
  if (!authorization) return false;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(authorization);
  if (!m) return false;
  // Hashing first gives equal-length buffers, so the comparison time does not leak the token length.
  return timingSafeEqual(digest(m[1]!), digest(token));
}

/** A browser request from another site (CSRF). Non-browser clients send neither header. */
export function isCrossSite(h: AdminRequestHeaders): boolean {
  if (h.secFetchSite && h.secFetchSite !== 'same-origin' && h.secFetchSite !== 'none') return true;
  if (h.origin !== undefined) {
    if (!h.host) return true;
    let origin: URL;
    let host: string;
    try {
      origin = new URL(h.origin);
      // The Host header read as an authority of the same scheme, so that both drop a default port alike (the admin
      // port on 80: `Origin: http://127.0.0.1` with `Host: 127.0.0.1:80`) and compare case and IPv6 forms alike.
      host = new URL(`${origin.protocol}//${h.host.trim()}`).host;
    } catch {
      return true; // `null` (sandboxed frames, file://) and garbage
    }
    return origin.protocol !== 'http:' && origin.protocol !== 'https:' ? true : origin.host !== host;
  }
  return false;
}

export function authorizeAdmin(h: AdminRequestHeaders, opts: { token: string | null; loopbackBind: boolean }): AuthDecision {
  if (isCrossSite(h)) return { ok: false, status: 403, message: 'cross-site requests are not allowed' };
  if (opts.token !== null) {
    return bearerMatches(h.authorization, opts.token)
      ? { ok: true }
      : { ok: false, status: 401, message: 'a valid bearer token is required' };
  }
  if (!opts.loopbackBind) {
    return { ok: false, status: 403, message: 'the admin API needs admin.token when admin.bind is not loopback' };
  }
  if (!h.host || !isLoopbackHost(hostOfHostHeader(h.host))) {
    return { ok: false, status: 403, message: 'without admin.token the admin API answers only to a loopback Host' };
  }
  return { ok: true };
}
