/**
 * A listening socket and the sessions it accepted. Knows nothing about pools or health: it hands each
 * accepted connection to a ClientSession together with itself (the SessionListener) and the shared context.
 *
 * TLS and PROXY protocol are handled by an optional "front" (see front.ts) that runs before the session
 * and delivers cleartext bytes already read; the session deadline counts from TCP accept either way.
 */
import net from 'node:net';
import type { Socket } from 'node:net';
import type { EvictWith, ListenerConfig, RefuseWith } from '../config/types.js';
import { bindsMayCollide } from '../config/net-syntax.js';
import { bindHint, ErrorCodes, MqttLbError } from '../errors.js';
import { ClientSession, TCP_KEEPALIVE_MS, type SessionListener } from './session.js';
import { ListenerStats, type ProxyContext, type RoutingPool } from './context.js';
import { hardCapFor, type ListenerCaps } from './fd-budget.js';
import { HandleSocket, errnoError, handleSockets, type TcpHandle } from './handle-socket.js';
import type { ProxySocket } from './proxy-socket.js';
import { frontAcceptedAt, shedFront } from './front.js';
import { monotonicNow } from '../monotonic-clock.js';
import { RateLimitedLog } from '../failover/log.js';

/** Builds the header sent to the server before the CONNECT (PROXY protocol), or null for none. */
export type ProxyHeaderBuilder = (session: ClientSession, pool: RoutingPool) => Buffer | null;

/**
 * Turns an accepted socket into a (possibly TLS) socket plus bytes already read, or rejects it.
 * The default front is the identity.
 */
export interface Front {
  accept(socket: Socket, listener: Listener): void;
}

export class Listener implements SessionListener {
  config: ListenerConfig;
  readonly stats: ListenerStats;
  readonly ctx: ProxyContext;
  maxConnections: number;
  /**
   * Past the MQTT-answered cap, room to answer CONNACKs (and for connections still sending their CONNECT); beyond it
   * Node, or our handle accept, closes at accept, unanswered: the last guard of the descriptor budget (fd-budget.ts).
   */
  private hardCap: number;
  readonly sessions = new Set<ClientSession>();

  /** Its last guard as it applies now (acceptLimit): the 'listener started' and 'listener limits changed by reload' lines say it. */
  get acceptGuard(): number {
    return this.acceptLimit();
  }

  /**
   * The last guard as it applies now: hardCap, or, while a reload has left more sessions than the lowered cap
   * (they run on), those sessions plus the cap's minimum room to refuse, so a new client is still answered in MQTT
   * rather than closed at accept, as far as the descriptors go (ctx.descriptorRoom, checked first); the room is the
   * smallest a cap gets (not the spare descriptors' share, which the lowered cap may have grown).
   */
  private acceptLimit(): number {
    return Math.max(this.hardCap, this.stats.admitted + hardCapFor(this.maxConnections) - this.maxConnections);
  }
  /** Connections still in their PROXY header or TLS handshake (front.ts), not sessions yet; oldest first. */
  readonly inFront = new Set<Socket>();
  /** Sessions still reading their CONNECT (session.ts, while its deadline runs), in the order they began reading it. */
  readonly readingConnect = new Set<ClientSession>();
  /** An accept error until the next successful accept. */
  private acceptErrored = false;
  /** Connections closed at accept get no answer: the counter says how many, this line that it happens. */
  private readonly dropLog: RateLimitedLog;
  /**
   * This process cannot open a descriptor (App.checkDescriptors): libuv then accepts and closes every waiting
   * connection itself (its EMFILE trick), so no accept error ever reaches us.
   */
  outOfDescriptors = false;
  private server: net.Server | null = null;
  /** Bind a socket of its own even in a node:cluster worker, not the primary's shared one (app.ts privateBinds). */
  exclusive = false;
  /** Called when its last session ends (set for a listener a reload retired: app.ts). */
  onEmpty: (() => void) | null = null;
  private front: Front | null;
  private headerBuilder: ProxyHeaderBuilder | null;

  constructor(config: ListenerConfig, ctx: ProxyContext, caps: ListenerCaps, front: Front | null = null, headerBuilder: ProxyHeaderBuilder | null = null) {
    this.config = config;
    this.ctx = ctx;
    this.maxConnections = caps.max;
    this.hardCap = caps.hard;
    this.stats = new ListenerStats(config.name, config.bind, config.tls !== null);
    this.dropLog = new RateLimitedLog(ctx.log, 10_000, monotonicNow);
    this.front = front;
    this.headerBuilder = headerBuilder;
  }

  get poolName(): string {
    return this.config.pool;
  }

  get refuseWith(): RefuseWith {
    return this.config.refuseWith;
  }

  get evictWith(): EvictWith {
    return this.config.evictWith;
  }

  get listening(): boolean {
    return this.server !== null && this.server.listening;
  }

  get port(): number {
    const a = this.server?.address();
    return a !== null && typeof a === 'object' ? a.port : 0;
  }

  setFront(front: Front | null, headerBuilder: ProxyHeaderBuilder | null): void {
    this.front = front;
    this.headerBuilder = headerBuilder;
  }

  /** Reload: pool, caps and TLS may change; a changed bind was bound beforehand (moveTo). */
  reconfigure(config: ListenerConfig, caps: ListenerCaps): void {
    this.config = config;
    this.maxConnections = caps.max;
    this.hardCap = caps.hard;
    this.stats.tls = config.tls !== null;
    this.stats.bind = config.bind;
    if (this.server !== null) this.server.maxConnections = this.hardCap;
  }

  async listen(): Promise<void> {
    this.server = await this.bind(this.config.address, this.config.bind);
  }

  /**
   * A reload moved this listener to `config.bind`. The new address is bound before the old socket closes, so a
   * failure leaves the listener serving where it was. Only when the two overlap (same port, e.g. 0.0.0.0 ->
   * 127.0.0.1) must the old socket go first; if the new bind then fails, the old address is bound again.
   * Sessions stay with the listener throughout. Returns how to move back (another listener failed to bind).
   */
  async moveTo(config: ListenerConfig): Promise<() => Promise<void>> {
    const old = this.server;
    const oldConfig = this.config;
    let next: net.Server;
    try {
      next = await this.bind(config.address, config.bind);
    } catch (err) {
      if (old === null || !isAddressInUse(err) || config.address.port !== oldConfig.address.port) throw err;
      await closeListening(old);
      this.server = null;
      try {
        next = await this.bind(config.address, config.bind);
      } catch (again) {
        // Rarely both fail (the old address taken in between): the listener is then unbound, which /readyz and
        // failover tracking report, and said here.
        this.server = await this.bind(oldConfig.address, oldConfig.bind).catch((err: unknown) => {
          this.ctx.log.error({ listener: oldConfig.name, bind: oldConfig.bind, err }, 'listener could not be bound again after a failed move: not accepting');
          return null;
        });
        throw again;
      }
    }
    this.server = next;
    if (old !== null && old.listening) await closeListening(old);
    return async () => {
      if (this.server !== next) return;
      await closeListening(next);
      this.server = null;
      this.server = await this.bind(oldConfig.address, oldConfig.bind);
    };
  }

  /** A listening server whose connections come to this listener; rejects with START_BIND. */
  private bind(address: ListenerConfig['address'], bindText: string): Promise<net.Server> {
    // Applied by Node to every accepted socket, so sessions need not set them again (two syscalls each).
    const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: TCP_KEEPALIVE_MS });
    server.maxConnections = this.hardCap;
    server.on('connection', (socket: Socket) => this.accept(socket));
    server.on('drop', () => this.dropped());
    const { host, port } = address;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new MqttLbError(ErrorCodes.START_BIND, `listener ${this.config.name}: cannot bind ${bindText}: ${err.code ?? err.message}${bindHint(err.code, port)}`, { cause: err }));
      };
      server.once('error', onError);
      // A reconnect storm arrives all at once: a deep accept backlog avoids SYN drops and 1-3 s retries.
      server.listen({ host, port, ipv6Only: false, backlog: 4096, exclusive: this.exclusive }, () => {
        server.removeListener('error', onError);
        this.acceptAsHandles(server);
        server.on('error', (err: NodeJS.ErrnoException) => {
          // Accept errors (EMFILE, ENFILE): never fatal, but they mean this listener is not serving.
          this.acceptErrored = true;
          this.ctx.log.error({ listener: this.config.name, err }, 'listener accept error');
        });
        resolve(server);
      });
    });
  }

  /** Whether this listener holds its last guard's worth of connections (acceptAsHandles drops the next one). */
  private atGuard(): boolean {
    return this.stats.active >= this.hardCap && this.stats.active >= this.acceptLimit();
  }

  /** Past the hard cap Node (or our handle accept) closes the socket unanswered: counted with the refusals. */
  private dropped(): void {
    this.stats.outcomes.rejected++;
    this.stats.count('accept_dropped');
    const fields = { listener: this.config.name, acceptGuard: this.acceptLimit(), maxConnections: this.maxConnections };
    this.dropLog.warn('accept_dropped', fields, 'connections closed at accept: the listener is past its last guard');
  }

  /**
   * At its last guard, a new connection from `from` takes the place of the one that has waited longest at its step
   * (for its CONNECT, TLS handshake or PROXY header: since its accept, or since the step before was done), once that
   * one has waited DISPLACEABLE_AFTER_MS and came from another address. Connections that send nothing then no longer
   * keep clients of other addresses out, however fast their address opens them (its own new ones find its own old
   * ones first, and are closed instead: a displacement audit saw an address that reopened each closed connection at
   * once take back every slot that aged), while a storm of clients, each of which sends its CONNECT within a few
   * round trips, is not made to displace itself. As NGINX reuses idle keep-alive connections when it runs out of
   * them. False: none may be displaced.
   */
  displaceLongestWaiting(from: string | undefined): boolean {
    const session = firstOf(this.readingConnect);
    const raw = firstOf(this.inFront);
    const sessionSince = session === undefined ? Infinity : session.readingSince;
    const frontSince = raw === undefined ? Infinity : frontAcceptedAt(raw);
    const since = Math.min(sessionSince, frontSince);
    const now = monotonicNow();
    if (since > now - DISPLACEABLE_AFTER_MS) return false;
    const bySession = sessionSince <= frontSince;
    // The socket's own peer (not a PROXY header's source): behind one proxy every connection is from one address.
    const victimFrom = bySession ? session!.client.remoteAddress : raw!.remoteAddress;
    if (from === undefined || from === victimFrom) return false;
    const done = bySession ? session!.shedBeforeConnect('displaced') : shedFront(raw!, 'displaced');
    if (done) {
      const fields = { listener: this.config.name, acceptGuard: this.acceptLimit(), waitedMs: Math.round(now - since) };
      this.dropLog.warn('displaced', fields, 'connections still waiting for their CONNECT closed for new ones: the listener is at its last guard');
    }
    return done;
  }

  /**
   * Closed at accept because client connections and sessions fill the open-file limit less the reserve
   * (ctx.descriptorRoom) while this listener is below its own last guard: apart from `accept_dropped`, so that an
   * alert on it means "raise LimitNOFILE", not "this listener is full".
   */
  private droppedForDescriptors(): void {
    this.stats.outcomes.rejected++;
    this.stats.count('descriptors_exhausted');
    const ctx = this.ctx;
    const fields = { listener: this.config.name, descriptorRoom: ctx.descriptorRoom, inUse: ctx.totalActive + ctx.totalAdmitted };
    this.dropLog.warn('descriptors_exhausted', fields, 'connections closed at accept: client connections fill the open-file limit');
  }

  /**
   * Plain TCP connections (no TLS, no PROXY header) become HandleSockets (handle-socket.ts: about half the
   * CPU per connection). We take over the listening handle's accept callback, which net.Server installs
   * both for its own handle and for the one node:cluster's round-robin hands to workers; connections for a
   * front still go through net's accept (they need a net.Socket), as does everything when the handle API is
   * unavailable.
   */
  private acceptAsHandles(server: net.Server): void {
    const b = handleSockets();
    const listening = (server as unknown as { _handle?: { onconnection?: unknown } | null })._handle;
    if (b === null || listening == null || typeof listening.onconnection !== 'function') return;
    const viaNet = listening.onconnection as (this: unknown, status: number, handle?: TcpHandle) => void;
    const inherited = setInheritedOptions(listening);
    const noDelay = !inherited;
    const keepAliveMs = inherited ? 0 : TCP_KEEPALIVE_MS;
    const listener = this;
    listening.onconnection = function (this: unknown, status: number, handle?: TcpHandle): void {
      const ctx = listener.ctx;
      // The descriptors themselves, whatever the caps: sessions a reload left above a lowered cap hold descriptors
      // the new caps do not count (a re-audit ran every listener out of them, EMFILE); closed here, it is counted.
      // A listener at its own last guard is dropped by that guard below (or Node's, for a front), and counted so.
      if (status === 0 && handle !== undefined && ctx.totalActive + ctx.totalAdmitted >= ctx.descriptorRoom && !listener.atGuard()) {
        handle.close(noop);
        listener.droppedForDescriptors();
        return;
      }
      if (listener.front !== null) {
        // Node's accept checks its own count against server.maxConnections. One displaced: this one is let in, as on
        // the handle path, whatever Node counts (the displaced socket leaves its count once closed; after a reload
        // that lowered the guard, the connections held may be above it: a displacement audit saw both closed).
        const displaced = status === 0 && handle !== undefined && listener.atGuard() && listener.displaceLongestWaiting(peerAddress(handle));
        server.maxConnections = displaced ? Number.MAX_SAFE_INTEGER : listener.acceptLimit();
        return viaNet.call(this, status, handle);
      }
      if (status !== 0 || handle === undefined) {
        server.emit('error', errnoError(status, 'accept'));
        return;
      }
      if (listener.atGuard() && !listener.displaceLongestWaiting(peerAddress(handle))) {
        handle.close(noop);
        listener.dropped();
        return;
      }
      listener.accept(HandleSocket.accepted(b, handle, noDelay, keepAliveMs));
    };
  }

  /** It can take clients: no accept error since its last accept, and descriptors to take them on (failover tracking). */
  get acceptHealthy(): boolean {
    return !this.acceptErrored && !this.outOfDescriptors;
  }

  private accept(socket: ProxySocket): void {
    this.acceptErrored = false;
    if (this.ctx.overloaded) {
      // Over the memory ceiling (overload-guard.ts): nothing is read, no TLS handshake begins.
      socket.destroy();
      this.stats.outcomes.rejected++;
      this.stats.count('overloaded');
      return;
    }
    this.stats.active++;
    this.ctx.totalActive++;
    // A front needs a net.Socket; the handle accept above hands those to net.
    if (this.front !== null && socket instanceof net.Socket) this.front.accept(socket, this);
    else this.startSession(socket, undefined, monotonicNow());
  }

  /** Called directly, or by the front once TLS/PROXY are done. */
  startSession(socket: ProxySocket, preread: Buffer | undefined, acceptedAt: number, remote?: { address: string; port: number }): ClientSession {
    const session = new ClientSession(socket, this, acceptedAt, preread, remote);
    this.sessions.add(session);
    return session;
  }

  /** A connection the front gave up on before it became a session (bad PROXY header, TLS failure). */
  frontRejected(reason: string): void {
    this.stats.outcomes.rejected++;
    this.stats.count(reason);
    this.connectionGone();
  }

  /** The front's socket closed without a session: release the slot. */
  connectionGone(): void {
    this.stats.active--;
    this.ctx.totalActive--;
  }

  proxyHeader(session: ClientSession, pool: RoutingPool): Buffer | null {
    return this.headerBuilder === null ? null : this.headerBuilder(session, pool);
  }

  sessionEnded(session: ClientSession): void {
    if (this.sessions.delete(session)) {
      this.stats.active--;
      this.ctx.totalActive--;
      this.emptied();
    }
  }

  /** A connection left the front (front.ts): it became a session, or was closed. */
  frontEnded(raw: Socket): void {
    if (this.inFront.delete(raw)) this.emptied();
  }

  private emptied(): void {
    if (this.sessions.size === 0 && this.inFront.size === 0) this.onEmpty?.();
  }

  /** Stop accepting; existing sessions continue. Idempotent. */
  stopAccepting(): Promise<void> {
    const server = this.server;
    if (server === null) return Promise.resolve();
    this.server = null;
    return closeListening(server);
  }

  /** Close every session now. */
  destroyAll(): void {
    for (const s of this.sessions) s.destroy();
  }

  /**
   * Over the memory ceiling: close the connections still in their PROXY header or TLS handshake and the sessions
   * still waiting for their CONNECT; returns how many.
   */
  shedBeforeConnect(): number {
    let shed = 0;
    for (const raw of [...this.inFront]) if (shedFront(raw, 'overloaded')) shed++;
    for (const s of [...this.readingConnect]) if (s.shedBeforeConnect('overloaded')) shed++;
    return shed;
  }
}

function noop(): void {}

/**
 * How long a connection must have waited at its step (for its CONNECT, TLS handshake or PROXY header) before a new one
 * may displace it at the listener's last guard (displaceLongestWaiting): many round trips of a slow link, and far less
 * than clientConnectTimeout's default (10 s).
 */
export const DISPLACEABLE_AFTER_MS = 2000;

/** The address a just accepted connection comes from (a getpeername call); undefined if it is gone already. */
function peerAddress(handle: TcpHandle): string | undefined {
  const out: { address?: string } = {};
  return handle.getpeername(out) === 0 ? out.address : undefined;
}

function firstOf<T>(set: Set<T>): T | undefined {
  for (const item of set) return item;
  return undefined;
}

/** Close the listening socket only: server.close's callback would wait for every connection, too. */
function closeListening(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    setImmediate(resolve);
  });
}

/** A bind error (MqttLbError START_BIND) whose cause is EADDRINUSE. */
export function isAddressInUse(err: unknown): boolean {
  const cause = err instanceof Error ? (err.cause as NodeJS.ErrnoException | undefined) : undefined;
  return cause?.code === 'EADDRINUSE';
}

/**
 * An address in use by another of our running listeners (a rename, a swap in one reload): say so, and what to
 * do instead. Other errors are returned as they are.
 */
export function explainHandOver(err: unknown, lc: ListenerConfig, running: readonly ListenerConfig[]): unknown {
  if (!isAddressInUse(err)) return err;
  const holder = running.find((r) => r.name !== lc.name && bindsMayCollide(r.address, lc.address));
  if (holder === undefined) return err;
  return new MqttLbError(
    ErrorCodes.START_BIND,
    `${(err as Error).message} (held by listener ${holder.name} until this reload is applied: hand an address over in two reloads, remove then add, or restart)`,
    { cause: err },
  );
}

/**
 * Bind `lc`'s address and close it again: whether a reload's new address can be bound, asked by the cluster
 * primary before its workers try. A listen that fails inside a node:cluster worker keeps that worker's listen
 * index for the address taken for good (Node 20, lib/internal/cluster/child.js: rr() does not release it on an
 * error), so the worker's later listens there use another handle key than a freshly started worker's, and a
 * respawned worker then fails with EADDRINUSE. Rejects with START_BIND, as a listener's own bind.
 */
export function probeBind(lc: ListenerConfig): Promise<void> {
  const server = net.createServer();
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new MqttLbError(ErrorCodes.START_BIND, `listener ${lc.name}: cannot bind ${lc.bind}: ${err.code ?? err.message}${bindHint(err.code, lc.address.port)}`, { cause: err }));
    });
    server.listen({ host: lc.address.host, port: lc.address.port, ipv6Only: false, exclusive: true }, () => {
      server.close(() => resolve());
    });
  });
}

/**
 * TCP_NODELAY and keepalive for every accepted connection, set once on the listening socket: Linux gives an
 * accepted socket a copy of the listener's options (the kernel clones the listening socket), which saves
 * five setsockopt calls per connection (strace: 34 -> 29 system calls per proxied connection). Only where
 * that holds and only on a real listening handle: node:cluster's round-robin hands workers a stand-in without
 * these methods (its connections are accepted by the primary's socket), and then each accepted socket gets
 * the options itself. True when the listener carries them.
 */
function setInheritedOptions(listening: object): boolean {
  if (process.platform !== 'linux') return false;
  const h = listening as Partial<Pick<TcpHandle, 'setNoDelay' | 'setKeepAlive'>>;
  if (typeof h.setNoDelay !== 'function' || typeof h.setKeepAlive !== 'function') return false;
  return h.setNoDelay(true) === 0 && h.setKeepAlive(true, Math.floor(TCP_KEEPALIVE_MS / 1000)) === 0;
}
