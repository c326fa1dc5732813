/**
 * What telemetry reads from the running balancer (implemented by src/app.ts).
 * Everything here is read at scrape/request time: the data path keeps plain numbers,
 * telemetry turns them into metrics and JSON only when someone asks.
 */
import type { CheckResult, EvictReason, Server } from '../balancer/server.js';
import type { CloseReason } from '../proxy/session.js';
import type { LagWindow } from './loop-lag.js';
import type { ProcessMetricsJson } from './process-metrics.js';

export interface ListenerStats {
  name: string;
  bind: string;
  tls: boolean;
  active: number; // live client connections on this listener
  outcomes: { proxied: number; rejected: number; failed: number }; // plain counters, read at scrape
  rejected: Map<string, number>; // reason -> count (contract §5 reasons + server_connect_failed + empty_client_id_persistent)
  closed: Map<string, number>; // proxied sessions ended: close reason -> count
  told: Map<string, number>; // of those, 5.0 sessions sent a DISCONNECT first: close reason -> count
}

// The failover runtime's own status types: one definition, read here for /api/status and metrics.
export type { FailoverInstanceStatus, FailoverStats } from '../failover/index.js';
export { PEER_VIEW_STATES } from '../failover/peer-view.js';
import type { FailoverInstanceStatus, FailoverStats } from '../failover/index.js';

/** The memory ceiling (limits.maxMemory): with workers, over it when any worker is; memory summed over them. */
export interface OverloadStatus {
  active: boolean;
  memoryInUseBytes: number;
  maxMemoryBytes: number; // 0 = no ceiling
}

export interface TelemetrySource {
  version: string;
  startedAt: number; // Date.now() at start
  listeners(): ListenerStats[];
  pools(): Array<{ name: string; balance: string; servers: Server[] }>;
  failover(): { instances: FailoverInstanceStatus[]; stats: FailoverStats } | null; // null = failover off
  ready(): { ok: true } | { ok: false; reason: string };
  overload(): OverloadStatus;
  /** With workers > 1: the worst event-loop lag the proxy workers saw since the previous call. */
  workerLoopLag?(): LagWindow | null;
  /** With workers > 1: each proxy worker's latest process and Node.js metrics (process-metrics.ts). */
  workerProcessMetrics?(): ProcessMetricsJson[];
  /** With workers > 1: how many proxy workers serve now, and how many were started again after one exited. */
  workerCounts?(): WorkerCounts;
}

export interface WorkerCounts {
  /** Workers that serve (ready), of the configured number. */
  serving: number;
  /** Replacements that came to serve after a worker exited, since start. */
  restarts: number;
  /** Workers that exited unexpectedly, since start (each replaced). */
  exits: number;
}

export interface AdminActions {
  setServerAdmin(pool: string, server: string, state: 'ready' | 'drain' | 'maint'): boolean; // false = no such pool/server
}

/** Failover states as exported (contract §6). */
export const FAILOVER_STATES = ['init', 'backup', 'master', 'fault'] as const;
export type FailoverState = (typeof FAILOVER_STATES)[number];

/** Reasons an advert is dropped (contract §6). */
export const ADVERT_DROP_REASONS = ['bad_hmac', 'replay', 'router_id', 'malformed'] as const;

/**
 * Every connect rejection reason the contract names (§5 table, the silent closes, plus
 * `server_connect_failed` and `empty_client_id_persistent`). Exported at 0 from the start so
 * `rate()`/`increase()` see the first rejection of each kind.
 */
export const REJECT_REASONS = [
  'no_server',
  'server_full',
  'listener_full',
  'global_full',
  'source_full',
  'rate_limited',
  'accept_queue_full',
  'shutting_down',
  'overloaded',
  'bad_protocol_level',
  'malformed',
  'not_connect',
  'too_large',
  'timeout',
  'server_connect_failed',
  // Routed, and no CONNACK from its server within serverConnackTimeout: answered as server_connect_failed.
  'server_connack_timeout',
  'empty_client_id_persistent',
  // Before the session (front): not in the contract's table, closed without an answer.
  'bad_proxy_header',
  'tls_handshake',
  'accept_dropped',
  'descriptors_exhausted',
  // At the listener's last guard, a connection that had waited longest for its CONNECT, closed for a new one.
  'displaced',
] as const;

/**
 * Why a proxied session ended (the access log's `reason`): its client or server closed it or broke, its server never
 * sent its CONNACK, or the balancer closed it (the EvictReasons). Exported at 0 from the start, as REJECT_REASONS.
 */
export const SESSION_CLOSE_REASONS = [
  'client_closed',
  'client_error',
  'server_closed',
  'server_error',
  'server_connack_timeout',
  'server_down',
  'rebalance',
  'drain',
  'failover',
  'shutdown',
  'takeover',
  'idle',
] as const satisfies readonly CloseReason[];

/** The closes the balancer decides: a 5.0 client may be told why with a DISCONNECT (src/proxy/disconnect.ts). */
export const TOLD_CLOSE_REASONS = ['server_down', 'rebalance', 'drain', 'failover', 'shutdown', 'takeover', 'idle'] as const satisfies readonly EvictReason[];

// Every CloseReason is in the list (a new one must be exported too).
const closeReasonsComplete: Exclude<CloseReason, (typeof SESSION_CLOSE_REASONS)[number]> extends never ? true : never = true;
const toldReasonsComplete: Exclude<EvictReason, (typeof TOLD_CLOSE_REASONS)[number]> extends never ? true : never = true;
void closeReasonsComplete;
void toldReasonsComplete;

/** Probe results (contract §6, `result` label). */
export const CHECK_RESULTS = ['ok', 'timeout', 'refused', 'bad_connack', 'http_status', 'error'] as const satisfies readonly CheckResult[];
