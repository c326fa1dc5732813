/**
 * The admin HTTP server on `admin.bind` (design.md §6): /metrics, /healthz, /readyz, /api/status,
 * the status page at /, and the admin API POST /api/servers/<pool>/<server>/(drain|ready|maint).
 *
 * node:http with tight timeouts (a slow client cannot hold sockets: CVE-2018-12122), small headers,
 * and no request body parsing at all (the admin API needs none).
 */
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import type { AdminConfig } from '../config/types.js';
import { bindHint, ErrorCodes, MqttLbError } from '../errors.js';
import { authorizeAdmin, hostOfHostHeader, isLoopbackHost, requestTarget } from './admin-auth.js';
import { ADMIN_MAX_CONNECTIONS, AdminConnections } from './admin-connections.js';
import type { Metrics } from './metrics.js';
import type { AdminActions, TelemetrySource } from './source.js';
import { buildStatus } from './status-json.js';
import { renderStatusPage, type StatusPage } from './status-page.js';
import { RenderBudget, SharedRendering } from './shared-rendering.js';
import { RateLimitedLog } from '../failover/log.js';

const REFUSED_LOG_EVERY_MS = 10_000;

export interface AdminServerOptions {
  config: AdminConfig;
  source: TelemetrySource;
  actions: AdminActions;
  metrics: Metrics;
  log: Logger;
  /** SEND_TIMEOUT_MS unless given (tests). */
  sendTimeoutMs?: number;
}

const HEADERS_TIMEOUT_MS = 5_000;
/**
 * A connection to which nothing could be sent for this long while answers wait is closed (AdminConnections.sweepStuck): an
 * audit's scrapers that pipelined GET /metrics and never read held their answers (2.5 MB each with 1,000 servers)
 * for as long as they stayed connected, and the memory ceiling then refused every MQTT client.
 */
const SEND_TIMEOUT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
const MAX_HEADER_BYTES = 8 * 1024;
/** Node checks the two timeouts above only this often (default 30 s, which lets a slow client linger). */
const TIMEOUT_CHECK_MS = 1_000;

const ADMIN_ACTIONS = ['drain', 'ready', 'maint'] as const;
type AdminAction = (typeof ADMIN_ACTIONS)[number];

const GET_ROUTES = new Set(['/', '/metrics', '/healthz', '/readyz', '/api/status', '/api/ready']);

export class AdminServer {
  private readonly opts: AdminServerOptions;
  private readonly log: Logger;
  private readonly server: HttpServer;
  private page: StatusPage;
  private token: string | null;
  private readonly loopbackBind: boolean;
  private closing: Promise<void> | null = null;
  private readonly connections = new AdminConnections(ADMIN_MAX_CONNECTIONS);
  /** Closes connections whose answers do not move (SEND_TIMEOUT_MS). */
  private readonly stuckSweep: NodeJS.Timeout;
  /** The two answers that cost CPU to build, shared between requests (shared-rendering.ts). */
  private readonly metricsText: SharedRendering<Buffer>;
  private readonly statusText: SharedRendering<Buffer>;

  /**
   * `admin request refused` at most once per 10 s per status, with the count of those left out (`suppressed`): a
   * caller without the token retrying in a loop must not fill the log's disk.
   */
  private readonly refusedLog: RateLimitedLog;

  constructor(opts: AdminServerOptions) {
    this.opts = opts;
    this.log = opts.log.child({ component: 'admin' });
    this.refusedLog = new RateLimitedLog(this.log, REFUSED_LOG_EVERY_MS, () => performance.now());
    this.loopbackBind = isLoopbackHost(opts.config.address.host);
    this.token = opts.config.token;
    this.page = renderStatusPage({ tokenRequired: this.token !== null });
    const budget = new RenderBudget();
    // As Buffers: every answer of one build is then the same memory (a string is copied into each response).
    this.metricsText = new SharedRendering(async () => Buffer.from(await opts.metrics.text()), undefined, budget);
    this.statusText = new SharedRendering(() => Buffer.from(JSON.stringify(buildStatus(opts.source))), undefined, budget);
    this.server = createServer(
      {
        headersTimeout: HEADERS_TIMEOUT_MS,
        requestTimeout: REQUEST_TIMEOUT_MS,
        keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
        maxHeaderSize: MAX_HEADER_BYTES,
        connectionsCheckingInterval: TIMEOUT_CHECK_MS,
      },
      (req, res) => {
        const socket = req.socket;
        if (!this.connections.busy(socket)) return; // pipelining past ADMIN_MAX_PIPELINED: closed
        res.once('close', () => this.connections.done(socket));
        this.handle(req, res);
      },
    );
    this.server.on('connection', (socket: Socket) => this.connections.admit(socket));
    const sendTimeout = opts.sendTimeoutMs ?? SEND_TIMEOUT_MS;
    this.stuckSweep = setInterval(() => this.connections.sweepStuck(performance.now(), sendTimeout), Math.min(1000, sendTimeout / 4));
    this.stuckSweep.unref();
  }

  /** Binds `admin.bind`. Rejects with MqttLbError START_BIND when the address cannot be used. */
  listen(): Promise<void> {
    const { host, port } = this.opts.config.address;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        // The OS error's code, not its message: pino's serializer appends the cause's message to ours.
        const code = (err as NodeJS.ErrnoException).code;
        reject(new MqttLbError(ErrorCodes.START_BIND, `admin: cannot listen on ${this.opts.config.bind}: ${code ?? err.message}${bindHint(code, port)}`, { cause: err }));
      };
      this.server.once('error', onError);
      this.server.listen({ host, port }, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => this.log.error({ err }, 'admin server error'));
        this.log.info({ bind: this.opts.config.bind, port: this.port }, 'admin server listening');
        resolve();
      });
    });
  }

  /** The bound port (useful with port 0); 0 when not listening. */
  get port(): number {
    const a = this.server.address();
    return a && typeof a === 'object' ? (a as AddressInfo).port : 0;
  }

  /** A reload changed `admin.token` (a changed `admin.bind` needs a new AdminServer). */
  setToken(token: string | null): void {
    if (token === this.token) return;
    this.token = token;
    this.page = renderStatusPage({ tokenRequired: token !== null });
  }

  /** Stops listening and closes every connection. Idempotent. */
  close(): Promise<void> {
    clearInterval(this.stuckSweep);
    if (!this.closing) {
      this.closing = new Promise<void>((resolve) => {
        // The callback also runs (with ERR_SERVER_NOT_RUNNING) when it never listened: nothing to wait for.
        this.server.close(() => resolve());
        this.server.closeAllConnections();
      });
    }
    return this.closing;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('cache-control', 'no-store');
    res.setHeader('x-content-type-options', 'nosniff');
    const method = req.method ?? 'GET';
    // Nothing here reads a request body: discard whatever was sent so keep-alive stays usable.
    req.resume();
    // One Host only (RFC 9112 §3.2: otherwise 400); Node would keep the first.
    if ((req.headersDistinct.host?.length ?? 0) > 1) return this.send(res, 400, 'more than one Host header\n');
    const target = requestTarget(req.url, req.headers.host);
    if (target === null) return this.send(res, 400, 'the request target is not a path nor an http URL\n');
    const { path, host } = target;
    // Bound to loopback, the port is for this host's own clients: a browser request naming another host is a
    // DNS-rebinding page reading /api/status or /metrics (server addresses, topology) through the operator's
    // browser. (A request without Host, HTTP/1.0, is let through: browsers always send one.)
    if (this.loopbackBind && host !== undefined && !isLoopbackHost(hostOfHostHeader(host))) {
      return this.send(res, 403, 'this admin server is bound to loopback and answers only to a loopback Host\n');
    }
    try {
      if (GET_ROUTES.has(path)) {
        if (method !== 'GET' && method !== 'HEAD') return this.send(res, 405, 'method not allowed\n', { allow: 'GET, HEAD' });
        return this.get(path, res);
      }
      if (path.startsWith('/api/servers/')) return this.adminApi(req, res, path, method, host);
      this.send(res, 404, 'not found\n');
    } catch (err) {
      this.log.warn({ err, path }, 'admin request failed');
      if (!res.headersSent) this.send(res, 500, 'internal error\n');
      else res.destroy();
    }
  }

  private get(path: string, res: ServerResponse): void {
    switch (path) {
      case '/healthz':
        return this.send(res, 200, 'ok\n');
      case '/readyz': {
        const r = this.opts.source.ready();
        return r.ok ? this.send(res, 200, 'ready\n') : this.send(res, 503, `${r.reason}\n`);
      }
      case '/api/status':
        return this.sendRendered(res, this.statusText, 'application/json', 'status');
      case '/api/ready': {
        // /readyz's answer as JSON, always 200: for the status page and `mqtt-lb status`, which show why an instance
        // is not ready (a browser logs every non-2xx fetch as an error; /api/status keeps the contract's shape).
        const r = this.opts.source.ready();
        return this.send(res, 200, `${JSON.stringify(r.ok ? { ready: true } : { ready: false, reason: r.reason })}\n`, { 'content-type': 'application/json' });
      }
      case '/metrics':
        return this.sendRendered(res, this.metricsText, this.opts.metrics.contentType, 'metrics');
      default: // '/'
        return this.send(res, 200, this.page.html, {
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': this.page.csp,
          'x-frame-options': 'DENY',
          'referrer-policy': 'no-referrer',
        });
    }
  }

  private adminApi(req: IncomingMessage, res: ServerResponse, path: string, method: string, host: string | undefined): void {
    const target = parseServerPath(path);
    if (!target) return this.send(res, 404, 'not found\n');
    if (method !== 'POST') return this.send(res, 405, 'method not allowed\n', { allow: 'POST' });
    const auth = authorizeAdmin(
      {
        authorization: req.headers.authorization,
        host,
        origin: req.headers.origin,
        secFetchSite: headerValue(req.headers['sec-fetch-site']),
      },
      { token: this.token, loopbackBind: this.loopbackBind },
    );
    if (!auth.ok) {
      this.refusedLog.warn(String(auth.status), { status: auth.status, pool: target.pool, server: target.server, action: target.action, from: req.socket.remoteAddress }, 'admin request refused');
      const extra: Record<string, string> = auth.status === 401 ? { 'www-authenticate': 'Bearer realm="mqtt-lb"' } : {};
      return this.send(res, auth.status, `${auth.message}\n`, extra);
    }
    const { pool, server, action } = target;
    if (!this.opts.actions.setServerAdmin(pool, server, action)) {
      const poolKnown = this.opts.source.pools().some((p) => p.name === pool);
      return this.send(res, 404, poolKnown ? `no server ${server} in pool ${pool}\n` : `no pool ${pool}\n`);
    }
    // An audit line saying who asked; the state change itself is logged by the AdminActions implementation.
    this.log.info({ pool, server, action, from: req.socket.remoteAddress }, 'admin request applied');
    const live = this.opts.source.pools().find((p) => p.name === pool)?.servers.find((s) => s.name === server);
    const body = { pool, server, admin: live?.admin ?? action, state: live?.state ?? null };
    this.send(res, 200, JSON.stringify(body), { 'content-type': 'application/json' });
  }

  /** An answer built by a SharedRendering: 200 with it, or 500 when building it failed. */
  private sendRendered(res: ServerResponse, rendering: SharedRendering<Buffer>, contentType: string, what: string): void {
    rendering.get().then(
      (text) => this.send(res, 200, text, { 'content-type': contentType }),
      (err: unknown) => {
        this.log.warn({ err }, `${what} collection failed`);
        this.send(res, 500, `${what} collection failed\n`);
      },
    );
  }

  private send(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    res.statusCode = status;
    if (!headers['content-type']) res.setHeader('content-type', 'text/plain; charset=utf-8');
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    res.setHeader('content-length', Buffer.byteLength(body));
    res.end(body);
  }
}

/** `/api/servers/<pool>/<server>/<action>` with URL-encoded names; null when it is not that. */
export function parseServerPath(path: string): { pool: string; server: string; action: AdminAction } | null {
  const parts = path.split('/');
  if (parts.length !== 6 || parts[0] !== '' || parts[1] !== 'api' || parts[2] !== 'servers') return null;
  const action = parts[5] as AdminAction;
  if (!ADMIN_ACTIONS.includes(action)) return null;
  try {
    const pool = decodeURIComponent(parts[3]!);
    const server = decodeURIComponent(parts[4]!);
    if (!pool || !server) return null;
    return { pool, server, action };
  } catch {
    return null; // malformed percent-encoding
  }
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
