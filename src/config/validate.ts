/**
 * From a parsed lb.yaml document to LbConfig: reads every section, applies DEFAULTS, and checks what spans
 * sections (listener -> pool references, colliding binds). Problems go to the reader's collector; the
 * returned config is meaningful only when no problem was recorded.
 */
import { isScalar } from 'yaml';
import { DEFAULTS, pendingConnectFloor } from './defaults.js';
import { suggestKey } from './did-you-mean.js';
import { KEYS, LOG_LEVELS } from './keys.js';
import { bindsCollide, isLoopbackHost, parseHostPortDetailed } from './net-syntax.js';
import type { AdminConfig, HostPort, LbConfig, LimitsConfig, LogConfig } from './types.js';
import type { FileRef, HostRef } from './validate-context.js';
import { readCidrList, ValidationContext } from './validate-context.js';
import { readFailover } from './validate-failover.js';
import type { ListenerDraft } from './validate-listeners.js';
import { readListeners } from './validate-listeners.js';
import type { PoolDraft } from './validate-pools.js';
import { readPools } from './validate-pools.js';
import type { ConfigReader, MapReader, Slot } from './yaml-reader.js';
import { describe, writtenAsFraction } from './yaml-reader.js';

/** Below this a CONNECT cannot carry a useful client id; above it is beyond MQTT's 268,435,455-byte body plus header. */
const MIN_CONNECT_BYTES = 32;
const MAX_CONNECT_BYTES = 268_435_460;
const SHORT_TOKEN_CHARS = 16;
/** The smallest log.bufferBytes: a few long lines (a reload's problems, an error with its stack). */
const MIN_LOG_BUFFER_BYTES = 65_536;
/** The smallest limits.maxMemory: below it normal traffic alone would cross the ceiling (src/proxy/memory-ceiling.ts). */
const MIN_MAX_MEMORY = 128 * 1024 * 1024;
/** The idle sweep runs every half of limits.idleTimeout: no finer than this. */
const MIN_IDLE_TIMEOUT_MS = 1000;
/**
 * More synthetic sessions than this would not warm more (bench/README.md: 2,000-3,000 reach the warm cost), and
 * the warm-up's time bound (4 s, src/warm-up.ts) stops it at ~6,000-7,000 on two cores anyway.
 */
const MAX_WARM_UP = 20_000;

export interface Validated {
  config: LbConfig;
  files: FileRef[];
  hostRefs: HostRef[];
}

export function validateDocument(r: ConfigReader, absFile: string, baseDir: string): Validated {
  const ctx = new ValidationContext(r, baseDir);
  const rootSlot = r.root();
  const emptyConfig = (): Validated => ({ config: emptyLbConfig(absFile), files: ctx.files, hostRefs: ctx.hostRefs });
  if (r.isNull(rootSlot)) {
    r.error(rootSlot, 'the file is empty: `listeners` and `pools` are required');
    return emptyConfig();
  }
  if (r.foreignMapping(rootSlot, KEYS.root)) {
    r.error(rootSlot, `none of the top-level keys is an mqtt-lb key (${KEYS.root.join(', ')}): is this an mqtt-lb config file?`);
    return emptyConfig();
  }
  const root = r.mapping(rootSlot, KEYS.root);
  if (root === undefined) return emptyConfig();

  const listenersSlot = root.required('listeners', 'at least one listener');
  const listeners = listenersSlot !== undefined ? readListeners(ctx, listenersSlot) : [];
  const poolsSlot = root.required('pools', 'at least one pool of servers');
  const { pools, declared } =
    poolsSlot !== undefined ? readPools(ctx, poolsSlot) : { pools: new Map<string, PoolDraft>(), declared: new Set<string>() };
  const admin = readAdmin(ctx, root);

  checkPoolReferences(r, listeners, pools, declared);
  checkBindCollisions(r, listeners, admin);

  const config: LbConfig = {
    file: absFile,
    listeners: listeners.map((l) => l.config),
    pools: Object.fromEntries([...pools].map(([name, p]) => [name, p.config])),
    limits: readLimits(r, root),
    admin: admin.config,
    log: readLog(r, root),
    workers: readWorkers(r, root),
    warmUp: root.int('warmUp', DEFAULTS.warmUp, 0, MAX_WARM_UP),
    failover: readFailover(ctx, root),
  };
  return { config, files: ctx.files, hostRefs: ctx.hostRefs };
}

function emptyLbConfig(file: string): LbConfig {
  return {
    file,
    listeners: [],
    pools: {},
    limits: readLimits(undefined, undefined),
    admin: { bind: DEFAULTS.admin.bind, address: defaultAdminAddress(), token: null, stateFile: null },
    log: readLog(undefined, undefined),
    workers: DEFAULTS.workers,
    warmUp: DEFAULTS.warmUp,
    failover: null,
  };
}

function defaultAdminAddress(): HostPort {
  const r = parseHostPortDetailed(DEFAULTS.admin.bind);
  if (!r.ok) throw new Error(`DEFAULTS.admin.bind is invalid: ${r.error}`);
  return r.value;
}

function readLimits(r: ConfigReader | undefined, root: MapReader | undefined): LimitsConfig {
  const d = DEFAULTS.limits;
  const m = root?.section('limits', KEYS.limits);
  const perSource = m?.section('perSource', KEYS.perSource);
  const limits: LimitsConfig = {
    clientConnectTimeout: m?.duration('clientConnectTimeout', d.clientConnectTimeout, { min: 0, minExclusive: true }) ?? d.clientConnectTimeout,
    maxConnectBytes: m?.int('maxConnectBytes', d.maxConnectBytes, MIN_CONNECT_BYTES, MAX_CONNECT_BYTES) ?? d.maxConnectBytes,
    maxConnections: m?.int('maxConnections', d.maxConnections, 1) ?? d.maxConnections,
    maxConnectionsWritten: m?.has('maxConnections') ?? false,
    acceptRate: m?.num('acceptRate', d.acceptRate, { min: 0 }) ?? d.acceptRate,
    acceptQueue: m?.int('acceptQueue', d.acceptQueue, 0) ?? d.acceptQueue,
    perSource: {
      maxConnections: perSource?.int('maxConnections', d.perSource.maxConnections, 0) ?? d.perSource.maxConnections,
      connectRate: perSource?.num('connectRate', d.perSource.connectRate, { min: 0 }) ?? d.perSource.connectRate,
      exempt: r !== undefined && perSource !== undefined ? readCidrList(r, perSource, 'exempt', d.perSource.exempt) : [...d.perSource.exempt],
    },
    drainTimeout: m?.duration('drainTimeout', d.drainTimeout, { min: 0 }) ?? d.drainTimeout,
    // The sweep runs every half of it (idle-sweep.ts).
    idleTimeout: m === undefined ? d.idleTimeout : m.duration('idleTimeout', d.idleTimeout, { min: MIN_IDLE_TIMEOUT_MS, zeroMeans: 'never' }),
    maxMemory: r !== undefined && m !== undefined ? readMaxMemory(r, m) : d.maxMemory,
    maxPendingConnectBytes: m?.int('maxPendingConnectBytes', d.maxPendingConnectBytes, 0) ?? d.maxPendingConnectBytes,
  };
  const pendingSlot = m?.get('maxPendingConnectBytes');
  const floor = pendingConnectFloor(limits.maxConnectBytes);
  if (r !== undefined && pendingSlot !== undefined && limits.maxPendingConnectBytes > 0 && limits.maxPendingConnectBytes < floor) {
    r.warn(pendingSlot, `below its floor: ${floor} is used, 4 × (maxConnectBytes + 64 KiB), so that a CONNECT of maxConnectBytes always fits when it comes alone`);
  }
  return limits;
}

/** 0 = no ceiling, else at least MIN_MAX_MEMORY. */
function readMaxMemory(r: ConfigReader, m: MapReader): number {
  const value = m.int('maxMemory', DEFAULTS.limits.maxMemory, 0);
  if (value > 0 && value < MIN_MAX_MEMORY) {
    r.error(m.get('maxMemory')!, `must be 0 (no ceiling) or at least ${MIN_MAX_MEMORY} bytes (128 MiB) (got ${value})`);
    return DEFAULTS.limits.maxMemory;
  }
  return value;
}

interface AdminDraft {
  config: AdminConfig;
  bindSlot: Slot | undefined;
}

/** RFC 6750 §2.1 b64token. */
const BEARER_TOKEN_RE = /^[A-Za-z0-9\-._~+/]+=*$/;

function readAdmin(ctx: ValidationContext, root: MapReader): AdminDraft {
  const r = ctx.r;
  const config: AdminConfig = { bind: DEFAULTS.admin.bind, address: defaultAdminAddress(), token: DEFAULTS.admin.token, stateFile: DEFAULTS.admin.stateFile };
  const m = root.section('admin', KEYS.admin);
  if (m === undefined) return { config, bindSlot: undefined };
  const bindSlot = m.get('bind');
  let bindValid = true;
  if (bindSlot !== undefined) {
    const bind = r.hostPort(bindSlot);
    if (bind !== undefined) {
      config.bind = bind.text;
      config.address = bind.address;
    } else {
      bindValid = false;
    }
  }
  const tokenSlot = m.get('token');
  config.token = m.nullableStr('token');
  if (bindValid && bindSlot !== undefined && !isLoopbackHost(config.address.host) && config.token === null) {
    r.error(
      bindSlot,
      `\`${config.bind}\` is not a loopback address: set \`admin.token\` (the admin API can drain and stop servers)`,
    );
  }
  // Sent as `Authorization: Bearer <token>`: only RFC 6750's token characters can travel there (a space or a
  // non-ASCII character could never match, and the admin API would refuse every request).
  if (config.token !== null && tokenSlot !== undefined && !BEARER_TOKEN_RE.test(config.token)) {
    r.error(tokenSlot, 'must be a bearer token: letters, digits and - . _ ~ + / only, optionally ending in = (no spaces; `mqtt-lb keygen` prints a good one)');
  } else if (config.token !== null && tokenSlot !== undefined && config.token.length < SHORT_TOKEN_CHARS) {
    r.warn(tokenSlot, `shorter than ${SHORT_TOKEN_CHARS} characters: easy to guess (\`mqtt-lb keygen\` prints a good one)`);
  }
  const stateSlot = m.get('stateFile');
  if (stateSlot !== undefined && !r.isNull(stateSlot)) config.stateFile = ctx.filePath(stateSlot, 'state') ?? null;
  return { config, bindSlot: bindValid ? bindSlot : undefined };
}

function readLog(r: ConfigReader | undefined, root: MapReader | undefined): LogConfig {
  const d = DEFAULTS.log;
  const slot = root?.get('log');
  // HAProxy's `log 127.0.0.1:514 local0` carried over: said as what it is, not only as a wrong type.
  if (r !== undefined && slot !== undefined && isScalar(slot.node) && typeof slot.node.value === 'string') {
    const text = slot.node.value;
    r.error(
      slot,
      (LOG_LEVELS as readonly string[]).includes(text)
        ? `must be a mapping: did you mean \`log: { level: ${text} }\`?`
        : `must be a mapping (\`level\`, \`sessions\`, \`bufferBytes\`), got ${describe(slot.node)}: mqtt-lb writes JSON lines to stdout, not to syslog; under systemd the journal takes them (docs/operations.md, Logs)`,
    );
    return { ...d };
  }
  const m = root?.section('log', KEYS.log);
  return {
    level: m?.oneOf('level', d.level, LOG_LEVELS) ?? d.level,
    sessions: m?.bool('sessions', d.sessions) ?? d.sessions,
    bufferBytes: m?.int('bufferBytes', d.bufferBytes, MIN_LOG_BUFFER_BYTES) ?? d.bufferBytes,
  };
}

function readWorkers(r: ConfigReader, root: MapReader): number | 'auto' {
  const slot = root.get('workers');
  if (slot === undefined) return DEFAULTS.workers;
  const v = isScalar(slot.node) ? slot.node.value : undefined;
  if (v === 'auto') return 'auto';
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 && !writtenAsFraction(slot.node)) return v;
  r.error(slot, `must be an integer of at least 1 or \`auto\` (got ${describe(slot.node)})`);
  return DEFAULTS.workers;
}

function checkPoolReferences(
  r: ConfigReader,
  listeners: ListenerDraft[],
  pools: Map<string, PoolDraft>,
  declared: Set<string>,
): void {
  const used = new Set<string>();
  for (const l of listeners) {
    const pool = l.config.pool;
    used.add(pool);
    // With `pools` missing or broken, that is the problem to report, not every reference to it.
    if (l.poolSlot === undefined || declared.size === 0 || declared.has(pool)) continue;
    const names = [...declared];
    const guess = suggestKey(pool, names);
    const hint = guess !== null ? ` (did you mean \`${guess}\`?)` : `; pools: ${names.map((n) => `\`${n}\``).join(', ')}`;
    r.error(l.poolSlot, `no pool named \`${pool}\`${hint}`);
  }
  if (listeners.length === 0) return;
  for (const [name, p] of pools) {
    if (!used.has(name)) r.out.warn(p.keyAt, `pools.${name}`, 'no listener uses this pool');
  }
}

/** Listeners and the admin port whose binds collide (net-syntax.ts bindsCollide; Node listens dual-stack on `::`). */
function checkBindCollisions(r: ConfigReader, listeners: ListenerDraft[], admin: AdminDraft): void {
  const seen: Array<{ what: string; address: HostPort; slot: Slot | undefined }> = [];
  // An admin port left at its default has no place in the file: problems go to the listener instead.
  if (admin.bindSlot === undefined) seen.push({ what: 'the default `admin.bind`', address: admin.config.address, slot: undefined });
  const where = (slot: Slot | undefined): string => (slot !== undefined ? ` (line ${r.out.lineOf(slot.at)})` : '');
  for (const l of listeners) {
    if (l.bindSlot === undefined) continue;
    const earlier = seen.find((s) => bindsCollide(s.address, l.config.address));
    if (earlier !== undefined) {
      r.error(l.bindSlot, `\`${l.config.bind}\` collides with ${earlier.what}${where(earlier.slot)}`);
    } else {
      seen.push({ what: `listener \`${l.config.name}\``, address: l.config.address, slot: l.bindSlot });
    }
  }
  if (admin.bindSlot === undefined) return;
  const earlier = seen.find((s) => bindsCollide(s.address, admin.config.address));
  if (earlier !== undefined) {
    r.error(admin.bindSlot, `\`${admin.config.bind}\` collides with ${earlier.what}${where(earlier.slot)}`);
  }
}
