/**
 * `mqtt-lb status [--admin URL]`: fetch /api/status from a running instance and print it as text.
 */
import { isIPv6 } from 'node:net';
import { request, type Dispatcher } from 'undici';
import type { StatusJson, StatusLastCheck } from './status-json.js';
import { INVISIBLE_FORMAT_CHARACTERS } from './unsafe-text.js';

export type { StatusJson } from './status-json.js';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9883';
const DEFAULT_ADMIN_PORT = '9883';
const FETCH_TIMEOUT_MS = 5_000;
/** Our status document is ~200 bytes per server (500 servers: ~100 KiB): far more is another program's answer. */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

class AnswerTooLarge extends Error {}

/** `127.0.0.1:9883`, `http://host:9883`, `http://host:9883/prefix/` -> the /api/status URL. */
export function statusUrl(written: string): URL {
  // A bare IPv6 address (`--admin ::1`) cannot be host:port: the host, bracketed (an IPv6 audit found it refused).
  const adminUrl = isIPv6(written) ? `[${written}]` : written;
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(adminUrl);
  const withScheme = hasScheme ? adminUrl : `http://${adminUrl}`;
  let base: URL;
  try {
    base = new URL(withScheme);
  } catch {
    throw new Error(`not an admin URL: ${written} (e.g. http://127.0.0.1:9883, 127.0.0.1:9883 or [::1]:9883)`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new Error(`not an admin URL: ${written} (the admin server speaks http: or https:, e.g. http://127.0.0.1:9883)`);
  }
  // A bare host (`--admin 10.0.0.5`) means the admin server's default port, not http's 80; a URL with a scheme is
  // taken as written (a reverse proxy on port 80 or 443).
  if (!hasScheme && !/^(\[[^\]]*\]|[^/[\]:]*):/.test(adminUrl)) base.port = DEFAULT_ADMIN_PORT;
  // The endpoint itself given (`--admin http://h:9883/api/status`, as curl would be): taken as it is.
  if (/\/api\/status\/?$/.test(base.pathname)) {
    base.pathname = base.pathname.replace(/\/$/, ''); // /api/ready beside it (fetchReadiness)
    return base;
  }
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  return new URL('api/status', base);
}

export async function fetchStatus(adminUrl: string = DEFAULT_ADMIN_URL, timeoutMs: number = FETCH_TIMEOUT_MS): Promise<StatusJson> {
  const url = statusUrl(adminUrl);
  let statusCode: number;
  let text: string;
  try {
    const res = await request(url, {
      method: 'GET',
      headers: { accept: 'application/json' },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
    statusCode = res.statusCode;
    text = await textUpTo(res.body, MAX_ANSWER_BYTES);
  } catch (err) {
    if (err instanceof AnswerTooLarge) throw new Error(`${url.href} answered more than ${MAX_ANSWER_BYTES / 2 ** 20} MiB: not an mqtt-lb status document`);
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot reach the mqtt-lb admin server at ${url.href}: ${why}`, { cause: err });
  }
  if (statusCode !== 200) throw new Error(`${url.href} answered HTTP ${statusCode}${answerExcerpt(text)}`);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new Error(`${url.href} did not answer JSON`, { cause: err });
  }
  if (!looksLikeStatus(body)) throw new Error(`${url.href} did not answer an mqtt-lb status document`);
  return body;
}

/** The body as text, or AnswerTooLarge once it passes `max` bytes (the rest is not read). */
async function textUpTo(body: Dispatcher.ResponseData['body'], max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) {
      body.destroy();
      throw new AnswerTooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total).toString('utf8');
}

function looksLikeStatus(v: unknown): v is StatusJson {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o.version === 'string' &&
    typeof o.uptimeSeconds === 'number' &&
    typeof o.failover === 'object' &&
    o.failover !== null &&
    Array.isArray(o.listeners) &&
    Array.isArray(o.pools)
  );
}

export function formatDuration(seconds: number): string {
  // Not a duration our server sends (a wrong endpoint): shown as it came.
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds > 1e10) return `${printable(seconds)}s`;
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function formatAge(ms: number): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return `${printable(ms)} ago`;
  if (ms < 1000) return `${ms}ms ago`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s ago`;
  return `${formatDuration(ms / 1000)} ago`;
}

function formatCheck(c: StatusLastCheck | null): string {
  if (c === null || c === undefined) return 'never';
  if (typeof c !== 'object') return printable(c);
  return `${printable(c.result)} ${printable(c.durationMs)}ms, ${formatAge(c.ageMs)}`;
}

/**
 * Text from the admin server, made safe for a terminal: control characters (ESC sequences could retitle the window,
 * clear the screen or hide lines) are shown as `\xNN`, and the invisible format characters (bidirectional-text
 * controls that reorder what a line shows, zero-width spaces, line and paragraph separators, BOMs) as `\u{NNNN}`.
 * Our own server never sends them; a wrong or intercepted endpoint (plain HTTP) could, and it could send a number or
 * an object where text belongs (shown as text, not a crash).
 */
export function printable(value: unknown): string {
  const text = typeof value === 'string' ? value : value === null || value === undefined ? '-' : typeof value === 'object' ? JSON.stringify(value) : String(value);
  return text
    .replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
    .replace(INVISIBLE_FORMAT_CHARACTERS, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}

/** Left-aligned columns, numeric columns right-aligned, two spaces apart. */
function table(cells: string[][], numeric: ReadonlySet<number> = new Set()): string {
  const rows = cells.map((r) => r.map(printable));
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function role(s: StatusJson): string {
  if (!s.failover.enabled) return 'standalone (failover off)';
  const states = s.failover.instances.map((i) => i.state);
  return new Set(states).size <= 1 ? (states[0] ?? 'init') : states.join('/');
}

/** What /readyz answered: whether the instance takes clients, and why not. */
export type Readiness = { ok: true } | { ok: false; reason: string };

/** /api/ready (/readyz as JSON) of the same admin server; null when it gave no usable answer (the status shows all the same). */
export async function fetchReadiness(adminUrl: string = DEFAULT_ADMIN_URL, timeoutMs: number = FETCH_TIMEOUT_MS): Promise<Readiness | null> {
  const text = await optionalText(new URL('ready', statusUrl(adminUrl)), timeoutMs);
  try {
    const body = text === null ? null : (JSON.parse(text) as { ready?: unknown; reason?: unknown });
    if (body?.ready === true) return { ok: true };
    return body?.ready === false && typeof body.reason === 'string' ? { ok: false, reason: body.reason } : null;
  } catch {
    return null;
  }
}

/** A 200 answer's text from a page beside the status (what the status shows all the same without); null otherwise. */
async function optionalText(url: URL, timeoutMs: number): Promise<string | null> {
  try {
    const res = await request(url, { method: 'GET', headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return null;
    }
    return await textUpTo(res.body, MAX_ANSWER_BYTES);
  } catch {
    return null;
  }
}

/** With `workers` > 1: the proxy workers serving now, and how many were started again after one exited. */
export interface WorkersView {
  serving: number;
  restarts: number;
}

/**
 * The workers as /metrics says (`mqtt_lb_workers`, `mqtt_lb_worker_restarts_total`: exported with `workers` > 1 only;
 * /api/status keeps the contract's keys); null with one process, or without a usable answer.
 */
export async function fetchWorkers(adminUrl: string = DEFAULT_ADMIN_URL, timeoutMs: number = FETCH_TIMEOUT_MS): Promise<WorkersView | null> {
  const text = await optionalText(new URL('../metrics', statusUrl(adminUrl)), timeoutMs);
  if (text === null) return null;
  const serving = /^mqtt_lb_workers (\d+)$/m.exec(text);
  const restarts = /^mqtt_lb_worker_restarts_total (\d+)$/m.exec(text);
  return serving === null ? null : { serving: Number(serving[1]), restarts: restarts === null ? 0 : Number(restarts[1]) };
}

/** The terminal view of a status document (and of /readyz and the workers, when known). */
export function formatStatus(s: StatusJson, readiness: Readiness | null = null, workers: WorkersView | null = null): string {
  const out: string[] = [];
  const ready = readiness === null ? '' : readiness.ok ? '  ready' : `  NOT READY: ${readiness.reason}`;
  const serving = workers === null ? '' : `  workers ${workers.serving} serving${workers.restarts > 0 ? `, ${workers.restarts} restarted` : ''}`;
  out.push(printable(`mqtt-lb ${s.version}  up ${formatDuration(s.uptimeSeconds)}  role ${role(s)}${serving}${ready}`));

  if (s.failover.enabled) {
    out.push('', 'FAILOVER');
    out.push(
      table([
        ['ROUTER', 'STATE', 'PRIORITY', 'VIPS', 'PEER', 'PEER STATE', 'LAST ADVERT'],
        ...s.failover.instances.map((i) => [
          String(i.routerId),
          i.state,
          String(i.priority),
          i.vips.join(',') || '-',
          i.peer?.address ?? '-',
          i.peer?.state ?? '-',
          i.peer ? formatAge(i.peer.lastAdvertAgeMs) : '-',
        ]),
      ]),
    );
  }

  out.push('', 'LISTENERS');
  out.push(
    table(
      [['NAME', 'BIND', 'TLS', 'SESSIONS'], ...s.listeners.map((l) => [l.name, l.bind, l.tls ? 'yes' : 'no', String(l.sessions)])],
      new Set([3]),
    ),
  );

  for (const p of s.pools) {
    const up = p.servers.filter((x) => x.state === 'up').length;
    out.push('', printable(`POOL ${p.name}  ${p.balance}  ${up}/${p.servers.length} up`));
    out.push(
      table(
        [
          ['SERVER', 'ADDRESS', 'STATE', 'ADMIN', 'WEIGHT', 'SESSIONS', 'LAST CHECK'],
          ...p.servers.map((x) => [
            x.backup ? `${x.name} (backup)` : x.name,
            x.address,
            x.state,
            x.admin,
            String(x.weight),
            String(x.sessions),
            formatCheck(x.lastCheck),
          ]),
        ],
        new Set([4, 5]),
      ),
    );
  }
  return `${out.join('\n')}\n`;
}

/**
 * What an error answer said, on one line: our admin server answers one line of text; another server (a wrong
 * port) may answer a whole HTML page, which is no use on a terminal.
 */
function answerExcerpt(text: string): string {
  if (/^\s*</.test(text)) return ' (an HTML page: is this the admin port of mqtt-lb?)';
  const line = printable(text.replace(/\s+/g, ' ').trim());
  if (line === '') return '';
  return `: ${line.length > 160 ? `${line.slice(0, 160)}...` : line}`;
}
