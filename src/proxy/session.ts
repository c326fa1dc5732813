/**
 * One client connection, from accept to close:
 *
 *   reading ──CONNECT──▶ admitting ──▶ dialing ──connected──▶ splicing ──either side closes──▶ closed
 *      │                    │             │ (next candidate while nothing was sent)
 *      └─ bad/slow/big ─────┴─ refused ───┴─ all failed ──▶ CONNACK (or silent close) ──▶ closed
 *
 * Before routing we read the raw bytes ourselves (bounded by maxConnectBytes, absolute deadline from accept).
 * After routing, each read is written to the other socket as it is (see "splicing" below): no parsing,
 * metric, timer or allocation of ours per packet. Socket handlers are module-level functions that find their
 * session through a symbol, so a session allocates no closures.
 */
import net, { isIP } from 'node:net';
import { resetOrDestroy, type ProxySocket } from './proxy-socket.js';
import { HandleSocket, handleSockets } from './handle-socket.js';
import { placementChangeCount, type Server, type LiveSession, type EvictReason } from '../balancer/server.js';
import { assignedIdKeyPrefix, clientIdOfKey, takeoverKey, type ClientIdHolder } from '../balancer/client-id-registry.js';
import { FULL_CANDIDATES } from '../balancer/pool.js';
import type { EvictWith, RefuseWith } from '../config/types.js';
import { pendingConnectBound } from '../config/defaults.js';
import { scanConnect, type ConnectInfo } from './connect-scanner.js';
import { assignedClientId, connackFor, connackVerdict, leadingAuthBytes, type RefusalReason } from './connack.js';
import { LINGER_MS, beginLinger, closeWithReply, dropInput, lingeringClose } from './refuse.js';
import { ErrorCodes } from '../errors.js';
import { PacketFrames } from './packet-frames.js';
import { disconnectCodeFor, disconnectPacket } from './disconnect.js';
import { rewriteUsername } from './connect-rewrite.js';
import { KeepAliveArming } from './keepalive-arming.js';
import type { IdleWatched } from './idle-sweep.js';
import type { ConnackWaiter } from './connack-deadlines.js';
import { readVbi, vbiBytes } from './variable-byte-integer.js';
import type { ListenerStats, ProxyContext, RejectReason, RoutingPool, AdmissionTicket } from './context.js';
import type { TlsPeer } from './front.js';
import { monotonicNow } from '../monotonic-clock.js';
import { unmappedIPv4 } from '../ip-text.js';
import { DIAL_BACKOFF_MS, backOff, backOffUntilAnswer, clearBackOff, serverAnswered } from '../balancer/dial-backoff.js';
import { isEmptyClientIdPersistent } from '../balancer/stickiness.js';
import { lookupServerName, resolveServerName, serverNames } from './server-name-cache.js';

const kSession = Symbol('mqtt-lb.session');
/** A net.Socket dialled by name that has resolved it ('lookup'): a dial timeout after it is the server's. */
const kLookupDone = Symbol('mqtt-lb.lookup-done');
type Tagged = ProxySocket & { [kSession]?: ClientSession; [kLookupDone]?: boolean };

/** Initial pre-routing buffer; grows by doubling up to maxConnectBytes plus what one read can pipeline. */
const INITIAL_BUFFER = 512;
/** When one side closed cleanly, the other gets this long to answer our FIN (closeSide)... */
const CLOSE_GRACE_MS = 2000;
/** ...unless bytes are still queued for it: then until the reader has taken none of them for this long (graceExpired). */
const FLUSH_LIMIT_MS = 30_000;
/**
 * A 5.0 session taken over on another server (takeOver) is closed this long after the newer CONNACK, unless its broker
 * closes it first: a cluster that shares sessions tells its client DISCONNECT 0x8E (Session taken over) [MQTT-3.1.4-3],
 * which can come a little after the newer CONNACK reaches us, and a close at once would cut it off (a 5.0 audit).
 */
export const TAKEOVER_GRACE_MS = 200;
/** A DISCONNECT of ours waits this long at most for the end of the server's packet in flight to the client (tell). */
const TELL_WAIT_MS = 1000;
/** A dial dropped at its connect for a placement that moved meanwhile (placementGone) is placed again at most this often. */
const MAX_REPLACEMENTS = 3;
export const TCP_KEEPALIVE_MS = 60_000;
/** A broker socket gets TCP keepalive once its session is this old (up to twice this): keepalive-arming.ts. */
const KEEPALIVE_ARM_AGE_MS = 10_000;
const brokerKeepAlive = new KeepAliveArming(KEEPALIVE_ARM_AGE_MS, TCP_KEEPALIVE_MS);

type Phase = 'reading' | 'admitting' | 'dialing' | 'splicing' | 'closed';
export type CloseReason = 'client_closed' | 'server_closed' | 'client_error' | 'server_error' | 'server_connack_timeout' | EvictReason;

/** Errors on a dial that say something about the server (worth an immediate health probe). */
const SERVER_CAUSED = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', ErrorCodes.SERVER_CONNECT_TIMEOUT]);
/**
 * Dial failures of this host, not of the server: no descriptor (this process's limit, the system's), no buffer or
 * memory, no free local port. Not counted against the server (mqtt_lb_server_connect_errors_total), and said at warn
 * (a limits audit: out of descriptors, the broker took the blame and nothing was logged above debug).
 */
const LOCAL_DIAL_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL']);

export interface SessionListener {
  readonly stats: ListenerStats;
  readonly poolName: string;
  readonly ctx: ProxyContext;
  /** Per-listener cap after clamping. */
  readonly maxConnections: number;
  /** A refused client gets a CONNACK, or a close without one (listeners[].refuseWith). */
  readonly refuseWith: RefuseWith;
  /** A 5.0 client whose session the balancer closes gets a DISCONNECT first, or the close alone (listeners[].evictWith). */
  readonly evictWith: EvictWith;
  /** Bytes to put before the CONNECT towards the server (PROXY protocol), or null. */
  proxyHeader(session: ClientSession, pool: RoutingPool): Buffer | null;
  /** Called once when the session is fully closed. */
  sessionEnded(session: ClientSession): void;
  /** Sessions still reading their CONNECT: from the constructor until its deadline is cleared. */
  readonly readingConnect: Set<ClientSession>;
}

export class ClientSession implements LiveSession, AdmissionTicket, IdleWatched, ConnackWaiter {
  readonly client: ProxySocket;
  readonly listener: SessionListener;
  readonly acceptedAt: number;
  /** From an incoming PROXY header; otherwise asked of the socket when first needed (a getpeername call). */
  private remote: { address: string; port: number } | null;
  phase: Phase = 'reading';
  info: ConnectInfo | null = null;
  routingKey: Buffer = EMPTY;
  server: Server | null = null;
  upstream: ProxySocket | null = null;
  private pool: RoutingPool | null = null;
  private buf: Buffer | null;
  private filled = 0;
  /** What `buf` holds beyond INITIAL_BUFFER, counted in ctx.pendingConnectBytes until it is dropped (dropBuffer). */
  private bufferCounted = 0;
  private deadline: NodeJS.Timeout | null;
  private candidates: Server[] = EMPTY_CANDIDATES;
  private candidateIndex = 0;
  private dialTimer: NodeJS.Timeout | null = null;
  /** Bounds the lingering close of the side that closed second (closeSide). */
  private graceTimer: NodeJS.Timeout | null = null;
  /**
   * A close that waits, for a 5.0 session: a takeover's, TAKEOVER_GRACE_MS on (takenOver), or one whose DISCONNECT
   * waits for the end of the server's packet in flight to the client, at most TELL_WAIT_MS (tell).
   */
  private closeTimer: NodeJS.Timeout | null = null;
  /** A 5.0 session's server stream towards the client, packet by packet, once spliced: where a DISCONNECT may go (tell). */
  private frames: PacketFrames | null = null;
  /** The Reason Code of the DISCONNECT that tells the client why the balancer closes it; 0: none (yet). */
  private disconnectCode = 0;
  /** That DISCONNECT was written. */
  private told = false;
  /** When that lingering close began, or its queue last shrank, and how long the queue was then (graceExpired). */
  private graceProgressAt = 0;
  private graceQueueMark = 0;
  /** The server's bytesRead when the current grace period began: still moving = the half-close is not idle. */
  private graceReadMark = 0;
  /** What was queued for the client then: shrinking = the client reads the server's answer (a slow download). */
  private graceClientQueueMark = 0;
  private dialStartedAt = 0;
  /** placementChangeCount() when the present dial began (placementGone). */
  private placementSeen = 0;
  /** When its servers were picked (monotonicNow(); placementGone). */
  private placedAt = 0;
  /** Times its dial was dropped at its connect for a placement that moved meanwhile (placementGone), bounded. */
  private replacements = 0;
  private openSockets = 1;
  closeReason: CloseReason | null = null;
  /** Its client ID as held in the pool's registry (registerClientId); null: none, or not proxied. */
  private clientIdKey: string | null = null;
  /** ClientIdHolder: when its CONNECT went to its server (monotonicNow()); set with clientIdKey. */
  connectSentAt = 0;
  /** The CONNECT's protocol level once routed: its CONNACK's layout (connackArrived), and the refusal's (connackOverdue). */
  private connectLevel = 0;
  // ConnackWaiter: pools.<name>.serverConnackTimeout's links (connack-deadlines.ts owns them).
  connackDueAt = 0;
  connackPrev: ConnackWaiter | null = null;
  connackNext: ConnackWaiter | null = null;
  connackQueue: object | null = null;
  /** The server's bytes so far while they do not hold the CONNACK's code yet (connackArrived); null otherwise. */
  private connackHead: Buffer | null = null;
  /**
   * A 5.0 session with an empty client ID, until its CONNACK names the ID its broker assigned (connackArrived): the
   * username's part of its sessionKey (the CONNECT is gone by then); null otherwise.
   */
  private assignedIdKeyUser: string | null = null;
  // IdleWatched: limits.idleTimeout's marks (idle-sweep.ts owns them).
  idleEpoch = -1;
  idleBytesIn = 0;
  idleBytesOut = 0;
  idleBytesQueued = 0;
  idleSweeps = 0;
  /** For log lines only (the access log with log.sessions, `session routed` at debug): the client ID, copied at routing time. */
  private clientIdText: string | null = null;
  /** Set by the TLS front: the verified peer (for PROXY v2 TLVs). */
  tlsPeer: TlsPeer | null = null;
  /** Bytes the front read from the client socket and did not pass on: an incoming PROXY header (not forwarded). */
  frontBytes = 0;
  /** tls.certAsUsername: the CONNECT is re-encoded with this username (the one exception to byte-exact forwarding). */
  usernameOverride: Buffer | null = null;
  /** The client's FIN came after its CONNECT but before the server was connected (passed on at the splice). */
  clientEndedEarly = false;
  /** Nothing came after the CONNECT (so far): a FIN while queued then means the client gave up. */
  connectOnly = false;
  /** LiveSession: the server address dialled (a reload may move the server since). */
  serverAddress: string | undefined = undefined;
  /** Until when it may wait for a first health verdict (monotonic time: monotonicNow(), performance.now(); verdict-wait.ts); 0 = never parked. */
  verdictDeadline = 0;
  /** It counts against the listener's and the global maxConnections (from its CONNECT until it ends). */
  private holdsSlot = false;
  /** When it began reading its CONNECT (monotonicNow()): at accept, or once a TLS handshake or PROXY header was done. */
  readingSince = 0;

  /** Admitted and not ended: it holds a connection slot (and, under per-source limits, counts for its address). */
  get admitted(): boolean {
    return this.holdsSlot;
  }

  /**
   * `acceptedAt`: the TCP accept, which may lie before this object (TLS handshake, PROXY header): the
   * CONNECT deadline counts from there.
   */
  constructor(client: ProxySocket, listener: SessionListener, acceptedAt: number, preread?: Buffer, remote?: { address: string; port: number }) {
    this.client = client;
    this.listener = listener;
    this.acceptedAt = acceptedAt;
    this.remote = remote ?? null;
    this.buf = Buffer.allocUnsafe(INITIAL_BUFFER);
    (client as Tagged)[kSession] = this;
    // Half-open: after the client's FIN, the server's answers to its last packets still reach it, and our FIN
    // follows the server's (clientHalfClosed, reliability case 55). For a net.Socket (TLS and PROXY-protocol
    // fronts, the fallback engine) it matters earlier too: it emits 'end' even while paused once its buffer is
    // empty (at EOF Node's onStreamRead calls read(0)), and with allowHalfOpen false it would end and close
    // itself while its server was dialled, dropping what the session had read. A HandleSocket does the same
    // until the splice (endWhilePaused), so a client that leaves the accept queue is seen at once.
    client.allowHalfOpen = true;
    if (client instanceof HandleSocket) {
      client.endWhilePaused = true;
      client.lendReads = true; // receive() copies each read into `buf` at once (until the splice)
    }
    // TCP_NODELAY and keepalive were set at accept by the listener's server options (listener.ts).
    client.on('error', onClientError);
    client.on('close', onClientClose);
    client.on('end', onClientEndBeforeRouting);
    client.on('data', onClientData);
    this.deadline = null;
    const ctx = listener.ctx;
    // Over the memory ceiling: a front (TLS, PROXY) that began before it ends here, before any buffering.
    const refused = ctx.overloaded ? 'overloaded' : ctx.arrive === undefined ? null : ctx.arrive(this);
    if (refused !== null) {
      this.reject(refused);
      return;
    }
    const now = monotonicNow();
    this.readingSince = now;
    const left = Math.max(0, acceptedAt + ctx.limits.clientConnectTimeout - now);
    this.deadline = setTimeout(onDeadline, left, this);
    listener.readingConnect.add(this); // left with the deadline (clearDeadline)
    if (preread !== undefined && preread.length > 0) this.receive(preread);
  }

  /** Address used for limits, logs and PROXY headers (may come from an incoming PROXY header). */
  /** The client's address (the PROXY header's source when one came), an IPv4 host as `a.b.c.d` even on `[::]`. */
  get remoteAddress(): string {
    return unmappedIPv4(this.peer().address);
  }

  get remotePort(): number {
    return this.peer().port;
  }

  private peer(): { address: string; port: number } {
    return (this.remote ??= { address: this.client.remoteAddress ?? '', port: this.client.remotePort ?? 0 });
  }

  /** The address the client connected to (the VIP, or this host's own): asked at stop only (getsockname). */
  get clientLocalAddress(): string | undefined {
    return this.client.localAddress;
  }

  get bytesIn(): number {
    return this.client.bytesRead - this.frontBytes;
  }

  get bytesOut(): number {
    return this.upstream === null ? 0 : this.upstream.bytesRead;
  }

  /** IdleWatched: bytes written towards either side that its kernel has not taken yet. */
  get bytesQueued(): number {
    return this.client.writableLength + (this.upstream === null ? 0 : this.upstream.writableLength);
  }

  /** IdleWatched: routed and spliced (limits.idleTimeout covers this phase; the others have their own bounds). */
  get spliced(): boolean {
    return this.phase === 'splicing';
  }

  get closed(): boolean {
    return this.phase === 'closed';
  }

  /** ClientIdHolder: its client ID as log lines print it, when kept for them (clientIdText). */
  get loggedClientId(): string | null {
    return this.clientIdText;
  }

  /** Pre-routing bytes from the client. */
  receive(chunk: Buffer): void {
    if (this.phase !== 'reading' || this.buf === null) return;
    const need = this.filled + chunk.length;
    if (need > this.buf.length) {
      if (!this.growBuffer(need, chunk)) return;
    } else if (!this.readsLent && !this.memoryFor(chunk.length, chunk)) {
      return; // the read's copy, garbage once appended, counts too
    }
    chunk.copy(this.buf!, this.filled);
    this.filled = need;
    let result: ReturnType<typeof scanConnect>;
    try {
      result = scanConnect(this.buf!.subarray(0, this.filled), this.listener.ctx.limits.maxConnectBytes);
    } catch (err) {
      // The scanner is fuzzed never to throw; should a bug of ours still throw on hostile input, it costs this
      // client, not the process and every session in it (reliability case 37). Before routing only: the
      // spliced data path runs none of our parsing.
      this.listener.ctx.log.error({ err, listener: this.listener.stats.name, client: this.remoteAddress }, 'CONNECT scanner failed: client closed');
      this.reject('malformed');
      return;
    }
    switch (result.kind) {
      case 'more':
        return;
      case 'reject':
        this.reject(result.reason);
        return;
      case 'refuse':
        this.refuseWith('bad_protocol_level', result.replyLevel, 'rejected');
        return;
      case 'connect':
        this.connectReceived(result.info);
        return;
    }
  }

  /**
   * A buffer of at least `need` bytes for the CONNECT read so far, within limits.maxPendingConnectBytes for all
   * unfinished CONNECTs together: without that bound, clients that each send most of a 256 KiB CONNECT and stall
   * made the process hold 5 GB at the default caps (security audit: 958 MB from 3,400 connections of one source).
   * Never less than one CONNECT of maxConnectBytes needs (with one read pipelined behind it), so that such a
   * CONNECT always fits when it is alone. Nor past the memory ceiling's headroom (limits.maxMemory), which is
   * sampled only every 100 ms. A CONNECT that `chunk` completes is not held to either (the bytes pipelined behind it
   * made the buffer grow: they leave with it at once). False: refused and closed (reason `overloaded`).
   */
  private growBuffer(need: number, chunk: Buffer): boolean {
    const old = this.buf!;
    let size = old.length * 2;
    while (size < need) size *= 2;
    const ctx = this.listener.ctx;
    const limits = ctx.limits;
    const more = size - old.length;
    if (limits.maxPendingConnectBytes > 0 && ctx.pendingConnectBytes + more > pendingConnectBound(limits) && !this.connectCompletedBy(chunk)) {
      ctx.onPendingConnectBytesFull();
      this.reject('overloaded');
      return false;
    }
    // The new buffer whole, and the read when a copy (garbage once appended): both stay counted until collected,
    // the buffer replaced too.
    if (!this.memoryFor(this.readsLent ? size : size + chunk.length, chunk)) return false;
    const bigger = Buffer.allocUnsafe(size);
    old.copy(bigger, 0, 0, this.filled);
    this.buf = bigger;
    this.bufferCounted += more;
    ctx.pendingConnectBytes += more;
    return true;
  }

  /**
   * Counts `bytes` this unfinished CONNECT allocates against the memory ceiling's headroom (ProxyContext
   * connectGrowthBudget). False: they do not fit even measured again, and the client is refused and closed. A chunk
   * that completes the CONNECT is let through: it leaves with it at once.
   */
  private memoryFor(bytes: number, chunk: Buffer): boolean {
    const ctx = this.listener.ctx;
    if (bytes > ctx.connectGrowthBudget && !this.connectCompletedBy(chunk) && !ctx.remeasureConnectGrowthBudget(bytes)) {
      this.reject('overloaded');
      return false;
    }
    ctx.connectGrowthBudget -= bytes;
    return true;
  }

  /** Each read before routing is a view lent by the socket (HandleSocket lendReads), not a copy of its own (net.Socket). */
  private get readsLent(): boolean {
    return this.client instanceof HandleSocket && this.client.lendReads;
  }

  /** Whether the first packet is all there once `chunk` is added to what was read: its fixed header says how long it is. */
  private connectCompletedBy(chunk: Buffer): boolean {
    const have = this.filled + chunk.length;
    let head = this.buf!;
    if (this.filled < FIXED_HEADER_MAX) {
      // The fixed header may straddle what was read and the chunk: its first bytes, together.
      head = FIXED_HEADER_SCRATCH;
      this.buf!.copy(head, 0, 0, this.filled);
      chunk.copy(head, this.filled, 0, FIXED_HEADER_MAX - this.filled);
    }
    const remaining = readVbi(head, 1, Math.min(have, FIXED_HEADER_MAX), false);
    return remaining >= 0 && 1 + vbiBytes + remaining <= have;
  }

  /** The pre-routing buffer is done with (routed, refused, or the client left): no longer counted. */
  private dropBuffer(): void {
    this.buf = null;
    this.listener.ctx.pendingConnectBytes -= this.bufferCounted;
    this.bufferCounted = 0;
  }

  private connectReceived(info: ConnectInfo): void {
    this.info = info;
    this.connectOnly = this.filled === info.packetLength;
    this.clearDeadline();
    if (this.usernameOverride !== null && !this.applyUsernameOverride(info)) return;
    // Hold further input in the kernel until a server is connected: bounded pre-routing memory.
    this.client.pause();
    this.client.removeListener('data', onClientData);
    const l = this.listener;
    const ctx = l.ctx;
    // The caps count sessions whose CONNECT was taken, not connections still sending one: three clients that
    // arrive together under a cap of two are two admitted and one refused, whichever CONNECT comes first.
    // The global cap first: when both are reached (a listener's cap lowered to the global one by the open-file
    // budget, fd-budget.ts), it is the one to raise, and the reason must name it.
    if (ctx.totalAdmitted >= ctx.maxConnections) return this.refuse('global_full');
    if (l.stats.admitted >= l.maxConnections) return this.refuse('listener_full');
    this.holdSlot();
    this.phase = 'admitting';
    if (ctx.admit !== undefined) {
      const verdict = ctx.admit(this);
      if (verdict === 'queued') return;
      if (verdict !== 'ok') return this.refuse(verdict);
    }
    this.proceed();
  }

  /** Replace the CONNECT in the buffer by one carrying the certificate's CN as username; false if refused. */
  private applyUsernameOverride(info: ConnectInfo): boolean {
    const packet = this.buf!.subarray(0, info.packetLength);
    const rewritten = rewriteUsername(packet, info, this.usernameOverride!);
    // The re-encoded packet is checked against the same size limit as any CONNECT. The CN itself was checked at
    // the handshake (cnUsernameProblem, front.ts): null here is a packet over the Remaining Length limit.
    if (rewritten === null) {
      this.reject(this.usernameOverride!.length > 0xffff ? 'too_large' : 'malformed');
      return false;
    }
    if (rewritten.length > this.listener.ctx.limits.maxConnectBytes) {
      this.reject('too_large');
      return false;
    }
    const tail = this.buf!.subarray(info.packetLength, this.filled);
    const out = Buffer.allocUnsafe(rewritten.length + tail.length);
    rewritten.copy(out, 0);
    tail.copy(out, rewritten.length);
    // Counted like a grown buffer (not checked: the CONNECT is whole, and the certificate bounds the name).
    const counted = Math.max(0, out.length - INITIAL_BUFFER);
    this.listener.ctx.pendingConnectBytes += counted - this.bufferCounted;
    this.bufferCounted = counted;
    this.buf = out;
    this.filled = out.length;
    // Route on the new packet's fields (username-hash sees the CN).
    const again = scanConnect(out, Number.MAX_SAFE_INTEGER);
    if (again.kind !== 'connect') {
      this.reject('malformed');
      return false;
    }
    this.info = again.info;
    return true;
  }

  /** Admission granted (or a wait for a first health verdict ended): pick and dial. */
  proceed(): void {
    if (this.phase !== 'admitting' || this.info === null) return;
    const ctx = this.listener.ctx;
    const pool = ctx.pool(this.listener.poolName);
    if (pool === undefined) {
      // A new listener whose pool the reload binding it has not committed yet: a moment away.
      if (this.awaitVerdict(ctx.poolPendingUntil(this.listener.poolName))) return;
      return this.refuse('no_server');
    }
    this.pool = pool;
    const keys = { clientId: this.info.clientId, username: this.info.username };
    const key = pool.routingKey(keys);
    // Copy: the key must not pin the whole pre-routing buffer.
    this.routingKey = key.length === 0 ? EMPTY : Buffer.from(key);
    this.candidates = pool.candidates(keys);
    this.placedAt = monotonicNow();
    // A server about to get its first verdict (new, moved, back from maint) that would take this client.
    if (this.awaitVerdict(pool.verdictWaitUntil(this.routingKey, this.candidates))) return;
    if (this.candidates === FULL_CANDIDATES) return this.refuse('server_full');
    if (this.candidates.length === 0) return this.refuse('no_server');
    this.phase = 'dialing';
    this.dial();
  }

  /**
   * Park until `until` (0: do not wait) for a first health verdict; false when it is not worth it or this
   * session's wait is over (its deadline: set when it first parked, never later, shortened by a window that ends
   * sooner); it is then placed on what is known, or refused.
   */
  private awaitVerdict(until: number): boolean {
    if (until === 0) return false;
    const ctx = this.listener.ctx;
    if (this.verdictDeadline === 0) {
      this.verdictDeadline = until;
      if (ctx.log.isLevelEnabled('debug')) {
        const info = this.info!;
        const waitMs = Math.round(until - monotonicNow());
        ctx.log.debug({ listener: this.listener.stats.name, client: this.remoteAddress, port: this.remotePort, clientId: clientIdForLog(info.clientId), pool: this.listener.poolName, waitMs }, 'session waits for a first health verdict');
      }
    } else if (monotonicNow() >= this.verdictDeadline) {
      return false;
    } else if (until < this.verdictDeadline) {
      // Its first wait was for a pool a reload was adding (bounded by the reload); now that the pool is here, no
      // longer than its servers' window.
      this.verdictDeadline = until;
    }
    this.candidates = EMPTY_CANDIDATES;
    ctx.verdictWaits.park(this);
    return true;
  }

  refuse(reason: RejectReason): void {
    if (reason === 'malformed' || reason === 'not_connect' || reason === 'too_large' || reason === 'timeout') {
      this.reject(reason);
      return;
    }
    const level = this.info === null ? 4 : this.info.protocolLevel;
    this.refuseWith(reason as RefusalReason, level, 'rejected');
  }

  private refuseWith(reason: RefusalReason, level: 3 | 4 | 5, outcome: 'rejected' | 'failed', countAs: string = reason): void {
    if (this.phase === 'closed') return;
    this.enterClosed(outcome, countAs);
    // `refuseWith: close`: no CONNACK for being unable to serve now (mqtt.js 5 stops reconnecting for good on any
    // refusal unless reconnectOnConnackError is set; on a plain close it retries, as behind HAProxy). A level we do
    // not speak is no passing condition: answered anyway [MQTT-3.1.2-2].
    const answer = this.listener.refuseWith === 'connack' || reason === 'bad_protocol_level';
    const log = this.listener.ctx.log;
    // Asked only at debug: the client's address is a getpeername call, on a path a flood of refused clients takes.
    if (log.isLevelEnabled('debug')) {
      const clientId = this.info === null ? undefined : clientIdForLog(this.info.clientId);
      log.debug({ listener: this.listener.stats.name, client: this.remoteAddress, port: this.remotePort, clientId, reason: countAs, connack: answer }, 'connect refused');
    }
    if (answer) closeWithReply(this.client, connackFor(reason, level));
    else if (!this.client.destroyed) lingeringClose(this.client, null, LINGER_MS);
  }

  /**
   * OpenSSL failed on the client's TLS connection before a byte of its CONNECT: a failed handshake to the client,
   * counted and logged as the front counts one (front.ts), and true. Over TLS 1.3 the server's side of the handshake
   * ends before its session ticket is written, so that can still fail after 'secureConnection' (a client certificate
   * too large for a ticket: OpenSSL's construct_stateless_ticket), and the client, which saw its handshake succeed,
   * is closed with an alert. False once CONNECT bytes came: then it is a client error like any other.
   */
  tlsFailedBeforeConnect(code: string): boolean {
    if (this.phase !== 'reading' || this.filled !== 0 || this.tlsPeer === null) return false;
    this.enterClosed('rejected', 'tls_handshake');
    this.listener.ctx.log.debug({ listener: this.listener.stats.name, client: this.remoteAddress, port: this.remotePort, code, certificate: null }, 'TLS handshake failed');
    this.client.destroy();
    return true;
  }

  /** Close without an answer and without touching any server. */
  private reject(reason: RejectReason): void {
    if (this.phase === 'closed') return;
    this.enterClosed('rejected', reason);
    const log = this.listener.ctx.log;
    if (log.isLevelEnabled('debug')) log.debug({ listener: this.listener.stats.name, client: this.remoteAddress, port: this.remotePort, reason }, 'connect rejected');
    this.client.destroy();
  }

  private holdSlot(): void {
    this.holdsSlot = true;
    this.listener.stats.admitted++;
    this.listener.ctx.totalAdmitted++;
  }

  /** Idempotent: when the session is refused (its socket may linger to deliver the CONNACK), or ends. */
  private releaseSlot(): void {
    if (!this.holdsSlot) return;
    this.holdsSlot = false;
    this.listener.stats.admitted--;
    this.listener.ctx.totalAdmitted--;
  }

  private enterClosed(outcome: 'rejected' | 'failed', reason: string): void {
    this.phase = 'closed';
    this.releaseSlot();
    this.clearDeadline();
    this.dropBuffer();
    const stats = this.listener.stats;
    stats.outcomes[outcome]++;
    stats.count(reason);
  }

  private clearDeadline(): void {
    if (this.deadline !== null) {
      clearTimeout(this.deadline);
      this.deadline = null;
      this.listener.readingConnect.delete(this);
    }
  }

  onDeadline(): void {
    this.clearDeadline();
    if (this.phase === 'reading') this.reject('timeout');
  }

  // ── dialing ─────────────────────────────────────────────────────────────────────────────────────────────

  private dial(): void {
    const server = this.candidates[this.candidateIndex]!;
    const pool = this.pool!;
    this.dialStartedAt = monotonicNow();
    this.placementSeen = placementChangeCount();
    const { host, port, address } = server.config;
    // Recorded now: a reload may move the server before this connect completes.
    this.serverAddress = address;
    const handles = handleSockets();
    const sock: Tagged =
      handles !== null
        ? HandleSocket.dial(handles, { host, port, noDelay: true, resolve: resolveServerName })
        : net.connect({ host, port, noDelay: true, lookup: lookupServerName });
    if (handles === null && isIP(host) === 0) sock.once('lookup', onNetLookup);
    sock[kSession] = this;
    this.upstream = sock;
    this.server = server;
    sock.on('connect', onUpstreamConnect);
    sock.on('error', onUpstreamDialError);
    this.dialTimer = setTimeout(onDialTimeout, pool.config.serverConnectTimeout, this);
    server.dialsInFlight++;
  }

  /** The dial is over (connected, failed, timed out or abandoned): its timer stops, and it stops counting as load. */
  private endDial(): void {
    if (this.dialTimer === null) return;
    clearTimeout(this.dialTimer);
    this.dialTimer = null;
    this.server!.dialsInFlight--;
  }

  dialFailed(code: string): void {
    this.endDial();
    const sock = this.upstream;
    const server = this.server!;
    if (sock !== null) {
      sock.removeListener('connect', onUpstreamConnect);
      sock.removeListener('error', onUpstreamDialError);
      sock.on('error', noop);
      sock.destroy();
    }
    this.upstream = null;
    this.server = null;
    const serverCaused = SERVER_CAUSED.has(code);
    if (serverCaused) {
      backOff(server, monotonicNow());
      // A name's last answer may be why (the broker moved): the next dials wait for a fresh answer.
      serverNames.expire(server.config.host);
    }
    const local = LOCAL_DIAL_ERRORS.has(code);
    if (!local) server.connectErrors++;
    this.listener.ctx.log.debug({ pool: this.pool!.name, server: server.name, code }, 'server dial failed');
    this.listener.ctx.onDialFailure(server, serverCaused, local ? code : null);
    if (this.phase !== 'dialing') return;
    const retries = this.pool!.config.retries;
    while (this.candidateIndex < retries && this.candidateIndex + 1 < this.candidates.length) {
      this.candidateIndex++;
      // Filled up since the pick (by other clients' dials): its maxConnections holds for retries too.
      if (this.candidates[this.candidateIndex]!.full) continue;
      this.dial();
      return;
    }
    // Every candidate failed: tell the client in MQTT ("server unavailable"), counted as a failed session.
    this.refuseWith('no_server', this.info!.protocolLevel, 'failed', 'server_connect_failed');
  }

  onDialTimeout(): void {
    // Still resolving the server's name: the resolver's delay, not the server's (no back-off, no probe).
    const up = this.upstream as Tagged | null;
    const resolving = up instanceof HandleSocket ? up.resolving : up !== null && isIP(this.server!.config.host) === 0 && up[kLookupDone] !== true;
    this.dialFailed(resolving ? ErrorCodes.SERVER_RESOLVE_TIMEOUT : ErrorCodes.SERVER_CONNECT_TIMEOUT);
  }

  upstreamConnected(): void {
    this.endDial();
    const sock = this.upstream!;
    const server = this.server!;
    const pool = this.pool!;
    sock.removeListener('connect', onUpstreamConnect);
    sock.removeListener('error', onUpstreamDialError);
    if (this.phase !== 'dialing') {
      sock.destroy();
      return;
    }
    // Something moved while it dialled (rare; one number compared): its CONNECT not sent yet, it is placed again, as
    // a CONNECT arriving now would be, if its server no longer takes it.
    if (placementChangeCount() !== this.placementSeen && this.replacements < MAX_REPLACEMENTS && this.placementGone(server, pool)) {
      this.replacements++;
      sock.destroy();
      this.upstream = null;
      this.server = null;
      this.candidateIndex = 0;
      this.phase = 'admitting';
      const log = this.listener.ctx.log;
      if (log.isLevelEnabled('debug')) log.debug({ listener: this.listener.stats.name, client: this.remoteAddress, port: this.remotePort, pool: pool.name, server: server.name }, 'session placed again: its server changed while it was dialled');
      this.proceed();
      return;
    }
    this.phase = 'splicing';
    this.openSockets = 2;
    clearBackOff(server);
    const ctx = this.listener.ctx;
    ctx.onServerConnected(server, (monotonicNow() - this.dialStartedAt) / 1000);
    server.sessions.add(this);
    this.listener.stats.outcomes.proxied++;
    // Counted with the proxied, as metrics.md says: a refused client got no session that could be lost. Not when a
    // key placed it (username-hash with a username: its reconnect carries the same one, to the same broker; a
    // balancing audit saw those counted).
    const info = this.info!;
    if (info.clientId.length === 0 && this.routingKey.length === 0 && isEmptyClientIdPersistent({ protocolLevel: info.protocolLevel, clientIdLength: info.clientId.length, sessionExpiryInterval: info.sessionExpiry })) {
      this.listener.stats.count('empty_client_id_persistent');
    }
    sock.on('error', onUpstreamError);
    sock.on('close', onUpstreamClose);
    // The CONNECT exactly as received, and whatever the client pipelined behind it, in order.
    const header = this.listener.proxyHeader(this, pool);
    if (header !== null) sock.write(header);
    sock.write(this.buf!.subarray(0, this.filled));
    this.connectLevel = info.protocolLevel;
    const connackDecides = this.registerClientId();
    const connackTimeout = pool.config.serverConnackTimeout;
    if (connackTimeout > 0) ctx.connackDeadlines.add(this, connackTimeout);
    // ConnectInfo's fields are views into the pre-routing buffer: drop them so the buffer is freed.
    const debug = ctx.log.isLevelEnabled('debug');
    if (ctx.logSessions || debug) {
      this.clientIdText = clientIdForLog(this.info!.clientId);
      this.peer(); // asked now: a closed socket no longer knows its peer
    }
    this.dropBuffer();
    this.info = null;
    this.candidates = EMPTY_CANDIDATES;
    this.client.removeListener('end', onClientEndBeforeRouting);
    // From here a pause is backpressure: the client's FIN waits behind what is queued for the server.
    if (this.client instanceof HandleSocket) this.client.endWhilePaused = false;
    // A 5.0 client may be told DISCONNECT if the balancer closes it: its server's packets are followed (tell).
    if ((this.connectLevel & 0x7f) === 5) this.frames = new PacketFrames();
    // The server's first read goes through connackArrived when its CONNACK decides something or has a deadline.
    splice(this.client, sock, connackDecides || connackTimeout > 0 ? onUpstreamConnack : this.frames === null ? onSplicedUpstreamData : onTrackedUpstreamData);
    brokerKeepAlive.add(sock);
    // Its FIN came while we dialled: pass it on now, behind the bytes just written.
    if (this.clientEndedEarly) this.clientHalfClosed();
    if (debug) {
      ctx.log.debug(
        {
          listener: this.listener.stats.name,
          client: this.remoteAddress,
          port: this.remotePort,
          clientId: this.clientIdText,
          pool: pool.name,
          server: server.name,
        },
        'session routed',
      );
    }
  }

  /**
   * Its server, dialled and just connected, no longer takes it: removed by a reload (or its pool), moved to another
   * address, set to weight 0, drained or put in maint, down under `onServerDown: shutdown`, or, under `onServerUp:
   * rebalance`, no longer where its key goes. What those events close reaches only connected sessions
   * (server.sessions): an audit found dials in flight at a drain, a maint, a rebalance or a reload that removed the
   * server land on it afterwards and stay there.
   */
  private placementGone(server: Server, pool: RoutingPool): boolean {
    if (this.listener.ctx.pool(this.listener.poolName) !== pool || !pool.servers.includes(server)) return true;
    if (server.config.address !== this.serverAddress || server.config.weight === 0 || server.admin !== 'ready') return true;
    if (server.health === 'down' && pool.config.onServerDown === 'shutdown') return true;
    if (pool.config.onServerUp !== 'rebalance' || this.routingKey.length === 0) return false;
    // Where its CONNECT would go now, dial back-off and maxConnections included: not the key's owner alone, which
    // may be the server this dial is a retry for (a re-audit: a drain elsewhere moved such a dial back to a dead
    // owner, refused again), or full.
    const info = this.info!;
    const now = pool.candidates({ clientId: info.clientId, username: info.username });
    if (now === FULL_CANDIDATES || now.length === 0 || now[0] === server) return false;
    // Only for a server that has come back since this session was placed, which is what `rebalance` moves: not for
    // one the pick left out for what has since passed (its dial back-off ended), after a change elsewhere.
    return now[0]!.returnedAt > this.placedAt;
  }

  // ── closing ─────────────────────────────────────────────────────────────────────────────────────────────

  /**
   * LiveSession: close both sides now (shutdown, rebalance, drain, ...). A 5.0 client its server has accepted is told
   * why first (tell); a second eviction, or one of a session already closing, closes at once.
   */
  evict(reason: EvictReason): void {
    if (this.phase === 'closed') return;
    const quiet = this.closeReason === null;
    // Its takeover grace runs (takenOver): its client ID lives on another server now, whatever closes it first.
    if (quiet && this.closeTimer !== null) reason = 'takeover';
    this.closeReason ??= reason;
    if (quiet && this.tell(reason)) return;
    // A second close while the DISCONNECT waits for the packet in flight: that packet is cut short (a reset).
    if (this.disconnectCode !== 0 && !this.told) {
      this.closeUntold();
      return;
    }
    // Closed, also when its server has not answered its CONNECT yet: a CONNACK refusal here (an audit asked for one
    // at `onServerDown: shutdown`) would make mqtt.js 5 and mosquitto_sub clients stop reconnecting for good under
    // the default refuseWith: connack, where a close has them reconnect to a server that is up.
    this.client.destroy();
    this.upstream?.destroy();
  }

  /**
   * A 5.0 client whose server accepted it [MQTT-3.14.0-1] gets DISCONNECT with the eviction's Reason Code
   * (disconnect.ts), as a broker would tell it, and not a bare close: between two of the server's packets, so when
   * one is on its way the DISCONNECT follows its last byte (at most TELL_WAIT_MS later; else a reset: closeUntold).
   * False: nothing to tell (3.1.1, `evictWith: close`, no CONNACK yet, the server said DISCONNECT itself, a side
   * closed).
   */
  private tell(reason: EvictReason): boolean {
    const frames = this.frames;
    if (frames === null || this.listener.evictWith !== 'disconnect' || this.phase !== 'splicing' || !frames.mayTell || this.client.destroyed || this.upstream!.destroyed) return false;
    this.disconnectCode = disconnectCodeFor(reason);
    if (this.closeTimer !== null) clearTimeout(this.closeTimer); // a takeover grace: this close replaces it
    this.closeTimer = null;
    if (frames.atBoundary) {
      this.sayDisconnect();
      return true;
    }
    // Closed from now on as far as the client goes: what it sends is dropped, its FIN too (passed on, it could make the
    // broker close before the packet in flight has ended), as the close would drop them. Its server side stays open
    // until that packet has ended; a FIN from it before then cuts the packet short (onUpstreamEndWhileTelling).
    dropInput(this.client);
    this.client.removeAllListeners('end');
    this.client.on('end', noop);
    this.upstream!.removeListener('end', onSplicedUpstreamEnd);
    this.upstream!.on('end', onUpstreamEndWhileTelling);
    this.closeTimer = setTimeout(onTellWaitEnded, TELL_WAIT_MS, this);
    return true;
  }

  /**
   * The DISCONNECT, then our FIN, and what the client still sends is dropped until its own FIN or LINGER_MS (the
   * lingering close of refuse.ts: a close with its bytes unread would reset, and the reset could discard the
   * DISCONNECT). The server side closes now, as any eviction closes it (its broker publishes the Will, if any).
   */
  private sayDisconnect(): void {
    if (this.closeTimer !== null) clearTimeout(this.closeTimer);
    this.closeTimer = null;
    this.told = true;
    beginLinger(this.client, disconnectPacket(this.disconnectCode));
    // (A half-close's grace may run: the client's FIN came while the DISCONNECT waited. This bound replaces it.)
    if (this.graceTimer !== null) clearTimeout(this.graceTimer);
    this.graceTimer = setTimeout(onToldLingerEnded, LINGER_MS, this);
    this.upstream!.destroy();
  }

  /**
   * A 5.0 session's server read: passed on, its packets followed (PacketFrames). While a DISCONNECT waits (tell): passed
   * on up to the end of the packet in flight, and the client told then.
   */
  relayTracked(upstream: ProxySocket, chunk: Buffer): void {
    const frames = this.frames!;
    if (this.disconnectCode === 0) {
      frames.advance(chunk, 0, chunk.length);
      if (!this.client.write(chunk)) upstream.pause();
      return;
    }
    const end = frames.toEndOfPacket(chunk, 0, chunk.length);
    // What follows that packet in this read is dropped, as a close would drop it.
    const more = this.client.write(end === chunk.length ? chunk : chunk.subarray(0, end));
    if (!frames.atBoundary) {
      if (!more) upstream.pause();
      return;
    }
    // That packet was the server's own DISCONNECT (it began before the eviction): nothing may follow it [MQTT-3.14.4-1].
    if (frames.mayTell) this.sayDisconnect();
    else this.closeUntold();
  }

  /**
   * Closed without a DISCONNECT after all. A reset when its stream stops inside a packet (the wait ran out, its server
   * ended it, a second close), so that a truncated packet does not end as if whole. After the server's own DISCONNECT,
   * the client's side closes as when a server closes (upstreamClosed: a lingering close behind what is queued).
   */
  closeUntold(): void {
    if (this.closeTimer !== null) clearTimeout(this.closeTimer);
    this.closeTimer = null;
    if (!this.frames!.atBoundary) resetOrDestroy(this.client);
    this.upstream?.destroy();
  }

  /** The told client has not closed within LINGER_MS of our FIN. */
  toldLingerEnded(): void {
    this.graceTimer = null;
    // The DISCONNECT still waits in our queue (a client that does not read): it never reached the client, and the
    // access log does not say it did.
    if (this.client.writableLength > 0) {
      this.told = false;
      resetOrDestroy(this.client);
    } else this.client.destroy();
  }

  /** Routed, its server has sent nothing yet, and neither side is closing. */
  private awaitsFirstAnswer(): boolean {
    const upstream = this.upstream;
    return this.phase === 'splicing' && upstream !== null && !upstream.destroyed && upstream.bytesRead === 0 && !this.client.destroyed;
  }

  /** CONNACK "server unavailable" (or a close: refuseWith) to a client its server has not answered; the server side closes now. */
  private answerUnavailable(): void {
    const client = this.client;
    if (this.listener.refuseWith === 'connack') client.write(connackFor('no_server', this.connectLevel as 3 | 4 | 5));
    // What the client still sends has nowhere to go; its FIN follows the CONNACK when the server side has closed.
    dropInput(client);
    this.upstream!.destroy();
  }

  /**
   * A client that has not delivered its CONNECT yet is closed, unanswered: over the memory ceiling (it may be the one
   * filling memory with a large slow CONNECT), or displaced by a new connection at its listener's last guard
   * (Listener.displaceLongestWaiting). Nothing of it could be answered yet. True if closed.
   */
  shedBeforeConnect(reason: 'overloaded' | 'displaced'): boolean {
    if (this.phase !== 'reading') return false;
    this.reject(reason);
    return true;
  }

  /** Close the whole process down (SIGTERM past drainTimeout): an eviction, in any phase. */
  destroy(): void {
    this.evict('shutdown');
  }

  clientClosed(hadError: boolean): void {
    this.openSockets--;
    this.clearDeadline();
    if (this.phase === 'splicing') {
      this.closeReason ??= hadError ? 'client_error' : 'client_closed';
      this.closeSide(this.upstream!, hadError);
    } else if (this.phase !== 'closed') {
      // Client left before routing completed: abandon any dial without counting it against a server.
      this.phase = 'closed';
      this.dropBuffer();
      this.endDial();
      if (this.upstream !== null) {
        this.upstream.on('error', noop);
        this.upstream.destroy();
      }
    }
    if (this.openSockets === 0) this.finished();
  }

  upstreamClosed(hadError: boolean): void {
    brokerKeepAlive.delete(this.upstream!);
    this.openSockets--;
    this.closeReason ??= hadError ? 'server_error' : 'server_closed';
    // The session broke on the server side after routing (reset, error): counted as failed (contract §6).
    if (hadError && this.closeReason === 'server_error') this.listener.stats.outcomes.failed++;
    this.closeSide(this.client, hadError);
    if (this.openSockets === 0) this.finished();
  }

  /**
   * Propagate a close: an error becomes a reset; a clean close is a lingering close (refuse.ts): our FIN after
   * everything queued, what the peer still sends is dropped, closed on its FIN or after a bounded grace. Closing
   * at once instead sent a reset whenever a few bytes of the peer (a CONNACK in flight) sat unread, and the
   * reset discarded what the kernel had not yet sent: a fire-and-forget client's last bytes.
   */
  private closeSide(sock: ProxySocket, hadError: boolean): void {
    // (A told client is in its lingering close already: sayDisconnect.)
    if (sock.destroyed || (this.told && sock === this.client)) return;
    if (hadError) {
      resetOrDestroy(sock);
      return;
    }
    beginLinger(sock, null);
    this.startGrace(sock);
  }

  /**
   * The client's FIN (half-close): it goes to the server behind everything queued, and what the server still
   * sends, answers to the client's last packets, is relayed until the server closes; the client gets our FIN
   * then (onSplicedUpstreamEnd). Bounded like HAProxy's `timeout client-fin`: once a grace period passes with
   * the client's bytes delivered to the server and no byte from the server (graceExpired), the server side is
   * closed and the client lingers.
   */
  clientHalfClosed(): void {
    this.closeReason ??= 'client_closed';
    const upstream = this.upstream!;
    upstream.end();
    this.startGrace(upstream);
    // Not at the close, a grace period later: the client has given up now.
    if (upstream.bytesRead === 0) reportSilentServer(this.server!, this.acceptedAt, this.listener.ctx);
  }

  /** Cleared in finished(), when both sides have closed. */
  private startGrace(sock: ProxySocket): void {
    if (this.graceTimer !== null) clearTimeout(this.graceTimer);
    this.graceProgressAt = monotonicNow();
    this.graceQueueMark = sock.writableLength;
    this.graceReadMark = this.upstream === null ? 0 : this.upstream.bytesRead;
    this.graceClientQueueMark = this.client.writableLength;
    this.graceTimer = setTimeout(onGraceExpired, CLOSE_GRACE_MS, this, sock);
  }

  /**
   * The grace period of a lingering close ran out. Our FIN goes out only behind what is still queued for that
   * side (a slow reader, a busy host): while bytes are queued it gets more periods, for as long as the reader
   * takes some of them at least every FLUSH_LIMIT_MS (HAProxy bounds this phase by its data timeout, an
   * inactivity timeout, not by its FIN timeout): a slow but steady reader gets everything, however long it
   * takes. With the queue flushed, a peer that has not answered our FIN within a period is closed.
   */
  graceExpired(sock: ProxySocket): void {
    this.graceTimer = null;
    const queued = sock.destroyed ? 0 : sock.writableLength;
    if (queued > 0) {
      const now = monotonicNow();
      if (queued < this.graceQueueMark) {
        this.graceQueueMark = queued;
        this.graceProgressAt = now;
      }
      if (now - this.graceProgressAt < FLUSH_LIMIT_MS) {
        this.graceTimer = setTimeout(onGraceExpired, CLOSE_GRACE_MS, this, sock);
        return;
      }
    }
    // The client half-closed and the server still answers (a download): an inactivity timeout, like HAProxy's
    // `timeout client-fin`, so it runs while server bytes keep reaching the client (reliability case 55). A
    // client that stopped reading stops them too (backpressure), and the grace then runs out.
    const upstream = this.upstream;
    // (Only while the client is there to receive them: after the client has gone, the server's bytes are dropped.)
    if (sock === upstream && !sock.destroyed && !this.client.destroyed) {
      const forClient = this.client.writableLength;
      const now = monotonicNow();
      if (upstream.bytesRead > this.graceReadMark || forClient < this.graceClientQueueMark) {
        this.graceReadMark = upstream.bytesRead;
        this.graceClientQueueMark = forClient;
        this.graceProgressAt = now;
        this.graceTimer = setTimeout(onGraceExpired, CLOSE_GRACE_MS, this, sock);
        return;
      }
      // Nothing moved, but the server's answer waits in our queue for the client: the client's reading is what
      // holds it, and the kernel tells us of that in steps (it wakes a writer once a third of its send buffer is
      // free: seconds, for a slow reader). Bounded as a flush to a slow reader, not as a silent server (an audit:
      // a download to a slow half-closed reader was cut at half, ended by a plain FIN).
      this.graceClientQueueMark = forClient;
      if (forClient > 0 && now - this.graceProgressAt < FLUSH_LIMIT_MS) {
        this.graceTimer = setTimeout(onGraceExpired, CLOSE_GRACE_MS, this, sock);
        return;
      }
      // Given up with the server's answer still queued for the client: what it has not taken is lost, and a reset
      // says so (a FIN after the kernel's part would end a truncated stream as if whole: a re-audit).
      if (forClient > 0) resetOrDestroy(this.client);
    }
    // Likewise for bytes queued for this side itself: given up on, they are never sent.
    if (!sock.destroyed && sock.writableLength > 0) resetOrDestroy(sock);
    else sock.destroy();
  }

  /**
   * [MQTT-3.1.4-3] across brokers (client-id-registry.ts): this session's CONNECT has gone to its server. Its client
   * ID is claimed once its CONNACK accepts it (true: onUpstreamConnack, connackArrived), never before: a session
   * registered at its CONNECT and then refused would hold the ID meanwhile, and could have an accepted session of
   * the same ID closed (an audit: a refused CONNECT got an accepted one closed as `takeover`; one refused on the
   * holder's own broker unregistered the holder). With workers, the primary hears of the claim then too.
   */
  private registerClientId(): boolean {
    const { clientId, username, protocolLevel } = this.info!;
    const by = this.pool!.config.takeover;
    this.clientIdKey = takeoverKey(by, clientId, username);
    if (this.clientIdKey === null) {
      // A broker-assigned ID names no earlier session [MQTT-3.1.3-6]. At 5.0 the CONNACK names it (Assigned Client
      // Identifier [MQTT-3.2.2-16]) and it is claimed then: a reconnect with it (Session Expiry > 0) is hashed by it,
      // and may reach another broker than the fallback chose, beside this session (a protocol audit saw both live).
      if (clientId.length > 0 || (protocolLevel & 0x7f) !== 5) return false;
      this.assignedIdKeyUser = assignedIdKeyPrefix(by, username);
      if (this.assignedIdKeyUser === null) return false;
    }
    this.connectSentAt = monotonicNow();
    if (this.clientIdKey !== null) this.pool!.clientIds.awaitConnack(this.clientIdKey, this);
    return true;
  }

  /**
   * Bytes from the server of a session with a client ID, until its CONNACK's code is in: true once decided (the
   * caller then splices as usual); for any other session with a CONNACK deadline, its server's first read (true). What came before is kept in `connackHead` (a few bytes: the network may split even
   * a 4-byte CONNACK); the bytes go on to the client meanwhile.
   */
  connackArrived(bytes: Buffer): boolean {
    // Its server has answered (serverConnackTimeout): the CONNACK, or a 5.0 AUTH before it.
    if (this.connackQueue !== null) {
      this.listener.ctx.connackDeadlines.remove(this);
      serverAnswered(this.server!);
    }
    let key = this.clientIdKey;
    if ((key === null && this.assignedIdKeyUser === null) || this.phase !== 'splicing') return true;
    let head = this.connackHead === null ? bytes : Buffer.concat([this.connackHead, bytes]);
    // AUTH packets before the CONNACK (MQTT 5 enhanced authentication): not kept, the CONNACK still decides.
    const auth = leadingAuthBytes(head, this.connectLevel);
    if (auth > 0) head = head.subarray(auth);
    const verdict = connackVerdict(head, this.connectLevel);
    if (verdict === 'partial') {
      this.connackHead = head;
      return false;
    }
    const pool = this.pool!;
    if (verdict === 'refuses') {
      // The older session stays, and stays registered: a broker closes it only for a CONNECT it accepted.
      this.connackHead = null;
      this.assignedIdKeyUser = null;
      if (key !== null) pool.clientIds.release(key, this);
      this.clientIdKey = null;
      return true;
    }
    const keyUser = this.assignedIdKeyUser;
    if (keyUser !== null) {
      // The whole CONNACK this time, for its properties (one read, as a rule).
      const assigned = assignedClientId(head);
      if (assigned === 'partial') {
        this.connackHead = head;
        return false;
      }
      this.assignedIdKeyUser = null;
      if (assigned !== null && assigned.length > 0) {
        key = this.clientIdKey = keyUser + assigned.toString('latin1');
        // The access log names it by the ID it holds (a takeover line that said `""` matched nothing: a re-audit).
        if (this.listener.ctx.logSessions) this.clientIdText = clientIdForLog(assigned);
      }
    }
    this.connackHead = null;
    if (key === null) return true; // accepted with no ID assigned (or one in a CONNACK too long to read)
    // The older of this session and the one holding the ID, when on another server: closed. This one, when the
    // other's CONNECT went later (its CONNACK came first).
    const displaced = pool.clientIds.claim(key, this);
    if (displaced !== null) this.takeOver(displaced, displaced === this ? pool.clientIds.holderOf(key) : this, true);
    if (displaced === this) return true;
    // Older sessions still waiting for their CONNACK elsewhere: closed now, as their broker would have closed them at
    // this CONNECT. Left to their CONNACK, one that came after this session ended would find nothing newer.
    const older = pool.clientIds.olderAwaiting(key, this);
    if (older !== null) for (const s of older) this.takeOver(s, this, false);
    return true;
  }

  /**
   * ConnackWaiter: serverConnackTimeout ran out and its server has sent nothing, not even its CONNACK. Nothing of the
   * server has reached the client, so it is told as for a failed dial (`refuseWith`: CONNACK 3 / 0x88, or a close),
   * the server is left out of the picks until it answers (1-10 s) and probed now (with health checks), and the session
   * ends (`server_connack_timeout`).
   * Not retried on another server: this one has the CONNECT, and may still act on it (takeover, Will).
   */
  connackOverdue(): boolean {
    // Ending already (either side closed or half-closed): its own close bounds it.
    if (this.closeReason !== null || !this.awaitsFirstAnswer()) return false;
    this.closeReason = 'server_connack_timeout';
    const stats = this.listener.stats;
    stats.outcomes.failed++;
    stats.count('server_connack_timeout');
    const server = this.server!;
    // Left out for as long as it kept this client waiting (up to CONNACK_BACKOFF_MAX_MS), not the second of a refused
    // dial: a client retrying after a second (mqtt.js's reconnectPeriod) met it again before its probe could tell
    // (an audit, 5 timeouts in 16 s under `health.type: tcp`, which a stopped broker passes).
    backOffUntilAnswer(server, monotonicNow(), Math.min(Math.max(DIAL_BACKOFF_MS, this.pool!.config.serverConnackTimeout), CONNACK_BACKOFF_MAX_MS));
    this.answerUnavailable();
    reportSilentServer(server, this.acceptedAt, this.listener.ctx, 0);
    return true;
  }

  /**
   * Close `older`, a session of this one's client ID on another server than `newer` (its newer session). `accepted`:
   * `older` held the ID (its CONNACK had accepted it), as against one still waiting for its CONNACK.
   */
  private takeOver(older: ClientIdHolder, newer: ClientIdHolder | undefined, accepted: boolean): void {
    const log = this.listener.ctx.log;
    if (log.isLevelEnabled('debug')) {
      log.debug({ pool: this.pool!.name, from: older.server?.name, to: newer?.server?.name, clientId: takenOverClientId(older, this.clientIdKey!) }, 'client ID connected again on another server: closing its older session');
    }
    older.takenOver(accepted);
  }

  /**
   * ClientIdHolder: a newer session of its client ID was accepted on another server. A 3.1/3.1.1 session, or one still
   * waiting for its CONNACK (its broker would have closed it at the newer CONNECT), is closed now; an accepted 5.0 one
   * TAKEOVER_GRACE_MS later, unless its broker closes it first, with the DISCONNECT 0x8E a cluster sends.
   */
  takenOver(accepted: boolean): void {
    if (!accepted || this.phase !== 'splicing' || (this.connectLevel & 0x7f) !== 5) {
      this.evict('takeover');
      return;
    }
    if (this.closeTimer === null) this.closeTimer = setTimeout(onTakeoverGraceEnded, TAKEOVER_GRACE_MS, this);
  }

  /** The takeover grace ran out (takenOver): the broker has not closed it, so the balancer does. */
  takeoverGraceEnded(): void {
    this.closeTimer = null;
    this.evict('takeover');
  }

  /** Its server's reads are followed packet by packet (a 5.0 session: tell). */
  get tracksPackets(): boolean {
    return this.frames !== null;
  }

  private finished(): void {
    if (this.clientIdKey !== null) this.pool!.clientIds.release(this.clientIdKey, this);
    if (this.connackQueue !== null) this.listener.ctx.connackDeadlines.remove(this);
    if (this.graceTimer !== null) {
      clearTimeout(this.graceTimer);
      this.graceTimer = null;
    }
    if (this.closeTimer !== null) {
      clearTimeout(this.closeTimer);
      this.closeTimer = null;
    }
    // Only a session that reached a server: one abandoned while dialling (its client left, an eviction) or refused
    // after failed dials has a server and an upstream too, but no access-log line and nothing to give back.
    const wasSpliced = this.phase === 'splicing';
    this.phase = 'closed';
    const ctx = this.listener.ctx;
    if (wasSpliced) {
      this.server!.sessionClosed(this);
      this.listener.stats.sessionClosed(this.closeReason ?? 'client_closed', this.told);
      // A client that half-closed was judged then (clientHalfClosed), a grace period ago: not a second probe for it.
      // A server that closed it itself without a byte (not even its CONNACK: mosquitto at max_connections, a broker
      // going down) is reported whatever the session's age; a client's give-up only after a second (an audit saw
      // such a broker take its clients' reconnects for fall x interval).
      if (this.bytesOut === 0 && this.closeReason !== 'client_closed') {
        const byServer = this.closeReason === 'server_closed' || this.closeReason === 'server_error';
        reportSilentServer(this.server!, this.acceptedAt, ctx, byServer ? 0 : SILENT_SERVER_MS);
      }
    }
    if (ctx.logSessions && wasSpliced) {
      ctx.log.info(
        {
          listener: this.listener.stats.name,
          // null when it was never asked, or could not be read (a client that reset right after its CONNECT).
          client: this.remote === null || this.remote.address === '' ? null : formatAddress(this.remote),
          clientId: this.clientIdText,
          pool: this.pool?.name,
          server: this.server!.name,
          durationMs: Math.round(monotonicNow() - this.acceptedAt),
          bytesIn: this.bytesIn,
          bytesOut: this.bytesOut,
          reason: this.closeReason,
          // The DISCONNECT's Reason Code when a 5.0 client was told why (tell); left out otherwise.
          disconnect: this.told ? this.disconnectCode : undefined,
        },
        'session closed',
      );
    }
    ctx.release?.(this);
    if (this.verdictDeadline !== 0) ctx.verdictWaits.leave(this);
    this.releaseSlot();
    this.listener.sessionEnded(this);
  }
}

/** The longest a server is left out of the picks after a CONNACK timeout (connackOverdue). */
const CONNACK_BACKOFF_MAX_MS = 10_000;

/** A session this old whose server never sent a byte (not even its CONNACK) reports the server (reportSilentServer). */
const SILENT_SERVER_MS = 1000;
/** Per server and process, at most one such report in this long (a storm of clients giving up reports once). */
const SILENT_REPORT_GAP_MS = 1000;

/**
 * A session that ends after a second or more without one byte from its server, not even the CONNACK: what every
 * client of a broker that takes TCP without serving MQTT meets (a stopped broker process: the kernel still
 * completes handshakes into its backlog). Its health probe comes now rather than at its interval, and the probe
 * decides. Checked when the client half-closes and at the close: nothing runs on the data path for it.
 */
function reportSilentServer(server: Server, acceptedAt: number, ctx: ProxyContext, minAgeMs = SILENT_SERVER_MS): void {
  const now = monotonicNow();
  if (now - acceptedAt < minAgeMs || now - server.silentReportAt < SILENT_REPORT_GAP_MS) return;
  server.silentReportAt = now;
  ctx.log.debug({ pool: server.pool, server: server.name }, 'server sent nothing in a whole session: probing it now');
  ctx.onServerSilent(server);
}

/**
 * The access log's client ID: its first LOGGED_CLIENT_ID_BYTES bytes, then `…` when longer. A client ID may be
 * 65,535 bytes [MQTT-1.5.3]; whole, it would be held by every live session and written into every line.
 */
const LOGGED_CLIENT_ID_BYTES = 256;
export function clientIdForLog(id: Buffer): string {
  if (id.length <= LOGGED_CLIENT_ID_BYTES) return id.toString('utf8');
  // Cut before a character, not inside one (a split one read as U+FFFD, and the text was no prefix of the ID: an audit).
  let end = LOGGED_CLIENT_ID_BYTES;
  while (end > LOGGED_CLIENT_ID_BYTES - 4 && (id[end]! & 0xc0) === 0x80) end--;
  return `${id.subarray(0, end).toString('utf8')}…`;
}

/**
 * The client ID a takeover's log line names: the older session's own when it was kept for log lines (with `takeover:
 * username` the key holds no client ID), else the key's.
 */
export function takenOverClientId(older: ClientIdHolder, key: string): string {
  return older.loggedClientId ?? clientIdForLog(clientIdOfKey(key));
}

function formatAddress({ address, port }: { address: string; port: number }): string {
  const host = unmappedIPv4(address);
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

const EMPTY = Buffer.alloc(0);
/** A fixed header is at most 5 bytes: the type byte and a 4-byte remaining length. */
const FIXED_HEADER_MAX = 5;
const FIXED_HEADER_SCRATCH = Buffer.alloc(FIXED_HEADER_MAX);
const EMPTY_CANDIDATES: Server[] = [];

function noop(): void {}

function sessionOf(sock: ProxySocket): ClientSession {
  return (sock as Tagged)[kSession]!;
}

function onClientData(this: ProxySocket, chunk: Buffer): void {
  sessionOf(this).receive(chunk);
}

function onClientEndBeforeRouting(this: ProxySocket): void {
  const s = sessionOf(this);
  // FIN before a whole CONNECT: nothing to forward. FIN with nothing after the CONNECT while waiting in the
  // accept queue: the client gave up waiting for its CONNACK (a storm's retry timer). It leaves the queue, so
  // neither its place nor a token goes to it, and no broker sees its CONNECT, which would take over the
  // session of the same client ID (its next attempt, perhaps already connected) and publish its Will
  // (HAProxy's `abortonclose` for queued connections).
  if (s.phase === 'reading' || (s.phase === 'admitting' && s.connectOnly)) this.destroy();
  // Otherwise (fire and forget: CONNECT, PUBLISH, DISCONNECT, FIN; or a FIN while dialing): what was read goes
  // to the server first, then the FIN.
  else s.clientEndedEarly = true;
}

function onClientError(this: ProxySocket, err?: NodeJS.ErrnoException): void {
  const s = sessionOf(this);
  // A renegotiation the client asked for before its CONNECT (refused: Node's TLS server has it off) is a TLS failure
  // there too, counted and logged as one (a TLS audit: it went unsaid).
  if (typeof err?.code === 'string' && (err.code.startsWith('ERR_SSL_') || err.code === 'ERR_TLS_RENEGOTIATION_DISABLED') && s.tlsFailedBeforeConnect(err.code)) return;
  // Usually the socket is closing and 'close' follows with hadError. Not always: a TLS socket reports a
  // refused renegotiation (or Node's renegotiation limit) as an 'error' and stays open, so close it here.
  // Errors are per socket, never fatal.
  s.closeReason ??= 'client_error';
  if (!this.destroyed) this.destroy();
}

function onClientClose(this: ProxySocket, hadError: boolean): void {
  sessionOf(this).clientClosed(hadError);
}

function onTakeoverGraceEnded(s: ClientSession): void {
  s.takeoverGraceEnded();
}

/** The packet in flight did not end within TELL_WAIT_MS (a slow or stalled server, a client not reading): closed untold. */
function onTellWaitEnded(s: ClientSession): void {
  s.closeUntold();
}

/** The server's FIN while a DISCONNECT waits for the end of its packet in flight (tell): that packet never ends. */
function onUpstreamEndWhileTelling(this: ProxySocket): void {
  sessionOf(this).closeUntold();
}

function onToldLingerEnded(s: ClientSession): void {
  s.toldLingerEnded();
}

function onGraceExpired(s: ClientSession, sock: ProxySocket): void {
  s.graceExpired(sock);
}

function onDeadline(s: ClientSession): void {
  s.onDeadline();
}

function onDialTimeout(s: ClientSession): void {
  s.onDialTimeout();
}

function onNetLookup(this: Tagged): void {
  this[kLookupDone] = true;
}

function onUpstreamConnect(this: ProxySocket): void {
  sessionOf(this).upstreamConnected();
}

function onUpstreamDialError(this: ProxySocket, err: NodeJS.ErrnoException): void {
  sessionOf(this).dialFailed(err.code ?? 'ERROR');
}

function onUpstreamError(this: ProxySocket): void {
  // 'close' follows with hadError.
}

function onUpstreamClose(this: ProxySocket, hadError: boolean): void {
  sessionOf(this).upstreamClosed(hadError);
}

// ── splicing ──────────────────────────────────────────────────────────────────────────────────────────────
//
// What pipe() does, without its per-session state: pipe() allocates about ten closures and three once()
// wrappers per direction (≈2 KiB per session, measured with heap snapshots) for the same per-read work. Here a
// read is one call to a module-level function that writes the chunk, unchanged and unbuffered by us, to the
// other socket; when that socket's buffer is full (write() returns false) the reading side is paused until
// 'drain' (backpressure: a peer that stops reading stops its sender, design.md §5). A FIN is passed on with
// end() (half-close, as pipe() does); the close and error handlers above finish the session.

function splice(client: ProxySocket, upstream: ProxySocket, onUpstreamData: (this: ProxySocket, chunk: Buffer) => void): void {
  // From here a read may be kept by a write the kernel does not take at once: each one a copy of its own.
  if (client instanceof HandleSocket) client.lendReads = false;
  client.on('data', onSplicedClientData);
  client.on('end', onSplicedClientEnd);
  upstream.on('drain', onUpstreamDrain);
  upstream.on('data', onUpstreamData);
  upstream.on('end', onSplicedUpstreamEnd);
  client.on('drain', onClientDrain);
  // The client was paused while its CONNECT was routed; whatever it sent meanwhile follows the CONNECT.
  client.resume();
}

function onSplicedClientData(this: ProxySocket, chunk: Buffer): void {
  if (!sessionOf(this).upstream!.write(chunk)) this.pause();
}

function onSplicedUpstreamData(this: ProxySocket, chunk: Buffer): void {
  if (!sessionOf(this).client.write(chunk)) this.pause();
}

/**
 * The server's reads up to its CONNACK's code, for a session with a client ID (its CONNACK decides whether it claims
 * the ID: connackArrived), or to its CONNACK's end for a 5.0 one without (the ID its broker assigned); then the plain
 * splice. Usually one read: the CONNACK is the server's first packet.
 */
function onUpstreamConnack(this: ProxySocket, chunk: Buffer): void {
  const s = sessionOf(this);
  const relay = s.tracksPackets ? onTrackedUpstreamData : onSplicedUpstreamData;
  if (s.connackArrived(chunk)) {
    this.removeListener('data', onUpstreamConnack);
    this.on('data', relay);
  }
  // Closed by its own CONNACK: a newer session of its client ID holds it (connackArrived).
  if (this.destroyed) return;
  relay.call(this, chunk);
}

/** A 5.0 session's server reads: followed packet by packet (PacketFrames), for a DISCONNECT of ours (tell). */
function onTrackedUpstreamData(this: ProxySocket, chunk: Buffer): void {
  sessionOf(this).relayTracked(this, chunk);
}

function onUpstreamDrain(this: ProxySocket): void {
  sessionOf(this).client.resume();
}

function onClientDrain(this: ProxySocket): void {
  sessionOf(this).upstream!.resume();
}

// A FIN from the client: see clientHalfClosed. A FIN from the server: it goes on to the client after everything
// queued, and our FIN to the server follows at once (allowHalfOpen false on the server side: a broker that
// closes is done with the session), so whatever the client still sends has nowhere to go. It is read and
// dropped (dropInput) until the client closes too, and the lingering close takes over. Writing it would be a
// write after our FIN, which net.Socket answers by destroying the socket with an error (EPIPE, or
// write-after-end), and closeSide turned that into a reset of the other side, discarding the bytes still
// queued for it.

function onSplicedClientEnd(this: ProxySocket): void {
  sessionOf(this).clientHalfClosed();
}

function onSplicedUpstreamEnd(this: ProxySocket): void {
  const s = sessionOf(this);
  s.closeReason ??= 'server_closed';
  const client = s.client;
  // The client's own FIN, if it comes, closes it (half-open and already ending): nothing to pass on.
  client.removeListener('end', onSplicedClientEnd);
  client.end();
  dropInput(client);
}
