/**
 * The validated, defaulted shape of lb.yaml (contract: design.md §4).
 * Durations are milliseconds here; the YAML says `250ms`, `2s`, `1m`.
 * Everything downstream reads this shape only; the loader (load.ts) is the one place that knows YAML.
 */

export type Millis = number;

export interface HostPort {
  host: string; // '0.0.0.0', '::', '127.0.0.1', a name
  port: number;
}

export interface TlsConfig {
  cert: string;
  key: string;
  ca: string | null;
  /**
   * true: a client must present a certificate that verifies; `optional`: one presented must verify, none is fine
   * (HAProxy's `verify optional`, mosquitto's `require_certificate false` with a `cafile`); false: none asked for.
   */
  requestCert: boolean | 'optional';
  certAsUsername: boolean;
  /**
   * The files' PEM text as read and checked when the config was loaded (start, reload): what runs. Workers,
   * restarted ones too, build their TLS servers from it, never from the files again, which may have changed
   * since (a rejected reload, files staged before a SIGHUP). null: a config parsed without reading its files, which
   * cannot serve TLS (buildFront refuses it).
   */
  material: TlsMaterial | null;
}

export interface TlsMaterial {
  cert: string;
  key: string;
  ca: string | null;
}

export interface ListenerConfig {
  name: string;
  bind: string; // as written, e.g. "0.0.0.0:1883" or "[::]:1883"
  address: HostPort;
  pool: string;
  maxConnections: number;
  /** `maxConnections` was written in the file (not the default): a clamp of it is a warning, of the default a note. */
  maxConnectionsWritten?: boolean;
  tls: TlsConfig | null;
  acceptProxyProtocol: string[]; // CIDRs
  refuseWith: RefuseWith;
  evictWith: EvictWith;
}

/** How a refused client is told: a CONNACK with the reason (design.md §5), or a close without one (HAProxy's way). */
export type RefuseWith = 'connack' | 'close';

/**
 * How a 5.0 client whose session the balancer closes (drain, rebalance, stop, takeover, ...) is told: a DISCONNECT
 * with the reason, then the close (what a broker does), or the close alone (HAProxy's way; libmosquitto stops on any
 * DISCONNECT from a server).
 */
export type EvictWith = 'disconnect' | 'close';

export type BalanceStrategy = 'client-id-hash' | 'username-hash' | 'round-robin' | 'least-connections' | 'random';
export type FallbackStrategy = Exclude<BalanceStrategy, 'client-id-hash' | 'username-hash'>;
/**
 * What the pool's brokers take for one client, for the takeover rule across them ([MQTT-3.1.4-3], client-id-registry.ts):
 * the client ID under one username (the default), the client ID alone (a broker's own rule), the username (brokers that
 * take the client ID from it: `use_username_as_clientid`), or nothing (clusters that take over themselves).
 */
export type TakeoverKey = 'client-id-and-username' | 'client-id' | 'username' | 'off';

export interface ServerConfig {
  name: string;
  address: string; // as written "10.0.0.11:1883"
  host: string;
  port: number;
  weight: number; // 0 = never picked (HAProxy semantics); default 1
  backup: boolean;
  healthUrl: string | null;
  /**
   * Sessions this server may hold, dials in flight included (HAProxy's server `maxconn`, without its queue); 0 = no
   * cap. With workers, each worker holds its share (cluster/share.ts).
   */
  maxConnections: number;
}

export type HealthType = 'tcp' | 'mqtt' | 'http' | 'none';

export interface HealthConfig {
  /** `none` (our extension): no probing, servers are considered up. */
  type: HealthType;
  interval: Millis;
  /** Between probes of a server in transition (HAProxy's `fastinter`); null = `interval` (probe-interval.ts). */
  fastInterval: Millis | null;
  /** Between probes of a server that is down (HAProxy's `downinter`); null = `interval`. */
  downInterval: Millis | null;
  timeout: Millis;
  rise: number;
  fall: number;
  /** Port of the tcp and mqtt probes at each server's host; null = the server's own port (HAProxy's `check port`). */
  port: number | null;
  mqtt: { version: 3 | 4 | 5; clientId: string | null; username: string | null; password: string | null };
  http: { port: number; path: string };
}

export interface PoolConfig {
  name: string;
  balance: BalanceStrategy;
  fallback: FallbackStrategy;
  serverConnectTimeout: Millis;
  /** 0 = none: a routed session waits for its server's CONNACK as long as its client does (connack-deadlines.ts). */
  serverConnackTimeout: Millis;
  retries: number;
  sendProxyProtocol: 'off' | 'v1' | 'v2';
  onServerDown: 'keep' | 'shutdown';
  onServerUp: 'keep' | 'rebalance';
  /** Which sessions are one client to the takeover rule across brokers (client-id-registry.ts takeoverKey). */
  takeover: TakeoverKey;
  evictRate: number; // sessions per second
  servers: ServerConfig[];
  health: HealthConfig;
}

export interface LimitsConfig {
  clientConnectTimeout: Millis;
  maxConnectBytes: number;
  maxConnections: number;
  /** As ListenerConfig.maxConnectionsWritten. */
  maxConnectionsWritten?: boolean;
  acceptRate: number; // 0 = unlimited
  acceptQueue: number;
  /** `exempt`: CIDRs to which neither limit applies (a known NAT, a gateway of many devices). */
  perSource: { maxConnections: number; connectRate: number; exempt: string[] };
  drainTimeout: Millis;
  /** A routed session with nothing moving either way for this long is closed (idle-sweep.ts); 0 = never. */
  idleTimeout: Millis;
  maxMemory: number; // bytes of heap in use + Buffers at which new connections are refused; 0 = no ceiling
  /**
   * Bytes that unfinished CONNECTs may hold together beyond their first 512 each (session.ts growBuffer); 0 = no
   * bound. Never less than what one CONNECT of maxConnectBytes needs.
   */
  maxPendingConnectBytes: number;
}

export interface AdminConfig {
  bind: string;
  address: HostPort;
  token: string | null;
  /** Absolute path of the admin state file (src/balancer/admin-state-file.ts); null: states last until a restart. */
  stateFile: string | null;
}

export interface LogConfig {
  level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  sessions: boolean;
  bufferBytes: number; // log lines held while the reader is slow; beyond, dropped and counted (log-stream.ts)
}

export interface FailoverInstanceConfig {
  routerId: number; // 1..255
  priority: number; // 1..254
  vips: string[]; // IPv4 CIDRs "192.0.2.10/24"
}

export interface FailoverConfig {
  interface: string;
  transport: 'unicast' | 'multicast';
  peers: string[];
  group: string;
  port: number;
  authKeyFile: string;
  advertInterval: Millis;
  preempt: boolean;
  preemptDelay: Millis;
  /** Always at least one: the top-level shorthand (routerId/priority/vips) becomes instances[0]. */
  instances: FailoverInstanceConfig[];
  track: { listeners: boolean; interface: boolean; pools: { weight: number }; scripts: TrackScriptConfig[] };
  garp: { count: number; interval: Millis; repeatAfter: Millis };
  notify: string | null;
}

/** `failover.track.scripts[]`: keepalived's `vrrp_script` (src/failover/track-scripts.ts). */
export interface TrackScriptConfig {
  /** Unique among the scripts: names it in the log lines. */
  name: string;
  /** The executable, absolute (run without a shell). */
  command: string;
  args: string[];
  interval: Millis;
  timeout: Millis;
  rise: number;
  fall: number;
  /** 0: FAULT while it fails; 1..254: the priority is lowered by this much while it fails. */
  weight: number;
}

export interface LbConfig {
  /** Absolute path of the file this came from (for reload and messages). */
  file: string;
  listeners: ListenerConfig[];
  pools: Record<string, PoolConfig>;
  limits: LimitsConfig;
  admin: AdminConfig;
  log: LogConfig;
  workers: number | 'auto';
  /** Synthetic loopback sessions run at start to warm the JIT (src/warm-up.ts); 0 = none. */
  warmUp: number;
  failover: FailoverConfig | null;
}
