/**
 * Messages between the proxy process (facade, index.ts) and the heartbeat worker thread (worker.ts).
 * Everything here crosses postMessage, so: plain data only (no bigint in status, no class instances).
 */
import type { FailoverConfig } from '../config/types.js';
import type { DropReason } from './advert.js';
import type { RunningChild } from './children.js';
import type { LogLevel } from './log.js';
import type { FailoverState } from './state-machine.js';

/** How often the worker posts a status snapshot (and on every state change). */
export const STATUS_INTERVAL_MS = 100;

export interface WorkerInit {
  config: FailoverConfig;
  /** The 32-byte key (copied into the worker). */
  key: Uint8Array;
  /** The proxy does not serve yet: BACKUP at most until 'serving' (FailoverStateMachine.setHeld). */
  held: boolean;
}

export type MainToWorker =
  | { type: 'tracking'; fault: boolean; priorityPenalty: number }
  // The proxy's listeners are bound: the hold of a start ends (FailoverStateMachine.setHeld).
  | { type: 'serving' }
  // A reload: the settings a reload applies (reload.ts planFailoverReload), the rest as they run.
  | { type: 'reconfigure'; config: FailoverConfig }
  | { type: 'resign'; seq: number }
  // The sessions on the VIPs of release `seq` are closed (or the proxy gave up): the VIPs may go.
  | { type: 'released'; seq: number }
  | { type: 'close' };

export type PeerState = 'backup' | 'master' | 'fault';

export interface WorkerPeerStatus {
  address: string;
  state: PeerState;
  priority: number;
  /** threadSharedNow() of the last accepted advert (comparable across threads, unmoved by a wall-clock step). */
  lastAdvertAt: number;
  /** The interval the peer advertises, ms (to call it stale after missed adverts). */
  intervalMs: number;
}

/**
 * The peer has been silent for longer than a Master_Down_Interval (3 intervals + at most one of skew), plus the
 * granularity of the worker's status updates: its state is unknown (`now` and `lastAdvertAt` on threadSharedNow()).
 */
export function peerSilent(peer: WorkerPeerStatus, now: number): boolean {
  return now - peer.lastAdvertAt > 4 * peer.intervalMs + 2 * STATUS_INTERVAL_MS;
}

export interface WorkerInstanceStatus {
  routerId: number;
  state: FailoverState;
  /** What our adverts carry now (0 while resigned or in FAULT). */
  priority: number;
  vips: string[];
  resigned: boolean;
  /** Every peer heard since the start, by address: each one's last advert (index.ts picks the contract's `peer`). */
  peers: WorkerPeerStatus[];
}

export interface WorkerStatus {
  type: 'status';
  instances: WorkerInstanceStatus[];
  dropped: Record<DropReason, number>;
  /** The highest `resign` seq processed before this status was taken. */
  resignSeq: number;
  /** Our advert source address. */
  localAddress: string;
  /** The names of the failover.track.scripts failing now. */
  failingScripts: string[];
}

export type WorkerToMain =
  | { type: 'ready' }
  | { type: 'fatal'; code: string; message: string }
  | {
      type: 'state';
      routerId: number;
      from: FailoverState;
      to: FailoverState;
      /** Date.now() in the worker at the transition. */
      at: number;
    }
  /** This host's network went out (the interface without carrier, its own address gone) or came back, in any state. */
  | { type: 'network'; out: boolean }
  // Demoted without a stop: close the sessions whose client connected to `vips`, then answer 'released'.
  | { type: 'release'; routerId: number; vips: string[]; seq: number }
  | WorkerStatus
  | { type: 'log'; level: LogLevel; obj: Record<string, unknown>; msg: string }
  // A child process of the thread started or ended: those running are stopped by the main thread should the thread
  // die (children.ts, orphan.ts).
  | ({ type: 'child' } & RunningChild)
  | { type: 'child-ended'; pid: number }
  | { type: 'closed' };
