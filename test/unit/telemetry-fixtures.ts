/**
 * Shared fixtures of the telemetry tests: real `Server` objects, sessions that count bytes like the
 * proxy's, a TelemetrySource that reports exactly what the test put in it, and a parser of the
 * Prometheus text exposition format (so tests check values, not substrings).
 */
import { pino, type Logger } from 'pino';
import { Server, type EvictReason, type HealthState, type LiveSession } from '../../src/balancer/server.js';
import type { AdminConfig, ServerConfig } from '../../src/config/types.js';
import type {
  AdminActions,
  FailoverInstanceStatus,
  FailoverStats,
  ListenerStats,
  OverloadStatus,
  WorkerCounts,
  TelemetrySource,
} from '../../src/telemetry/source.js';

export class FakeSession implements LiveSession {
  bytesIn: number;
  bytesOut: number;
  readonly routingKey: Buffer;
  evictedWith: EvictReason | null = null;
  constructor(bytesIn = 0, bytesOut = 0, key = 'client') {
    this.bytesIn = bytesIn;
    this.bytesOut = bytesOut;
    this.routingKey = Buffer.from(key);
  }
  evict(reason: EvictReason): void {
    this.evictedWith ??= reason;
  }
}

export function serverConfig(name: string, port: number, extra: Partial<ServerConfig> = {}): ServerConfig {
  return { name, address: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, backup: false, healthUrl: null, maxConnections: 0, ...extra };
}

export function makeServer(pool: string, name: string, health: HealthState = 'up', extra: Partial<ServerConfig> = {}): Server {
  return new Server(pool, serverConfig(name, 18830 + name.length, extra), health);
}

export function listenerStats(name: string, extra: Partial<ListenerStats> = {}): ListenerStats {
  return {
    name,
    bind: '0.0.0.0:1883',
    tls: false,
    active: 0,
    outcomes: { proxied: 0, rejected: 0, failed: 0 },
    rejected: new Map(),
    closed: new Map(),
    told: new Map(),
    ...extra,
  };
}

export interface FakePool {
  name: string;
  balance: string;
  servers: Server[];
}

/** Reports exactly the objects the test holds; tests mutate them and scrape again. */
export class FakeSource implements TelemetrySource {
  version = '0.1.0-test';
  startedAt = Date.now();
  listenerList: ListenerStats[] = [];
  poolList: FakePool[] = [];
  failoverStatus: { instances: FailoverInstanceStatus[]; stats: FailoverStats } | null = null;
  readiness: { ok: true } | { ok: false; reason: string } = { ok: true };
  overloadStatus: OverloadStatus = { active: false, memoryInUseBytes: 0, maxMemoryBytes: 0 };
  /** Set to act as a cluster primary (workers > 1). */
  workerCounts?: () => WorkerCounts;

  listeners(): ListenerStats[] {
    return this.listenerList;
  }
  pools(): FakePool[] {
    return this.poolList;
  }
  failover(): { instances: FailoverInstanceStatus[]; stats: FailoverStats } | null {
    return this.failoverStatus;
  }
  ready(): { ok: true } | { ok: false; reason: string } {
    return this.readiness;
  }
  overload(): OverloadStatus {
    return this.overloadStatus;
  }
}

/** Applies admin states to the source's real servers, like the app does, and records each call. */
export class RecordingActions implements AdminActions {
  readonly calls: Array<{ pool: string; server: string; state: 'ready' | 'drain' | 'maint' }> = [];
  constructor(private readonly source: FakeSource) {}
  setServerAdmin(pool: string, server: string, state: 'ready' | 'drain' | 'maint'): boolean {
    const s = this.source.poolList.find((p) => p.name === pool)?.servers.find((x) => x.name === server);
    if (!s) return false;
    this.calls.push({ pool, server, state });
    s.setAdmin(state);
    return true;
  }
}

export function failoverStatus(state: FailoverInstanceStatus['state'] = 'master'): { instances: FailoverInstanceStatus[]; stats: FailoverStats } {
  return {
    instances: [
      {
        routerId: 51,
        state,
        priority: 150,
        vips: ['192.0.2.10/24'],
        peer: { address: '10.0.0.2', state: 'backup', lastAdvertAgeMs: 40 },
        peers: [
          { address: '10.0.0.2', state: 'backup', priority: 100, lastAdvertAgeMs: 40 },
          { address: '10.0.0.3', state: 'unknown', priority: 90, lastAdvertAgeMs: 9000 },
        ],
      },
    ],
    stats: {
      transitions: new Map([
        ['init>backup', 1],
        ['backup>master', 2],
      ]),
      dropped: { bad_hmac: 3, replay: 1, router_id: 0, malformed: 7 },
      trackScripts: new Map([
        ['gateway', true],
        ['upstream', false],
      ]),
    },
  };
}

export function adminConfig(token: string | null = null, host = '127.0.0.1'): AdminConfig {
  return { bind: `${host}:0`, address: { host, port: 0 }, token, stateFile: null };
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

// ---- Prometheus text exposition parser -------------------------------------------------------

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  /** family name -> type (counter, gauge, histogram, summary, untyped) */
  types: Map<string, string>;
  help: Map<string, string>;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function parseValue(s: string): number {
  // Prometheus parses values with Go's ParseFloat: Inf/NaN in any case (prom-client writes `Nan`).
  const lower = s.toLowerCase();
  if (lower === '+inf' || lower === 'inf') return Infinity;
  if (lower === '-inf') return -Infinity;
  if (lower === 'nan') return NaN;
  const n = Number(s);
  if (s === '' || Number.isNaN(n)) throw new Error(`bad sample value ${JSON.stringify(s)}`);
  return n;
}

function parseSample(line: string): Sample {
  const m = NAME.exec(line);
  if (!m) throw new Error(`bad sample line: ${line}`);
  const name = m[0];
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    while (line[i] !== '}') {
      const ln = LABEL_NAME.exec(line.slice(i));
      if (!ln) throw new Error(`bad label name at ${i}: ${line}`);
      i += ln[0].length;
      if (line[i] !== '=' || line[i + 1] !== '"') throw new Error(`expected =" at ${i}: ${line}`);
      i += 2;
      let v = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) throw new Error(`unterminated label value: ${line}`);
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i + 1];
          v += e === 'n' ? '\n' : e === '\\' ? '\\' : e === '"' ? '"' : `\\${e}`;
          i += 2;
          continue;
        }
        v += c;
        i++;
      }
      i++; // closing quote
      if (Object.hasOwn(labels, ln[0])) throw new Error(`duplicate label ${ln[0]}: ${line}`);
      labels[ln[0]] = v;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') throw new Error(`expected , or } at ${i}: ${line}`);
    }
    i++;
  }
  if (line[i] !== ' ') throw new Error(`expected a space before the value: ${line}`);
  const rest = line.slice(i + 1).trim().split(/\s+/);
  if (rest.length > 2) throw new Error(`trailing garbage: ${line}`);
  return { name, labels, value: parseValue(rest[0]!) };
}

export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
      if (!m) continue; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (kind === 'TYPE') {
        if (types.has(name)) throw new Error(`TYPE given twice for ${name}`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`bad type ${rest}`);
        types.set(name, rest);
      } else help.set(name, rest);
      continue;
    }
    samples.push(parseSample(line));
  }
  return { types, help, samples };
}

/** The family a sample belongs to: histogram/summary series carry suffixes. */
export function familyOf(sampleName: string, types: Map<string, string>): string {
  if (types.has(sampleName)) return sampleName;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sampleName.endsWith(suffix)) {
      const base = sampleName.slice(0, -suffix.length);
      if (types.has(base)) return base;
    }
  }
  return sampleName;
}

/** Samples of `name` whose labels include every pair of `labels`. */
export function find(exp: Exposition, name: string, labels: Record<string, string> = {}): Sample[] {
  return exp.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one sample matching exactly; throws when there is none or more than one. */
export function value(exp: Exposition, name: string, labels: Record<string, string> = {}): number {
  const found = find(exp, name, labels);
  if (found.length !== 1) throw new Error(`expected one ${name}${JSON.stringify(labels)}, found ${found.length}`);
  return found[0]!.value;
}
