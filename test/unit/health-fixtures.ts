/**
 * Shared fakes for the health unit tests: a manual clock with timers, sessions that record evictions,
 * pool configs, a fake pool and a log sink. No sockets, no real time.
 */
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { Server, type EvictReason, type LiveSession } from '../../src/balancer/server.js';
import type { PoolConfig, ServerConfig } from '../../src/config/types.js';
import type { ReactingPool } from '../../src/health/pool-view.js';
import { healthConfig } from './balancer-fixtures.js';

export class ManualClock {
  t = 0;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  readonly now = (): number => this.t;
  readonly setTimer = (fn: () => void, ms: number): unknown => {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  };
  readonly clearTimer = (h: unknown): void => {
    this.timers.delete(h as number);
  };
  get pendingTimers(): number {
    return this.timers.size;
  }
  /** Run timers in time order up to `until` (inclusive); `lateBy` delays every firing (a busy loop). */
  advanceTo(until: number, lateBy = 0): void {
    for (let guard = 0; guard < 1_000_000; guard++) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (!next || e[1].at < next[1].at) next = e;
      if (!next || next[1].at + lateBy > until) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at + lateBy);
      next[1].fn();
    }
    this.t = Math.max(this.t, until);
  }
}

export interface FakeSession extends LiveSession {
  evictedAt: number | null;
  evictReason: EvictReason | null;
}

export function fakeSession(clock: ManualClock, key = '', server?: Server): FakeSession {
  const s: FakeSession = {
    bytesIn: 0,
    bytesOut: 0,
    routingKey: Buffer.from(key),
    evictedAt: null,
    evictReason: null,
    evict(reason: EvictReason) {
      if (s.evictedAt !== null) return;
      s.evictedAt = clock.t;
      s.evictReason = reason;
      server?.sessionClosed(s); // as the proxy does when the session ends
    },
  };
  server?.sessions.add(s);
  return s;
}

export function serverConfig(name: string, port = 1883): ServerConfig {
  return { name, address: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, backup: false, healthUrl: null, maxConnections: 0 };
}

export function poolConfig(overrides: Partial<PoolConfig> = {}, health: Partial<PoolConfig['health']> = {}): PoolConfig {
  return {
    name: 'brokers',
    balance: 'client-id-hash',
    fallback: 'least-connections',
    serverConnectTimeout: 3000,
    serverConnackTimeout: 0,
    retries: 2,
    sendProxyProtocol: 'off',
    onServerDown: 'keep',
    onServerUp: 'keep',
    takeover: 'client-id-and-username',
    evictRate: 500,
    servers: [],
    ...overrides,
    health: { ...healthConfig('mqtt'), ...health },
  };
}

/**
 * A pool whose `owner` maps routing keys by their first character to a server name ('a...' -> "a"),
 * among servers that accept new sessions: enough to test who moves where.
 */
export class FakePool implements ReactingPool {
  readonly name = 'brokers';
  constructor(
    public config: PoolConfig,
    public servers: Server[],
  ) {}
  owner(routingKey: Buffer): Server | null {
    if (routingKey.length === 0) return null;
    const wanted = routingKey.toString().slice(0, 1);
    const s = this.servers.find((x) => x.name === wanted);
    return s && s.acceptsNew ? s : null;
  }
  /** Keys whose named server (the first letter) is unknown: it would take them once up. */
  pendingWouldTake(routingKey: Buffer, current: Server): boolean {
    const wanted = this.servers.find((x) => x.name === routingKey.toString().slice(0, 1));
    return wanted !== undefined && wanted !== current && wanted.state === 'unknown';
  }
  /** An unknown server is due its verdict within a second. */
  pendingVerdictMs(): number {
    return this.servers.some((x) => x.state === 'unknown') ? 1000 : 0;
  }
  /** The routing keys the reactions reported as moved by a rebalance, in order. */
  readonly rebalancedKeys: string[] = [];
  noteRebalanced(routingKey: Buffer): void {
    this.rebalancedKeys.push(routingKey.toString());
  }
}

export function makeServer(name: string, health: 'unknown' | 'up' | 'down' = 'up', pool = 'brokers'): Server {
  return new Server(pool, serverConfig(name), health);
}

/** A pino logger writing parsed JSON lines into `lines`. */
export function logSink(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}
