/**
 * IPC between the cluster primary and its workers (workers > 1). The primary owns health, admin,
 * metrics and failover; workers own listeners and sessions. Plain JSON messages over node:cluster IPC.
 */
import type { LbConfig } from '../config/types.js';
import type { AdminState, HealthState, LastCheck } from '../balancer/server.js';
import type { LagWindow } from '../telemetry/loop-lag.js';
import type { ProcessMetricsJson } from '../telemetry/process-metrics.js';

export interface ServerStateWire {
  pool: string;
  server: string;
  /** Where its health was judged (serverPlace): a worker with the server elsewhere ignores the health. */
  place: string;
  health: HealthState;
  admin: AdminState;
  lastCheck: LastCheck | null;
}

export interface ListenerSnapshot {
  name: string;
  bind: string;
  tls: boolean;
  listening: boolean;
  /** Accepting works (no EMFILE-style accept errors): what failover tracking watches. */
  acceptHealthy: boolean;
  active: number;
  outcomes: { proxied: number; rejected: number; failed: number };
  rejected: Array<[string, number]>;
  closed: Array<[string, number]>;
  told: Array<[string, number]>;
}

/** A worker's memory ceiling (its share of limits.maxMemory): over it, and the memory it counts. */
export interface OverloadSnapshot {
  active: boolean;
  inUseBytes: number;
}

export interface ServerSnapshot {
  pool: string;
  server: string;
  sessions: number;
  bytesIn: number;
  bytesOut: number;
  connectErrors: number;
}

/**
 * A worker's client ID claims and releases, in the order they happened (client-id-exchange.ts). `atMicros`: when the
 * claiming session's CONNECT was sent, on the host's monotonic clock (process.hrtime: one clock for every process),
 * which orders claims from different workers. A release names its claim's serial only (a client ID may be 64 KiB).
 */
export type ClientIdEvent = [kind: 'claim', pool: string, id: string, serial: number, place: string, atMicros: number] | [kind: 'release', serial: number];

/**
 * Close the session that holds client ID `id` of `pool` under `serial`: a newer one holds it on another server.
 * `acceptedFirst`: its CONNACK had accepted it before the newer one's (ClientIdHolder.takenOver), as against one still
 * waiting for it then (reported after the newer claim). `to`: the server of the newer one, by name (for the log line).
 */
export type TakeoverOrder = [pool: string, id: string, serial: number, acceptedFirst: boolean, to: string];

export type ToWorker =
  // warmUp: false for a worker that replaces one that died (its siblings serve meanwhile: no warm-up beside them).
  | { t: 'config'; config: LbConfig; index: number; workers: number; warmUp: boolean }
  // A stop signal reached the primary while the workers start: cut their warm-up short (warm-up.ts) and bind nothing.
  | { t: 'warm-up-stop' }
  | { t: 'states'; states: ServerStateWire[] }
  // A reload in two phases: every worker prepares (binds), then all commit or all abort (primary.ts).
  | { t: 'reload'; config: LbConfig; id: number }
  | { t: 'reload-commit'; id: number }
  | { t: 'reload-abort'; id: number }
  // The primary's config, for a worker that started while a reload was under way (one phase: nothing to agree).
  | { t: 'reconfigure'; config: LbConfig }
  | { t: 'stop'; evictRate: number | null }
  // Failover demoted the primary's instance: close the sessions on these VIPs (App.releaseVipSessions), answer.
  | { t: 'release-vips'; id: number; vips: string[]; evictRate: number; spreadMs: number }
  // The primary's instance is master again: what release `id` has not closed yet stays.
  | { t: 'release-vips-cancel'; id: number }
  // A second stop signal: close every session now.
  | { t: 'destroy' }
  // Client IDs another worker's newer sessions took over on another server [MQTT-3.1.4-3] (client-id-ledger.ts).
  | { t: 'takeovers'; orders: TakeoverOrder[] };

export type ToPrimary =
  | { t: 'hello' } // the worker's message handler is registered (ESM loads after 'online')
  | { t: 'ready' }
  // A stop came while it started ('warm-up-stop', or 'stop' itself): it bound nothing and stops (run.ts's abandon).
  | { t: 'abandoned' }
  | { t: 'fatal'; message: string; code: string | null }
  | { t: 'probe'; pool: string; server: string }
  | { t: 'reload-prepared'; id: number; error: string | null }
  // The commit or abort of reload `id` is done here (what it removed is closed): the primary's reload ends after all.
  | { t: 'reload-settled'; id: number }
  | { t: 'vips-released'; id: number }
  | { t: 'process-metrics'; metrics: ProcessMetricsJson }
  | { t: 'client-ids'; events: ClientIdEvent[] }
  | { t: 'snapshot'; listeners: ListenerSnapshot[]; servers: ServerSnapshot[]; connects: Array<[string, string, number]>; lag: LagWindow | null; overload: OverloadSnapshot };

export function workerCount(workers: number | 'auto', cores: number): number {
  return workers === 'auto' ? Math.max(1, cores) : workers;
}
