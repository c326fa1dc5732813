/** `pools:` of lb.yaml: strategies, servers and health checks. */
import { hostname } from 'node:os';
import { isMap } from 'yaml';
import { DEFAULTS } from './defaults.js';
import { formatDuration } from './duration.js';
import {
  BALANCE_STRATEGIES,
  FALLBACK_STRATEGIES,
  HEALTH_TYPES,
  KEYS,
  NAME_RE,
  NAME_RULE,
  ON_SERVER_DOWN,
  ON_SERVER_UP,
  TAKEOVER_KEYS,
  PROXY_PROTOCOL_MODES,
} from './keys.js';
import { CLIENT_ID_PLACEHOLDERS, healthClientId, unknownPlaceholders } from '../health/client-id.js';
import { parseHttpUrl } from './net-syntax.js';
import type { HealthConfig, PoolConfig, ServerConfig } from './types.js';
import type { ValidationContext } from './validate-context.js';
import type { ConfigReader, MapReader, Slot } from './yaml-reader.js';

export interface PoolDraft {
  config: PoolConfig;
  keyAt: number;
}

const MQTT_STRING_MAX_BYTES = 65_535;

export interface PoolsDraft {
  /** The pools that could be read. */
  pools: Map<string, PoolDraft>;
  /** Every pool name written, readable or not: a listener naming a broken pool is not a second problem. */
  declared: Set<string>;
}

export function readPools(ctx: ValidationContext, slot: Slot): PoolsDraft {
  const { r } = ctx;
  const pools = new Map<string, PoolDraft>();
  const declared = new Set<string>();
  const entries = r.namedEntries(slot);
  if (entries === undefined) return { pools, declared };
  if (entries.length === 0) {
    r.error(slot, 'must define at least one pool');
    return { pools, declared };
  }
  for (const { name, keyAt, value } of entries) {
    declared.add(name);
    if (!NAME_RE.test(name)) {
      r.out.error(keyAt, value.path, `pool name \`${name}\` is not allowed: ${NAME_RULE}`);
    }
    if ((KEYS.pool as readonly string[]).includes(name) && !isMap(value.node)) {
      // `servers:` (or `health:`...) indented as a pool name: one level too shallow.
      r.out.error(keyAt, value.path, `\`${name}\` is a key of a pool, here at the level of the pool names: indent it under its pool's name (\`pools.<name>.${name}\`)`);
      continue;
    }
    if (r.isNull(value)) {
      r.error(value, 'a pool needs at least `servers`');
      continue;
    }
    const m = r.mapping(value, KEYS.pool);
    if (m === undefined) continue;
    pools.set(name, { config: readPool(ctx, name, m), keyAt });
  }
  warnSharedProbeIds(r, pools);
  return { pools, declared };
}

/**
 * Two pools whose mqtt probes of one host use one client ID (the default ID has the server's name, not the pool's: a
 * server `b1` in two pools): each probe takes the other's session over at the broker, every interval (a protocol
 * audit saw mosquitto log it). Only for one address, surely one broker: separate brokers may well both be `b1`.
 */
function warnSharedProbeIds(r: ConfigReader, pools: ReadonlyMap<string, PoolDraft>): void {
  const seen = new Map<string, { pool: string; address: string }>();
  const host = hostname();
  for (const [name, { config, keyAt }] of pools) {
    if (config.health.type !== 'mqtt') continue;
    for (const server of config.servers) {
      // As sent, with the pool's version (3 shortens a long ID to a hash of it); the host name is the same for both.
      const id = healthClientId(config.health.mqtt.clientId, { hostname: host, pool: name, server: server.name }, config.health.mqtt.version, 0);
      const address = `${server.host}:${config.health.port ?? server.port}`; // where the probe goes
      const first = seen.get(id);
      if (first === undefined) {
        seen.set(id, { pool: name, address });
      } else if (first.pool !== name && first.address === address) {
        // MQTT 3.1 takes at most 23 characters as written: no room for the three placeholders and a prefix.
        const hint = config.health.mqtt.version === 3 ? '`health.mqtt.clientId: {pool}-{server}` (version 3: at most 23 characters as written)' : '`health.mqtt.clientId: mqtt-lb-health-{hostname}-{pool}-{server}`';
        r.out.warn(keyAt, `pools.${name}`, `its health probe of server \`${server.name}\` uses the client ID of pool \`${first.pool}\`'s probe of the same address (\`${id}\`): at the broker each probe takes the other's session over; give one pool ${hint}`);
        break;
      }
    }
  }
}

/** A broker under load takes tens of milliseconds to answer a CONNECT: a deadline shorter than this refuses healthy ones. */
const MIN_CONNACK_TIMEOUT_MS = 100;

function readPool(ctx: ValidationContext, name: string, m: MapReader): PoolConfig {
  const { r } = ctx;
  const d = DEFAULTS.pool;
  const serversSlot = m.required('servers', 'at least one server');
  const drafts = serversSlot !== undefined ? readServers(ctx, serversSlot) : [];
  const servers = drafts.map((s) => s.config);
  const pool: PoolConfig = {
    name,
    balance: m.oneOf('balance', d.balance, BALANCE_STRATEGIES),
    fallback: m.oneOf('fallback', d.fallback, FALLBACK_STRATEGIES),
    serverConnectTimeout: m.duration('serverConnectTimeout', d.serverConnectTimeout, { min: 0, minExclusive: true }),
    // An audit: `1ms` refused 17 of 50 clients of a healthy mosquitto.
    serverConnackTimeout: m.duration('serverConnackTimeout', d.serverConnackTimeout, { min: MIN_CONNACK_TIMEOUT_MS, zeroMeans: 'none' }),
    retries: m.int('retries', d.retries, 0, 100),
    sendProxyProtocol: m.oneOf('sendProxyProtocol', d.sendProxyProtocol, PROXY_PROTOCOL_MODES),
    onServerDown: m.oneOf('onServerDown', d.onServerDown, ON_SERVER_DOWN),
    onServerUp: m.oneOf('onServerUp', d.onServerUp, ON_SERVER_UP),
    takeover: m.oneOf('takeover', d.takeover, TAKEOVER_KEYS),
    evictRate: m.num('evictRate', d.evictRate, { min: 0, minExclusive: true }),
    servers,
    health: readHealth(ctx, m, servers.length),
  };

  const fallbackSlot = m.get('fallback');
  if (fallbackSlot !== undefined && pool.balance !== 'client-id-hash' && pool.balance !== 'username-hash') {
    r.warn(fallbackSlot, `ignored: \`balance: ${pool.balance}\` does not hash, so there is no empty key to fall back from`);
  }
  if (serversSlot !== undefined && servers.length > 0 && servers.every((s) => s.weight === 0)) {
    r.warn(serversSlot, 'every server has weight 0: this pool can never place a session');
  }
  if (pool.health.type !== 'http') {
    for (const s of drafts) {
      if (s.config.healthUrl !== null && s.healthUrlSlot !== undefined) {
        r.warn(s.healthUrlSlot, `ignored: this pool's health.type is \`${pool.health.type}\`, not \`http\``);
      }
    }
  }
  return pool;
}

interface ServerDraft {
  config: ServerConfig;
  healthUrlSlot: Slot | undefined;
}

function readServers(ctx: ValidationContext, slot: Slot): ServerDraft[] {
  const { r } = ctx;
  const items = r.list(slot);
  if (items === undefined) return [];
  if (items.length === 0) {
    r.error(slot, 'a pool needs at least one server');
    return [];
  }
  const servers: ServerDraft[] = [];
  const firstByName = new Map<string, Slot>();
  for (const item of items) {
    const m = r.mapping(item, KEYS.server);
    if (m === undefined) continue;
    const server = readServer(r, m);
    servers.push({ config: server, healthUrlSlot: m.get('healthUrl') });
    const nameSlot = m.get('name');
    if (server.name !== '' && nameSlot !== undefined) r.unique(firstByName, server.name, nameSlot, `server name \`${server.name}\` in this pool`);
  }
  return servers;
}

function readServer(r: ConfigReader, m: MapReader): ServerConfig {
  const nameSlot = m.required('name', 'the stable identity the hash keys on');
  const name = nameSlot !== undefined ? (r.string(nameSlot, { pattern: NAME_RE, rule: NAME_RULE }) ?? '') : '';
  const addressSlot = m.required('address', 'host:port, e.g. 10.0.0.11:1883');
  const address = addressSlot !== undefined ? r.hostPort(addressSlot) : undefined;
  const urlSlot = m.get('healthUrl');
  let healthUrl: string | null = DEFAULTS.server.healthUrl;
  if (urlSlot !== undefined && !r.isNull(urlSlot)) healthUrl = r.parsed(urlSlot, parseHttpUrl) ?? healthUrl;
  return {
    name,
    address: address?.text ?? '',
    host: address?.address.host ?? '',
    port: address?.address.port ?? 0,
    weight: m.int('weight', DEFAULTS.server.weight, 0, 256),
    backup: m.bool('backup', DEFAULTS.server.backup),
    healthUrl,
    maxConnections: m.int('maxConnections', DEFAULTS.server.maxConnections, 0),
  };
}

function readHealth(ctx: ValidationContext, pool: MapReader, serverCount: number): HealthConfig {
  const { r } = ctx;
  const d = DEFAULTS.health;
  const m = pool.section('health', KEYS.health);
  const health: HealthConfig = {
    type: d.type,
    interval: d.interval,
    fastInterval: d.fastInterval,
    downInterval: d.downInterval,
    timeout: d.timeout,
    rise: d.rise,
    fall: d.fall,
    port: d.port,
    mqtt: { ...d.mqtt },
    http: { ...d.http },
  };
  if (m === undefined) return health;
  health.type = m.oneOf('type', d.type, HEALTH_TYPES);
  const intervalSlot = m.get('interval');
  const timeoutSlot = m.get('timeout');
  const interval = intervalSlot !== undefined ? r.duration(intervalSlot, { min: 0, minExclusive: true }) : d.interval;
  const timeout = timeoutSlot !== undefined ? r.duration(timeoutSlot, { min: 0, minExclusive: true }) : d.timeout;
  health.interval = interval ?? d.interval;
  health.timeout = timeout ?? d.timeout;
  health.rise = m.int('rise', d.rise, 1);
  health.fall = m.int('fall', d.fall, 1);
  const warnAt = timeoutSlot ?? intervalSlot;
  if (interval !== undefined && timeout !== undefined && timeout >= interval && warnAt !== undefined) {
    r.warn(
      warnAt,
      `timeout ${formatDuration(health.timeout)} is not shorter than interval ${formatDuration(health.interval)}: a server that hangs is probed back to back`,
    );
  }
  health.fastInterval = readOtherInterval(r, m, 'fastInterval', health.timeout, 'a server in transition');
  health.downInterval = readOtherInterval(r, m, 'downInterval', health.timeout, 'a down server');
  health.port = readProbePort(r, m, health.type);
  readHealthMqtt(r, m, health, serverCount);
  const http = m.section('http', KEYS.healthHttp);
  if (http !== undefined) {
    health.http.port = http.int('port', d.http.port, 1, 65535);
    health.http.path = http.str('path', d.http.path, {
      pattern: /^\/[^\s]*$/,
      rule: 'an HTTP path starts with `/` and has no spaces',
    });
  }
  return health;
}

/**
 * `health.fastInterval` / `health.downInterval` (HAProxy's `fastinter` / `downinter`): null or absent = `interval`.
 * One not longer than the timeout gets the warning `interval` gets: a server that hangs would be probed back to back.
 */
function readOtherInterval(r: ConfigReader, health: MapReader, key: 'fastInterval' | 'downInterval', timeout: number, which: string): number | null {
  const slot = health.get(key);
  if (slot === undefined || r.isNull(slot)) return null;
  const value = r.duration(slot, { min: 0, minExclusive: true });
  if (value === undefined) return null;
  if (timeout >= value) {
    r.warn(slot, `timeout ${formatDuration(timeout)} is not shorter than ${key} ${formatDuration(value)}: ${which} that hangs is probed back to back`);
  }
  return value;
}

/** `health.port`: where the tcp and mqtt probes go instead of each server's own port (HAProxy's `check port`). */
function readProbePort(r: ConfigReader, health: MapReader, type: HealthConfig['type']): number | null {
  const slot = health.get('port');
  if (slot === undefined || r.isNull(slot)) return null;
  const port = r.int(slot, 1, 65535);
  if (port === undefined) return null;
  // The http probe has its own port (health.http.port): one that looks like it applies but is ignored would
  // leave the operator probing a port they did not mean.
  if (type === 'http') r.error(slot, 'applies to the tcp and mqtt probes; the http probe\'s port is `health.http.port`');
  else if (type === 'none') r.warn(slot, 'is ignored with `type: none` (nothing is probed)');
  return port;
}

function readHealthMqtt(r: ConfigReader, health: MapReader, out: HealthConfig, serverCount: number): void {
  const m = health.section('mqtt', KEYS.healthMqtt);
  if (m === undefined) return;
  const versionSlot = m.get('version');
  if (versionSlot !== undefined) {
    const v = r.int(versionSlot, 3, 5);
    if (v === 3 || v === 4 || v === 5) out.mqtt.version = v;
  }
  out.mqtt.clientId = readMqttString(r, m, 'clientId');
  out.mqtt.username = readMqttString(r, m, 'username');
  out.mqtt.password = readMqttString(r, m, 'password');

  const clientIdSlot = m.get('clientId');
  const id = out.mqtt.clientId;
  if (out.mqtt.version === 3 && id !== null && clientIdSlot !== undefined && (id.length < 1 || id.length > 23)) {
    // MQTT 3.1 §3.1 CONNECT: "The Client Identifier (Client ID) is between 1 and 23 characters long".
    r.error(clientIdSlot, 'MQTT 3.1 (version 3) client ids must be 1 to 23 characters long');
  }
  const unknown = id !== null && clientIdSlot !== undefined ? unknownPlaceholders(id) : [];
  if (unknown.length > 0) {
    r.warn(clientIdSlot!, `${unknown.map((p) => `\`${p}\``).join(', ')} ${unknown.length === 1 ? 'is no placeholder and is' : 'are no placeholders and are'} sent as written (placeholders: ${CLIENT_ID_PLACEHOLDERS.map((p) => `\`${p}\``).join(', ')})`);
  }
  if (out.type === 'mqtt' && id !== null && clientIdSlot !== undefined && serverCount > 1 && !id.includes('{server}')) {
    // Brokers of a cluster share client IDs: each probe would take the previous one's session over.
    r.warn(clientIdSlot, 'every server of this pool is probed with this one client ID, and a clustered broker sees one session that each probe takes over: add `{server}` (and `{hostname}` when several LB hosts probe)');
  }
  const passwordSlot = m.get('password');
  const usernameSlot = m.get('username');
  // A username written but rejected has its own message (e.g. an alias of the password): not this one as well.
  const noUsername = usernameSlot === undefined || (r.isNull(usernameSlot) && !r.wasRefused(usernameSlot));
  if (out.mqtt.version !== 5 && out.mqtt.password !== null && out.mqtt.username === null && noUsername && passwordSlot !== undefined) {
    // [MQTT-3.1.2-22] If the User Name Flag is set to 0, the Password Flag MUST be set to 0.
    r.error(passwordSlot, 'needs a `username` with MQTT 3.1/3.1.1 (a password without a user name is a protocol error)');
  }
}

function readMqttString(r: ConfigReader, m: MapReader, key: string): string | null {
  const value = m.nullableStr(key, { allowEmpty: true });
  const slot = m.get(key);
  if (value === null || slot === undefined) return null;
  // [MQTT-1.5.3-1] UTF-8 strings are at most 65,535 bytes; [MQTT-1.5.3-2] they MUST NOT include U+0000.
  if (Buffer.byteLength(value, 'utf8') > MQTT_STRING_MAX_BYTES) {
    r.error(slot, `is longer than ${MQTT_STRING_MAX_BYTES} bytes, the MQTT string limit`);
  } else if (value.includes('\0')) {
    r.error(slot, 'must not contain U+0000');
  }
  return value;
}
