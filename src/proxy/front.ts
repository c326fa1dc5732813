/**
 * What happens on a connection before the MQTT session starts: an optional PROXY header from trusted
 * sources (acceptProxyProtocol), then optional TLS. Both count inside limits.clientConnectTimeout from
 * TCP accept. Also builds the PROXY header we send to servers (sendProxyProtocol).
 *
 * Order on the wire from a cloud NLB: PROXY header (cleartext) → TLS ClientHello → MQTT CONNECT.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ListenerConfig, PoolConfig } from '../config/types.js';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { CidrSet } from './cidr.js';
import { parseProxyHeader, encodeFor, addressesOf, type ProxyTlvs } from './proxy-protocol.js';
import type { Front, Listener, ProxyHeaderBuilder } from './listener.js';
import type { ClientSession } from './session.js';

/** A PROXY v2 header with TLVs is bounded at 16 + 4096 bytes by our parser; v1 at 107. */
const MAX_PROXY_HEADER = 16 + 4096;

export interface TlsPeer {
  servername: string | null;
  cn: string | null;
  verified: boolean;
  protocol: string | null;
}

const kFront = Symbol('mqtt-lb.front');

interface FrontState {
  listener: Listener;
  front: ConnectionFront;
  acceptedAt: number;
  timer: NodeJS.Timeout | null;
  buf: Buffer | null;
  remote: { address: string; port: number } | undefined;
  done: boolean;
}

type Tagged = Socket & { [kFront]?: FrontState };

export class ConnectionFront implements Front {
  private readonly trusted: CidrSet | null;
  private readonly secureContext: tls.SecureContext | null;
  private readonly tlsConfig: ListenerConfig['tls'];
  private readonly timeoutMs: () => number;

  constructor(lc: ListenerConfig, timeoutMs: () => number) {
    this.trusted = lc.acceptProxyProtocol.length > 0 ? new CidrSet(lc.acceptProxyProtocol) : null;
    this.tlsConfig = lc.tls;
    this.timeoutMs = timeoutMs;
    this.secureContext = lc.tls === null ? null : buildSecureContext(lc);
  }

  accept(socket: Socket, listener: Listener): void {
    const state: FrontState = { listener, front: this, acceptedAt: Date.now(), timer: null, buf: null, remote: undefined, done: false };
    (socket as Tagged)[kFront] = state;
    state.timer = setTimeout(onFrontTimeout, this.timeoutMs(), socket);
    socket.on('close', onFrontClose);
    socket.on('error', noop);
    const source = socket.remoteAddress ?? '';
    if (this.trusted !== null && this.trusted.has(source)) {
      socket.on('data', onProxyData);
      return;
    }
    this.afterProxy(socket, state, undefined);
  }

  /** PROXY header done (or not required): TLS next, else the session. */
  afterProxy(socket: Socket, state: FrontState, rest: Buffer | undefined): void {
    if (this.secureContext === null) {
      this.handOver(socket, state, socket, rest, null);
      return;
    }
    socket.pause();
    if (rest !== undefined && rest.length > 0) socket.unshift(rest);
    const cfg = this.tlsConfig!;
    const tlsSocket = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: this.secureContext,
      requestCert: cfg.requestCert,
      rejectUnauthorized: cfg.requestCert,
    });
    (tlsSocket as Tagged)[kFront] = state;
    tlsSocket.on('error', onTlsError);
    tlsSocket.once('secure', onTlsSecure);
  }

  handOver(raw: Socket, state: FrontState, clientSocket: Socket, preread: Buffer | undefined, peer: TlsPeer | null): void {
    if (state.done) return;
    state.done = true;
    if (state.timer !== null) clearTimeout(state.timer);
    raw.removeListener('close', onFrontClose);
    raw.removeListener('data', onProxyData);
    clientSocket.removeListener('error', onTlsError);
    const session = state.listener.startSession(clientSocket, preread, state.acceptedAt, state.remote);
    session.tlsPeer = peer;
    if (peer !== null && peer.verified && peer.cn !== null && this.tlsConfig?.certAsUsername === true) {
      session.usernameOverride = Buffer.from(peer.cn, 'utf8');
    }
  }
}

function onProxyData(this: Socket, chunk: Buffer): void {
  const state = (this as Tagged)[kFront]!;
  state.buf = state.buf === null ? chunk : Buffer.concat([state.buf, chunk]);
  const r = parseProxyHeader(state.buf);
  if (r.kind === 'more') {
    if (state.buf.length > MAX_PROXY_HEADER) rejectFront(this, state, 'bad_proxy_header');
    return;
  }
  if (r.kind === 'invalid') {
    rejectFront(this, state, 'bad_proxy_header');
    return;
  }
  this.removeListener('data', onProxyData);
  if (!r.local && r.addresses !== null) state.remote = { address: r.addresses.srcAddress, port: r.addresses.srcPort };
  const rest = state.buf.subarray(r.headerLength);
  state.buf = null;
  state.front.afterProxy(this, state, rest.length > 0 ? Buffer.from(rest) : undefined);
}

function onTlsSecure(this: tls.TLSSocket): void {
  const state = (this as Tagged)[kFront]!;
  let cn: string | null = null;
  const verified = this.authorized;
  if (verified) {
    const cert = this.getPeerCertificate();
    const subjectCn = cert?.subject?.CN;
    cn = typeof subjectCn === 'string' ? subjectCn : Array.isArray(subjectCn) ? (subjectCn[0] ?? null) : null;
  }
  const servername = (this as unknown as { servername?: string | false }).servername;
  const peer: TlsPeer = { servername: typeof servername === 'string' ? servername : null, cn, verified, protocol: this.getProtocol() };
  state.front.handOver(this, state, this, undefined, peer);
}

function onTlsError(this: tls.TLSSocket): void {
  const state = (this as Tagged)[kFront]!;
  rejectFront(this, state, 'tls_handshake');
}

function onFrontTimeout(socket: Socket): void {
  const state = (socket as Tagged)[kFront]!;
  state.timer = null;
  rejectFront(socket, state, 'timeout');
}

function onFrontClose(this: Socket): void {
  const state = (this as Tagged)[kFront]!;
  if (state.done) return;
  state.done = true;
  if (state.timer !== null) clearTimeout(state.timer);
  state.listener.connectionGone();
}

function rejectFront(socket: Socket, state: FrontState, reason: string): void {
  if (state.done) return;
  state.done = true;
  if (state.timer !== null) clearTimeout(state.timer);
  state.listener.frontRejected(reason);
  socket.destroy();
}

function noop(): void {}

function readFileFor(lc: ListenerConfig, key: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new MqttLbError(ErrorCodes.START_FILE, `listener ${lc.name}: cannot read tls.${key} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

function buildSecureContext(lc: ListenerConfig): tls.SecureContext {
  const t = lc.tls!;
  try {
    return tls.createSecureContext({
      cert: readFileFor(lc, 'cert', t.cert),
      key: readFileFor(lc, 'key', t.key),
      ...(t.ca !== null ? { ca: readFileFor(lc, 'ca', t.ca) } : {}),
      minVersion: 'TLSv1.2',
    });
  } catch (err) {
    if (err instanceof MqttLbError) throw err;
    throw new MqttLbError(ErrorCodes.START_FILE, `listener ${lc.name}: bad TLS material: ${(err as Error).message}`, { cause: err });
  }
}

/** PROXY header towards the server, from the pool's current sendProxyProtocol. */
export function proxyHeaderFor(session: ClientSession, pool: { config: PoolConfig }): Buffer | null {
  const v = pool.config.sendProxyProtocol;
  if (v === 'off') return null;
  const c = session.client;
  // Without both endpoints (should not happen on a connected socket) send UNKNOWN/LOCAL rather than throw.
  const local = c.localAddress;
  const a = net.isIP(session.remoteAddress) === 0 || local === undefined || net.isIP(local) === 0 ? null : addressesOf(session.remoteAddress, session.remotePort, local, c.localPort ?? 0);
  const tlvs: ProxyTlvs = {};
  const peer = session.tlsPeer;
  if (peer !== null) {
    if (peer.servername !== null) tlvs.authority = peer.servername;
    if (peer.cn !== null) tlvs.sslCn = peer.cn;
    if (peer.protocol !== null) tlvs.sslVersion = peer.protocol;
    tlvs.verified = peer.verified;
  }
  return encodeFor(v, a, tlvs);
}

/** The front and header builder a listener needs; [null, null] when it needs neither. */
export function buildFront(lc: ListenerConfig, pool: PoolConfig, limits: { clientConnectTimeout: number } | (() => number), _log?: Logger): [Front | null, ProxyHeaderBuilder | null] {
  const timeout = typeof limits === 'function' ? limits : () => limits.clientConnectTimeout;
  const front = lc.tls !== null || lc.acceptProxyProtocol.length > 0 ? new ConnectionFront(lc, timeout) : null;
  // The builder reads the pool's sendProxyProtocol at dial time, so a reload switching it applies at once.
  void pool;
  return [front, proxyHeaderFor];
}
