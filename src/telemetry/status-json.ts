/**
 * The /api/status document (design.md §6): its type, shared by the admin server, the status page's
 * consumers and `mqtt-lb status`, and the one function that builds it from the live state.
 */
import type { AdminState, CheckResult, ServerState } from '../balancer/server.js';
import type { FailoverInstanceStatus, TelemetrySource } from './source.js';

export interface StatusLastCheck {
  result: CheckResult;
  ageMs: number;
  durationMs: number;
}

export interface StatusServer {
  name: string;
  address: string;
  state: ServerState;
  admin: AdminState;
  weight: number;
  backup: boolean;
  sessions: number;
  lastCheck: StatusLastCheck | null;
}

export interface StatusPool {
  name: string;
  balance: string;
  servers: StatusServer[];
}

export interface StatusListener {
  name: string;
  bind: string;
  sessions: number;
  tls: boolean;
}

/**
 * An instance as the contract shows it: `peer` only (the one that matters, peer-view.ts mainPeer). Every peer is in
 * /metrics (`mqtt_lb_failover_peer_state`); the document keeps exactly the contract's keys.
 */
export type StatusFailoverInstance = Omit<FailoverInstanceStatus, 'peers'>;

export type StatusFailover = { enabled: false } | { enabled: true; instances: StatusFailoverInstance[] };

export interface StatusJson {
  version: string;
  uptimeSeconds: number;
  failover: StatusFailover;
  listeners: StatusListener[];
  pools: StatusPool[];
}

/** Builds the document with exactly the contract's keys, in the contract's order. */
export function buildStatus(source: TelemetrySource, now: number = Date.now()): StatusJson {
  const f = source.failover();
  const failover: StatusFailover = f
    ? {
        enabled: true,
        instances: f.instances.map((i) => ({
          routerId: i.routerId,
          state: i.state,
          priority: i.priority,
          vips: [...i.vips],
          peer: i.peer
            ? { address: i.peer.address, state: i.peer.state, lastAdvertAgeMs: Math.round(i.peer.lastAdvertAgeMs) }
            : null,
        })),
      }
    : { enabled: false };
  return {
    version: source.version,
    uptimeSeconds: Math.max(0, Math.round(now - source.startedAt)) / 1000,
    failover,
    listeners: source.listeners().map((l) => ({ name: l.name, bind: l.bind, sessions: l.active, tls: l.tls })),
    pools: source.pools().map((p) => ({
      name: p.name,
      balance: p.balance,
      servers: p.servers.map((s) => ({
        name: s.name,
        address: s.config.address,
        state: s.state,
        admin: s.admin,
        weight: s.config.weight,
        backup: s.config.backup,
        sessions: s.sessionCount,
        lastCheck: s.lastCheck
          ? {
              result: s.lastCheck.result,
              ageMs: Math.max(0, Math.round(now - s.lastCheck.at)),
              durationMs: Math.round(s.lastCheck.durationMs),
            }
          : null,
      })),
    })),
  };
}
