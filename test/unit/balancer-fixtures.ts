/**
 * Shared builders for the balancer unit tests: pool configs, servers in a chosen state, fake live
 * sessions, deterministic keys and a seeded random source. No I/O.
 */
import type { EvictReason, LiveSession, Server } from '../../src/balancer/server.js';
import type { BalanceStrategy, FallbackStrategy, HealthConfig, PoolConfig, ServerConfig } from '../../src/config/types.js';
export { seededRandom } from '../fixtures/random.js';

export interface ServerSpec {
  /** Default 10.0.0.(11 + its index): give it to keep an address when a reload reorders the servers. */
  host?: string;
  name: string;
  weight?: number;
  backup?: boolean;
  maxConnections?: number;
}

export function serverConfig(spec: ServerSpec, index = 0): ServerConfig {
  const host = spec.host ?? `10.0.0.${11 + index}`;
  return {
    name: spec.name,
    address: `${host}:1883`,
    host,
    port: 1883,
    weight: spec.weight ?? 1,
    backup: spec.backup ?? false,
    healthUrl: null,
    maxConnections: spec.maxConnections ?? 0,
  };
}

export function healthConfig(type: HealthConfig['type'] = 'mqtt'): HealthConfig {
  return {
    type,
    interval: 2000,
    fastInterval: null,
    downInterval: null,
    timeout: 1000,
    rise: 2,
    fall: 3,
    port: null,
    mqtt: { version: 4, clientId: null, username: null, password: null },
    http: { port: 18083, path: '/api/v5/status' },
  };
}

export interface PoolSpec {
  name?: string;
  balance?: BalanceStrategy;
  fallback?: FallbackStrategy;
  retries?: number;
  health?: HealthConfig['type'];
  servers: (ServerSpec | string)[];
}

export function poolConfig(spec: PoolSpec): PoolConfig {
  return {
    name: spec.name ?? 'brokers',
    balance: spec.balance ?? 'client-id-hash',
    fallback: spec.fallback ?? 'least-connections',
    serverConnectTimeout: 3000,
    serverConnackTimeout: 0,
    retries: spec.retries ?? 2,
    sendProxyProtocol: 'off',
    onServerDown: 'keep',
    onServerUp: 'keep',
    takeover: 'client-id-and-username',
    evictRate: 500,
    servers: spec.servers.map((s, i) => serverConfig(typeof s === 'string' ? { name: s } : s, i)),
    health: healthConfig(spec.health ?? 'mqtt'),
  };
}

/** Marks every server of the list up (health checks are not part of these tests). */
export function allUp(servers: readonly Server[]): void {
  for (const s of servers) s.setHealth('up');
}

export function byName(servers: readonly Server[], name: string): Server {
  const s = servers.find((x) => x.name === name);
  if (s === undefined) throw new Error(`no server ${name}`);
  return s;
}

export function names(servers: readonly Server[]): string[] {
  return servers.map((s) => s.name);
}

export class FakeSession implements LiveSession {
  readonly bytesIn = 0;
  readonly bytesOut = 0;
  readonly routingKey: Buffer;
  evicted: EvictReason | null = null;
  constructor(routingKey: Buffer = Buffer.alloc(0)) {
    this.routingKey = routingKey;
  }
  evict(reason: EvictReason): void {
    this.evicted ??= reason;
  }
}

/** Adds `n` fake sessions to a server. */
export function addSessions(server: Server, n: number): void {
  for (let i = 0; i < n; i++) server.sessions.add(new FakeSession());
}

/** The i-th test client ID: ASCII, varied length, deterministic. */
export function clientId(i: number): Buffer {
  return Buffer.from(`client-${i}-${(i * 2654435761) >>> 0}`, 'utf8');
}


/** Fisher-Yates with a seeded source. */
export function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
