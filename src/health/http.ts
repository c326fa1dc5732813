/**
 * HTTP probe: GET the server's health URL (EMQX availability_check, HiveMQ readiness, ...), 2xx = up.
 * One undici Client per probe, destroyed at its end: a fresh connection each time (no keep-alive, so a dead
 * listener cannot hide behind a pooled connection), every undici timeout at the probe timeout, and nothing dialled
 * after the end (an Agent's client dials again after an aborted request, nodejs/undici#5845: a health audit counted
 * one empty connection per timed-out probe).
 */
import { Client } from 'undici';
import { lookupServerName } from '../proxy/server-name-cache.js';
import { ABORTED_DETAIL, elapsedSince, errorDetail, type ProbeOutcome } from './probe-outcome.js';

export interface HttpTarget {
  url: string;
}

export interface HttpProbeOptions {
  timeout: number; // ms, whole request: connect, headers and body
}

/** Response bodies are read and thrown away, up to this much; more closes the connection. */
const MAX_BODY_BYTES = 64 * 1024;

/**
 * undici's own timeouts are set this much past the probe's deadline, which is the one that decides: undici 7 runs its
 * headers and body timeouts on coarse timers (a 499 ms tick) that can fire up to half a second early, and an early one
 * made a silent server's timeout read as no connection (a re-audit: 2 of 8 probes at 800 ms), or let a 200 whose body
 * stalled pass as ok (its error is swallowed with the body).
 */
const UNDICI_TIMEOUT_MARGIN_MS = 1000;

function probeClient(origin: string, timeoutMs: number): Client {
  const undiciTimeout = timeoutMs + UNDICI_TIMEOUT_MARGIN_MS;
  return new Client(origin, {
    // The sessions' cache of the name (a resolver outage holds the last answer, as for the sessions).
    connect: { timeout: undiciTimeout, lookup: lookupServerName },
    headersTimeout: undiciTimeout,
    bodyTimeout: undiciTimeout,
    pipelining: 0, // undici: 0 disables keep-alive
  });
}

/** `healthUrl` if the server has one, else http://<host>:<health.http.port><health.http.path>. */
export function healthUrlFor(server: { host: string; healthUrl: string | null }, http: { port: number; path: string }): string {
  if (server.healthUrl) return server.healthUrl;
  const host = server.host.includes(':') ? `[${server.host}]` : server.host;
  const path = http.path.startsWith('/') ? http.path : `/${http.path}`;
  return `http://${host}:${http.port}${path}`;
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

function errorCodes(err: unknown): string[] {
  const codes: string[] = [];
  // undici may wrap the socket error; look down the cause chain (bounded).
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
    e = (e as { cause?: unknown }).cause;
  }
  return codes;
}

const HEADERS = { 'user-agent': 'mqtt-lb-health' };

/**
 * Percent-decoded where it is valid percent-encoding (UTF-8 runs of `%XX`), as written elsewhere: a bare `%` in a
 * password stays a `%`, and the rest of it is still decoded.
 */
function decodeLeniently(text: string): string {
  return text.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      return run;
    }
  });
}

/**
 * Credentials in the URL (`http://user:pw@host/...`) become a Basic Authorization header, as curl and
 * browsers send them; undici sends none for them (a broker API answered 401 and the server went down).
 */
export function requestParts(url: string): { url: string; headers: Record<string, string> } {
  const at = url.indexOf('@');
  if (at < 0) return { url, headers: HEADERS };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { url, headers: HEADERS };
  }
  if (u.username === '' && u.password === '') return { url, headers: HEADERS };
  const credentials = `${decodeLeniently(u.username)}:${decodeLeniently(u.password)}`;
  u.username = '';
  u.password = '';
  return { url: u.toString(), headers: { ...HEADERS, authorization: `Basic ${Buffer.from(credentials, 'utf8').toString('base64')}` } };
}

export async function probeHttp(target: HttpTarget, opts: HttpProbeOptions, signal?: AbortSignal): Promise<ProbeOutcome> {
  const startedAt = performance.now();
  if (signal?.aborted) return { result: 'error', durationMs: 0, detail: ABORTED_DETAIL };
  // One deadline over the whole exchange (undici's own timeouts are per phase).
  const deadline = new AbortController();
  let client: Client | null = null;
  let connected = false;
  // Destroying the client also ends a connect in progress, which undici's abort does not (a host dropping SYNs).
  const stop = (): void => {
    deadline.abort();
    void client?.destroy().catch(() => undefined);
  };
  const timer = setTimeout(stop, opts.timeout);
  signal?.addEventListener('abort', stop, { once: true });
  try {
    const { url, headers } = requestParts(target.url);
    const { origin, pathname, search } = new URL(url);
    client = probeClient(origin, opts.timeout);
    // A timeout after this is the server's (slow), not this host's path (checker.ts, the recheck after an outage). For
    // https undici says so once the TLS handshake is done: a server stalled in it reads as `no connection or TLS
    // handshake` (retried inside the recheck's window, bounded, rather than judged at once).
    client.once('connect', () => (connected = true));
    const res = await client.request({ method: 'GET', path: `${pathname}${search}`, signal: deadline.signal, headers });
    // Always consume the body, or the connection (and its socket) is held until GC.
    await res.body.dump({ limit: MAX_BODY_BYTES }).catch(() => undefined);
    const durationMs = elapsedSince(startedAt);
    if (signal?.aborted) return { result: 'error', durationMs, detail: ABORTED_DETAIL };
    // The deadline covers the body too: a 200 whose body stalls past it is a timeout, not ok.
    if (deadline.signal.aborted) return { result: 'timeout', durationMs, detail: `body not complete within ${opts.timeout} ms`, connected: true };
    if (res.statusCode >= 200 && res.statusCode < 300) return { result: 'ok', durationMs };
    return { result: 'http_status', durationMs, detail: `HTTP ${res.statusCode}` };
  } catch (err) {
    const durationMs = elapsedSince(startedAt);
    if (signal?.aborted) return { result: 'error', durationMs, detail: ABORTED_DETAIL };
    if (deadline.signal.aborted) {
      if (connected) return { result: 'timeout', durationMs, detail: `no answer within ${opts.timeout} ms`, connected: true };
      return { result: 'timeout', durationMs, detail: `no connection${/^https:/i.test(target.url) ? ' or TLS handshake' : ''} within ${opts.timeout} ms` };
    }
    const codes = errorCodes(err);
    if (codes.includes('ECONNREFUSED')) return { result: 'refused', durationMs, detail: 'ECONNREFUSED' };
    if (codes.some((c) => TIMEOUT_CODES.has(c))) return { result: 'timeout', durationMs, detail: codes[0]!, ...(connected ? { connected: true } : {}) };
    return { result: 'error', durationMs, detail: codes[0] ?? errorDetail(err) };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', stop);
    void client?.destroy().catch(() => undefined);
  }
}
