/**
 * What happens on a connection before the MQTT session starts: an optional PROXY header from trusted
 * sources (acceptProxyProtocol), then optional TLS. Both count inside limits.clientConnectTimeout from
 * TCP accept. Also builds the PROXY header we send to servers (sendProxyProtocol).
 *
 * Order on the wire from a cloud NLB: PROXY header (cleartext) → TLS ClientHello → MQTT CONNECT.
 *
 * TLS: each front owns one tls.Server that never listens; accepted sockets are injected into it with
 * emit('connection') (documented for tls.Server), so Node's own server-side logic decides `authorized`
 * and refuses clients without a valid certificate. A reload builds a new front (new certificates) for new
 * connections; handshakes and sessions in progress keep the server object they started with.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Socket } from 'node:net';
import type { ListenerConfig, PoolConfig } from '../config/types.js';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { CidrSet } from './cidr.js';
import { cnUsernameProblem } from './connect-rewrite.js';
import { parseProxyHeader, encodeFor, addressesOf, MAX_V1_LINE_LENGTH, MAX_V2_BLOCK_LENGTH, type ProxyAddresses, type ProxyTlvs } from './proxy-protocol.js';
import type { Front, Listener, ProxyHeaderBuilder } from './listener.js';
import type { ClientSession } from './session.js';
import type { AdmissionTicket } from './context.js';
import { monotonicNow } from '../monotonic-clock.js';
import { unmappedIPv4 } from '../ip-text.js';

/** The largest header we buffer: the parser answers `invalid` beyond these, this is a second bound. */
const MAX_PROXY_HEADER = Math.max(16 + MAX_V2_BLOCK_LENGTH, MAX_V1_LINE_LENGTH);

/**
 * TLS 1.2+ with forward secrecy and AEAD ciphers only (Mozilla "intermediate", 2024). The TLS_* names are
 * the TLS 1.3 suites (Node takes both kinds in one list).
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');
export const TLS_MIN_VERSION = 'TLSv1.2';

export interface TlsPeer {
  /** SNI the client sent, if any. */
  servername: string | null;
  /** Subject CN of the client certificate; only set when the certificate verified against `tls.ca`. */
  cn: string | null;
  verified: boolean;
  protocol: string | null;
  /** A resumed TLS session: a client certificate came on an earlier connection (PROXY v2 CERT_SESS, not CERT_CONN). */
  resumed: boolean;
}

const kFront = Symbol('mqtt-lb.front');

interface FrontState {
  listener: Listener;
  front: ConnectionFront;
  raw: Socket;
  acceptedAt: number;
  timer: NodeJS.Timeout | null;
  buf: Buffer | null;
  remote: { address: string; port: number } | undefined;
  /** The destination an incoming PROXY header declared (e.g. the NLB's public address). */
  destination: { address: string; port: number } | undefined;
  /** Length of the PROXY header read from `raw` (0 without one): not client bytes for the server counters. */
  proxyHeaderBytes: number;
  /** Handed to the TLS server: a close from now on is a failed handshake. */
  inTls: boolean;
  /** Its place among its address's connections without a CONNECT yet (per-source limits), during the handshake. */
  ticket: FrontTicket | null;
  /**
   * null while it is in front; else how it ended: handed to its session, a refusal's reason, or 'gone' (closed
   * before a byte of TLS, counted as nothing).
   */
  ended: 'session' | FrontRejectReason | 'gone' | null;
}

type FrontRejectReason = 'bad_proxy_header' | 'tls_handshake' | 'timeout' | 'overloaded' | 'displaced' | 'source_full' | 'rate_limited';

/**
 * A TLS handshake counts towards its address's connections without a CONNECT (admission.ts arrive(), what
 * limits.perSource bounds): a handshake is the costliest thing an unauthenticated client can make us do, and one
 * address holding thousands of them locked every newcomer out of a TLS listener (security audit: source_full 0,
 * accept_dropped 133,462). Given back when the handshake ends, just before the session counts itself.
 */
class FrontTicket implements AdmissionTicket {
  constructor(
    readonly remoteAddress: string,
    private readonly state: FrontState,
  ) {}

  get closed(): boolean {
    return this.state.ended !== null;
  }

  // Only sessions queue for admission (admit()); a front is never queued.
  proceed(): void {}
  refuse(): void {}
}

type Tagged = Socket & { [kFront]?: FrontState };

/**
 * Sessions that came through a trusted PROXY header: the header we send on repeats its destination too
 * (as HAProxy's accept-proxy + send-proxy do), so the broker sees the connection the client really made.
 */
const declaredDestination = new WeakMap<ClientSession, { address: string; port: number }>();
/** tls.Server builds its TLSSocket around the injected socket and keeps it as `_parent`. */
type ServerTlsSocket = tls.TLSSocket & { _parent?: Tagged };

export class ConnectionFront implements Front {
  private readonly trusted: CidrSet | null;
  private readonly tlsServer: tls.Server | null;
  private readonly certAsUsername: boolean;
  /** tls.requestCert `optional`: a certificate presented must verify, none is fine. */
  private readonly optionalCert: boolean;
  private readonly timeoutMs: number;

  /**
   * `clientConnectTimeoutMs` is that of the config this front is built for: every reload builds new fronts
   * (from the certificate text the reloaded config carries) and installs them when it commits, so a changed
   * timeout comes with them.
   */
  constructor(lc: ListenerConfig, clientConnectTimeoutMs: number) {
    this.trusted = lc.acceptProxyProtocol.length > 0 ? new CidrSet(lc.acceptProxyProtocol) : null;
    this.timeoutMs = clientConnectTimeoutMs;
    this.certAsUsername = lc.tls?.certAsUsername === true;
    this.optionalCert = lc.tls?.requestCert === 'optional';
    this.tlsServer = lc.tls === null ? null : buildTlsServer(lc, clientConnectTimeoutMs);
  }

  accept(socket: Socket, listener: Listener): void {
    listener.inFront.add(socket);
    const state: FrontState = { listener, front: this, raw: socket, acceptedAt: monotonicNow(), timer: null, buf: null, remote: undefined, destination: undefined, proxyHeaderBytes: 0, inTls: false, ticket: null, ended: null };
    (socket as Tagged)[kFront] = state;
    // The PROXY header and the TLS handshake are inside the client's connect deadline, from accept.
    state.timer = setTimeout(onFrontTimeout, this.timeoutMs, state);
    socket.on('close', onFrontClose);
    socket.on('error', noop);
    // Read now: net.Socket keeps it once read, so the log line of a failed handshake still has it after a refused
    // certificate has closed the socket (its address can no longer be asked then).
    const peer = socket.remoteAddress;
    if (peer === undefined) {
      // Gone before its address could be asked (its bytes, then a reset: HAProxy's check with `send-proxy-v2` sends
      // a LOCAL header and resets). A connection that closed, counted as nothing, as a bare reset is (a PROXY audit:
      // taken for an untrusted source, its header read as MQTT, and counted `not_connect` with no address).
      socket.destroy();
      return;
    }
    if (this.trusted !== null && this.trusted.has(peer)) {
      // A trusted source MUST start with a PROXY header (strict: no fallback to "no header").
      socket.on('data', onProxyData);
      return;
    }
    this.afterProxy(state, undefined);
  }

  /** PROXY header done (or not required): TLS next, else the session. */
  afterProxy(state: FrontState, rest: Buffer | undefined): void {
    const socket = state.raw;
    if (this.tlsServer === null) {
      this.handOver(state, socket, rest, null);
      return;
    }
    const ctx = state.listener.ctx;
    if (ctx.arrive !== undefined) {
      const ticket = new FrontTicket(clientAddress(state) ?? '', state);
      const refused = ctx.arrive(ticket);
      if (refused === 'source_full' || refused === 'rate_limited') {
        if (ctx.log.isLevelEnabled('debug')) ctx.log.debug({ listener: state.listener.config.name, client: clientAddress(state), reason: refused, awaiting: 'TLS handshake' }, 'connect rejected');
        rejectFront(state, refused);
        return;
      }
      if (refused === null) state.ticket = ticket;
    }
    // Reading the PROXY header made the stream flowing: stop it, so no byte is emitted to nobody.
    socket.pause();
    // Bytes after the PROXY header are the start of the ClientHello: give them back to the stream
    // (the TLS socket reads a wrapped socket's buffered bytes first).
    if (rest !== undefined && rest.length > 0) socket.unshift(rest);
    state.inTls = true;
    this.tlsServer.emit('connection', socket);
  }

  tlsSecure(state: FrontState, tlsSocket: tls.TLSSocket): void {
    if (state.ended !== null) {
      tlsSocket.destroy();
      return;
    }
    const verified = tlsSocket.authorized;
    // `requestCert: optional`: no certificate is fine, one that does not verify is not (HAProxy's `verify optional`).
    // Refused after the handshake, without a TLS alert (Node sends none with rejectUnauthorized off).
    if (!verified && this.optionalCert && hasPeerCertificate(tlsSocket)) {
      const log = state.listener.ctx.log;
      if (log.isLevelEnabled('debug')) {
        log.debug({ listener: state.listener.config.name, client: clientAddress(state), port: clientPort(state), detail: String(tlsSocket.authorizationError) }, 'client certificate does not verify');
      }
      rejectFront(state, 'tls_handshake', tlsSocket);
      return;
    }
    let cn: string | null = null;
    if (verified) {
      const subjectCn = tlsSocket.getPeerCertificate()?.subject?.CN as string | string[] | undefined;
      cn = typeof subjectCn === 'string' ? subjectCn : Array.isArray(subjectCn) ? (subjectCn[0] ?? null) : null;
    }
    let username: Buffer | null = null;
    if (this.certAsUsername) {
      const log = state.listener.ctx.log;
      if (cn === null) {
        // The broker would otherwise see whatever username the client chose: refuse rather than pass it.
        log.debug({ listener: state.listener.config.name, client: clientAddress(state), port: clientPort(state) }, 'client certificate without subject CN');
        rejectFront(state, 'tls_handshake', tlsSocket);
        return;
      }
      username = Buffer.from(cn, 'utf8');
      const problem = cnUsernameProblem(username);
      if (problem !== null) {
        log.debug({ listener: state.listener.config.name, client: clientAddress(state), port: clientPort(state), detail: problem }, 'client certificate CN cannot be a username');
        rejectFront(state, 'tls_handshake', tlsSocket);
        return;
      }
    }
    // Node reports no SNI for a resumed TLS 1.2 session (OpenSSL keeps the name in the session only when a
    // servername callback accepted it): the PROXY v2 header then has no AUTHORITY (configuration.md).
    const servername = tlsSocket.servername;
    const peer: TlsPeer = {
      servername: typeof servername === 'string' && servername.length > 0 ? servername : null,
      cn,
      verified,
      protocol: tlsSocket.getProtocol(),
      resumed: tlsSocket.isSessionReused(),
    };
    this.handOver(state, tlsSocket, undefined, peer, username);
  }

  handOver(state: FrontState, clientSocket: Socket, preread: Buffer | undefined, peer: TlsPeer | null, username: Buffer | null = null): void {
    if (state.ended !== null) return;
    state.ended = 'session';
    // Given back before the session counts itself (its constructor's arrive()).
    releaseTicket(state);
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = null;
    const raw = state.raw;
    raw.removeListener('close', onFrontClose);
    raw.removeListener('data', onProxyData);
    // With TLS nothing is pre-read, so the CONNECT arrives after usernameOverride is set below.
    const session = state.listener.startSession(clientSocket, preread, state.acceptedAt, state.remote);
    session.tlsPeer = peer;
    // A TLS socket counts the decrypted stream only; the raw socket counted the PROXY header too.
    if (clientSocket === raw) session.frontBytes = state.proxyHeaderBytes;
    if (state.destination !== undefined) declaredDestination.set(session, state.destination);
    session.usernameOverride = username;
    (raw as Tagged)[kFront] = undefined;
    // After the session is counted: a retired listener must not look empty in between.
    state.listener.frontEnded(raw);
  }
}

function onProxyData(this: Tagged, chunk: Buffer): void {
  const state = this[kFront]!;
  state.buf = state.buf === null ? chunk : Buffer.concat([state.buf, chunk]);
  const r = parseProxyHeader(state.buf);
  if (r.kind === 'more') {
    if (state.buf.length > MAX_PROXY_HEADER) rejectFront(state, 'bad_proxy_header');
    return;
  }
  if (r.kind === 'invalid') {
    state.listener.ctx.log.debug({ listener: state.listener.config.name, client: clientAddress(state), port: this.remotePort, detail: r.detail }, 'bad PROXY header');
    rejectFront(state, 'bad_proxy_header');
    return;
  }
  this.removeListener('data', onProxyData);
  // LOCAL / UNKNOWN: the connection's own endpoints stand (spec §2.1, §2.2).
  if (!r.local && r.addresses !== null) {
    state.remote = { address: r.addresses.srcAddress, port: r.addresses.srcPort };
    state.destination = { address: r.addresses.dstAddress, port: r.addresses.dstPort };
  }
  state.proxyHeaderBytes = r.headerLength;
  const rest = r.headerLength < state.buf.length ? Buffer.from(state.buf.subarray(r.headerLength)) : undefined;
  state.buf = null;
  state.front.afterProxy(state, rest);
}

function stateOfTls(tlsSocket: ServerTlsSocket): FrontState | undefined {
  return tlsSocket._parent?.[kFront];
}

function onSecureConnection(this: tls.Server, tlsSocket: ServerTlsSocket): void {
  const state = stateOfTls(tlsSocket);
  if (state === undefined) {
    tlsSocket.destroy(); // cannot happen with Node 20's tls.Server; fail closed if it ever does
    return;
  }
  // Client-initiated renegotiation (TLS 1.2) makes us do a key operation per request: refused, as HAProxy and
  // nginx do. The attempt is an 'error' on the socket, which the session answers by closing it.
  tlsSocket.disableRenegotiation();
  state.front.tlsSecure(state, tlsSocket);
}

/** Handshake failed: no/invalid client certificate, protocol or cipher mismatch, garbage, or a hang-up. */
function onTlsClientError(this: tls.Server, err: NodeJS.ErrnoException, tlsSocket: ServerTlsSocket): void {
  const state = stateOfTls(tlsSocket);
  tlsSocket.destroy();
  if (state === undefined) return;
  // May come after the raw socket's close already counted it (a refused certificate closes first). Not after a
  // close of ours (the timeout: its own line) or a client gone before a byte of TLS (a TCP health check): their
  // ECONNRESET here is no handshake that failed.
  if (state.ended !== null && state.ended !== 'tls_handshake') return;
  // Gone before a byte of TLS (its PROXY header, then a reset: HAProxy's check with send-proxy-v2), this error may come
  // before the raw socket's close: that close judges it, as nothing (CI saw it counted once in ten).
  if (state.ended === null && !sentTls(state)) return;
  state.listener.ctx.log.debug(
    { listener: state.listener.config.name, client: clientAddress(state), port: clientPort(state), code: err.code, certificate: tlsSocket.authorizationError ?? null },
    'TLS handshake failed',
  );
  rejectFront(state, 'tls_handshake', tlsSocket);
}

/** The client's address for a log line: the PROXY header's source when one came first, else the peer's (unmappedIPv4). */
function clientAddress(state: FrontState): string | undefined {
  const address = state.remote?.address ?? state.raw.remoteAddress;
  return address === undefined ? undefined : unmappedIPv4(address);
}

/** Its port, likewise (the raw socket's was read with its address at accept: net.Socket keeps both). */
function clientPort(state: FrontState): number | undefined {
  return state.remote?.port ?? state.raw.remotePort;
}

function onFrontTimeout(state: FrontState): void {
  state.timer = null;
  // As the session's own timeout says it (session.ts), with what was still awaited.
  const log = state.listener.ctx.log;
  if (log.isLevelEnabled('debug')) {
    log.debug(
      { listener: state.listener.config.name, client: clientAddress(state), port: clientPort(state), reason: 'timeout', awaiting: state.inTls ? 'TLS handshake' : 'PROXY header' },
      'connect rejected',
    );
  }
  rejectFront(state, 'timeout');
}

/** Whether the client sent a byte past its PROXY header (of TLS, on a TLS listener): a handshake that can fail. */
function sentTls(state: FrontState): boolean {
  return state.raw.bytesRead > state.proxyHeaderBytes;
}

function onFrontClose(this: Tagged): void {
  const state = this[kFront];
  if (state === undefined || state.ended !== null) return;
  // Closed during the handshake: Node's TLS server refused the client certificate, or the client gave up. Not a
  // client that closed before sending a byte of TLS (a TCP health check, a port scan): on a plain listener that
  // counts as nothing, and so it does here.
  if (state.inTls && sentTls(state)) {
    rejectFront(state, 'tls_handshake');
    return;
  }
  state.ended = 'gone';
  releaseTicket(state);
  if (state.timer !== null) clearTimeout(state.timer);
  state.timer = null;
  state.listener.connectionGone();
  state.listener.frontEnded(state.raw);
}

/**
 * A connection still in its PROXY header or TLS handshake is closed: over the memory ceiling (overload-guard.ts), or
 * displaced by a new one at the listener's last guard (Listener.displaceLongestWaiting). True if it was.
 */
export function shedFront(raw: Socket, reason: 'overloaded' | 'displaced'): boolean {
  const state = (raw as Tagged)[kFront];
  if (state === undefined || state.ended !== null) return false;
  rejectFront(state, reason);
  return true;
}

/** When a connection still in its PROXY header or TLS handshake was accepted (monotonicNow()); Infinity if it is not. */
export function frontAcceptedAt(raw: Socket): number {
  const state = (raw as Tagged)[kFront];
  return state === undefined || state.ended !== null ? Infinity : state.acceptedAt;
}

function rejectFront(state: FrontState, reason: FrontRejectReason, tlsSocket?: tls.TLSSocket): void {
  if (state.ended !== null) return;
  state.ended = reason;
  releaseTicket(state);
  if (state.timer !== null) clearTimeout(state.timer);
  state.timer = null;
  state.listener.frontRejected(reason);
  state.listener.frontEnded(state.raw);
  tlsSocket?.destroy();
  state.raw.destroy();
}

function releaseTicket(state: FrontState): void {
  if (state.ticket === null) return;
  state.listener.ctx.release?.(state.ticket);
  state.ticket = null;
}

function noop(): void {}

/** The client presented a certificate (verified or not): Node gives an empty object when it sent none. */
function hasPeerCertificate(socket: tls.TLSSocket): boolean {
  const cert = socket.getPeerCertificate();
  return cert !== null && typeof cert === 'object' && Object.keys(cert).length > 0;
}

/**
 * Builds the non-listening TLS server (start and every reload) from the PEM text the config was loaded with:
 * loadConfig reads and checks the files (config/load.ts checkTlsMaterial), the one place that does.
 */
function buildTlsServer(lc: ListenerConfig, handshakeTimeoutMs: number): tls.Server {
  const t = lc.tls!;
  if (t.material === null) {
    throw new MqttLbError(ErrorCodes.START_FILE, `listener ${lc.name}: no TLS material: the config was parsed without reading its files (loadConfig reads them)`);
  }
  const { cert, key, ca } = t.material;
  let server: tls.Server;
  try {
    server = tls.createServer({
      cert,
      key,
      ...(ca !== null ? { ca } : {}),
      requestCert: t.requestCert !== false,
      // Node's server refuses a missing certificate in the handshake (TLS alert) and an unverified one
      // right after it, before any application byte is read. `optional`: neither; tlsSecure refuses one presented
      // that does not verify.
      rejectUnauthorized: t.requestCert === true,
      minVersion: TLS_MIN_VERSION,
      ciphers: TLS_CIPHERS,
      honorCipherOrder: true,
      // Our own timer (clientConnectTimeout from TCP accept) ends slow handshakes first.
      handshakeTimeout: handshakeTimeoutMs + 1000,
    });
  } catch (err) {
    if (err instanceof MqttLbError) throw err;
    throw new MqttLbError(ErrorCodes.START_FILE, `listener ${lc.name}: bad TLS material: ${(err as Error).message}`, { cause: err });
  }
  server.on('secureConnection', onSecureConnection);
  server.on('tlsClientError', onTlsClientError);
  return server;
}

/** PROXY header towards the server, from the pool's current sendProxyProtocol. */
export function proxyHeaderFor(session: ClientSession, pool: { config: PoolConfig }): Buffer | null {
  const v = pool.config.sendProxyProtocol;
  if (v === 'off') return null;
  const c = session.client;
  let a: ProxyAddresses | null = null;
  const declared = declaredDestination.get(session);
  const local = declared?.address ?? c.localAddress;
  const localPort = declared?.port ?? c.localPort ?? 0;
  // Without both endpoints (should not happen on a connected socket: a closed one reports port 0) send
  // UNKNOWN/LOCAL rather than throw, or than a port 0 that a PROXY reader refuses (proxy-protocol.ts).
  if (net.isIP(session.remoteAddress) !== 0 && local !== undefined && net.isIP(local) !== 0 && session.remotePort > 0 && localPort > 0) {
    try {
      a = addressesOf(session.remoteAddress, session.remotePort, local, localPort);
    } catch {
      a = null;
    }
  }
  const peer = session.tlsPeer;
  if (v === 'v2' && a !== null && peer !== null) {
    const tlvs: ProxyTlvs = { verified: peer.verified, resumed: peer.resumed };
    if (peer.servername !== null) tlvs.authority = peer.servername;
    if (peer.cn !== null) tlvs.sslCn = peer.cn;
    if (peer.protocol !== null) tlvs.sslVersion = peer.protocol;
    try {
      return encodeFor(v, a, tlvs);
    } catch {
      // TLVs over the 4096-byte block limit (an absurd CN): the address matters more than the TLVs.
    }
  }
  return encodeFor(v, a);
}

/** The front and header builder a listener needs (front null when it needs neither TLS nor PROXY). */
export function buildFront(lc: ListenerConfig, clientConnectTimeoutMs: number): [Front | null, ProxyHeaderBuilder | null] {
  const front = lc.tls !== null || lc.acceptProxyProtocol.length > 0 ? new ConnectionFront(lc, clientConnectTimeoutMs) : null;
  // The builder reads the pool's sendProxyProtocol at dial time, so a reload switching it applies at once.
  return [front, proxyHeaderFor];
}
