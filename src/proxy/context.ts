/**
 * What a session needs from the rest of the balancer. One object per running app, shared by every
 * listener and session (so sessions carry a reference, not closures).
 */
import type { Logger } from 'pino';
import type { LimitsConfig, PoolConfig } from '../config/types.js';
import type { Server } from '../balancer/server.js';
import type { ClientIdHolder, ClientIdRegistry } from '../balancer/client-id-registry.js';
import type { RefusalReason } from './connack.js';
import type { VerdictWaits } from './verdict-wait.js';
import type { ConnackDeadlines } from './connack-deadlines.js';

export interface RoutingKeys {
  clientId: Buffer;
  username: Buffer | null;
}

/** The part of balancer/Pool the proxy uses. */
export interface RoutingPool {
  readonly name: string;
  config: PoolConfig;
  /** Servers to try in order; [] = none can take a session (`no_server`); FULL_CANDIDATES = at maxConnections (`server_full`). */
  candidates(keys: RoutingKeys): Server[];
  routingKey(keys: RoutingKeys): Buffer;
  /** Until when (performance.now() time) to wait for a first health verdict before placing `key`; 0 = now. */
  verdictWaitUntil(key: Buffer, candidates: readonly Server[]): number;
  /** The client IDs of its proxied sessions in this process (the takeover rule across brokers). */
  readonly clientIds: ClientIdRegistry<ClientIdHolder>;
  /** In config order; a reload replaces it. */
  readonly servers: readonly Server[];
}

/** Why a connection was not proxied: answered with a CONNACK (RefusalReason) or closed without one. */
export type RejectReason = RefusalReason | 'malformed' | 'not_connect' | 'too_large' | 'timeout' | 'displaced' | 'bad_proxy_header' | 'tls_handshake';

/** Counters a listener keeps; read at scrape time (never a metric call per packet). */
export class ListenerStats {
  active = 0;
  /** Sessions past their CONNECT that hold one of the listener's maxConnections slots (session.ts holdSlot). */
  admitted = 0;
  readonly outcomes = { proxied: 0, rejected: 0, failed: 0 };
  readonly rejected = new Map<string, number>();
  /** Proxied sessions ended, by CloseReason (sessionClosed). */
  readonly closed = new Map<string, number>();
  /** Of those, the 5.0 sessions the balancer told why with a DISCONNECT, by CloseReason. */
  readonly told = new Map<string, number>();
  constructor(
    readonly name: string,
    public bind: string,
    public tls: boolean,
  ) {}

  count(reason: string): void {
    bump(this.rejected, reason);
  }

  /** A proxied session ended (once per session, at its close: never on the data path). */
  sessionClosed(reason: string, told: boolean): void {
    bump(this.closed, reason);
    if (told) bump(this.told, reason);
  }
}

function bump(counts: Map<string, number>, reason: string): void {
  counts.set(reason, (counts.get(reason) ?? 0) + 1);
}

export interface ProxyContext {
  log: Logger;
  limits: LimitsConfig;
  logSessions: boolean;
  pool(name: string): RoutingPool | undefined;
  /** Connections on all listeners, from accept (before their CONNECT too). */
  totalActive: number;
  /** Sessions past their CONNECT holding a slot of the global cap, on all listeners. */
  totalAdmitted: number;
  /** The global cap after clamping to the descriptor budget. */
  maxConnections: number;
  /**
   * Client connections and sessions (a server socket each) that the open-file limit holds beside the reserve
   * (Budget.descriptorRoom); past it a connection is closed at accept (Listener, `descriptors_exhausted`), unless its
   * listener holds its own last guard's worth (then that guard drops it, `accept_dropped`).
   */
  descriptorRoom: number;
  /** Over the memory ceiling (limits.maxMemory): new connections are closed at accept (overload-guard.ts). */
  overloaded: boolean;
  /** Bytes the unfinished CONNECTs hold beyond their first buffer, all listeners together (limits.maxPendingConnectBytes). */
  pendingConnectBytes: number;
  /** A connection was closed because its CONNECT would take more than limits.maxPendingConnectBytes leaves. */
  onPendingConnectBytesFull(): void;
  /**
   * What the unfinished CONNECTs may still allocate before memory is measured again (limits.maxMemory): the headroom
   * below the ceiling at the last measure, less the buffers and reads they took since (frees not counted: an upper
   * bound). Infinity without a ceiling.
   */
  connectGrowthBudget: number;
  /**
   * A CONNECT needs `bytes`, more than that budget: memory is measured now and the budget set from it. False when
   * `bytes` do not fit below the ceiling even so: the CONNECT is closed, and the ceiling counts as reached (the
   * overload is entered on the next turn, overload-guard.ts).
   */
  remeasureConnectGrowthBudget(bytes: number): boolean;
  onServerConnected(server: Server, seconds: number): void;
  /**
   * A dial failed. serverCaused: refused/reset/timeout (worth a probe). localError: the code when this host failed
   * (EMFILE, ENFILE, EADDRNOTAVAIL...: nothing to do with the server), else null.
   */
  onDialFailure(server: Server, serverCaused: boolean, localError: string | null): void;
  /** A session ended with not one byte from its server in a second or more (session.ts reportSilentServer). */
  onServerSilent(server: Server): void;
  /** A session starts (before its CONNECT): null, or why it is closed at once (per-source cap); see admission.ts. */
  arrive?(session: AdmissionTicket): RejectReason | null;
  /** Admission beyond the connection caps (per-source, accept rate); see admission.ts. */
  admit?(session: AdmissionTicket): 'ok' | 'queued' | RejectReason;
  /** The session ended: release what admit() held for it. */
  release?(session: AdmissionTicket): void;
  /** Sessions waiting for a first health verdict before they are placed (verdict-wait.ts). */
  readonly verdictWaits: VerdictWaits;
  /** pools.<name>.serverConnackTimeout: routed sessions whose server has not answered yet (connack-deadlines.ts). */
  readonly connackDeadlines: ConnackDeadlines;
  /**
   * A pool that a reload being prepared adds (its listener is bound before the reload commits): until when
   * (performance.now() time) its clients may wait for it; 0 = no such pool.
   */
  poolPendingUntil(name: string): number;
}

/** What admission control sees of a session and calls back when a queued session may proceed. */
export interface AdmissionTicket {
  readonly remoteAddress: string;
  proceed(): void;
  refuse(reason: RejectReason): void;
  readonly closed: boolean;
}
