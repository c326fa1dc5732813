/**
 * The keys each mapping of lb.yaml may hold (contract: design.md §4). Anything else is an unknown key.
 * The validator checks against these lists; the docs test checks that docs/configuration.md names them all.
 */

export const KEYS = {
  root: ['listeners', 'pools', 'limits', 'admin', 'log', 'workers', 'warmUp', 'failover'],
  listener: ['name', 'bind', 'pool', 'maxConnections', 'tls', 'acceptProxyProtocol', 'refuseWith', 'evictWith'],
  tls: ['cert', 'key', 'ca', 'requestCert', 'certAsUsername'],
  pool: [
    'balance',
    'fallback',
    'serverConnectTimeout',
    'serverConnackTimeout',
    'retries',
    'sendProxyProtocol',
    'onServerDown',
    'onServerUp',
    'takeover',
    'evictRate',
    'servers',
    'health',
  ],
  server: ['name', 'address', 'weight', 'backup', 'healthUrl', 'maxConnections'],
  health: ['type', 'interval', 'fastInterval', 'downInterval', 'timeout', 'rise', 'fall', 'port', 'mqtt', 'http'],
  healthMqtt: ['version', 'clientId', 'username', 'password'],
  healthHttp: ['port', 'path'],
  limits: ['clientConnectTimeout', 'maxConnectBytes', 'maxConnections', 'acceptRate', 'acceptQueue', 'perSource', 'drainTimeout', 'idleTimeout', 'maxMemory', 'maxPendingConnectBytes'],
  perSource: ['maxConnections', 'connectRate', 'exempt'],
  admin: ['bind', 'token', 'stateFile'],
  log: ['level', 'sessions', 'bufferBytes'],
  failover: [
    'interface',
    'transport',
    'peers',
    'group',
    'port',
    'authKeyFile',
    'advertInterval',
    'routerId',
    'priority',
    'vips',
    'preempt',
    'preemptDelay',
    'instances',
    'track',
    'garp',
    'notify',
  ],
  instance: ['routerId', 'priority', 'vips'],
  track: ['listeners', 'interface', 'pools', 'scripts'],
  trackPools: ['weight'],
  trackScript: ['name', 'command', 'args', 'interval', 'timeout', 'rise', 'fall', 'weight'],
  garp: ['count', 'interval', 'repeatAfter'],
} as const satisfies Record<string, readonly string[]>;

export const BALANCE_STRATEGIES = ['client-id-hash', 'username-hash', 'round-robin', 'least-connections', 'random'] as const;
export const FALLBACK_STRATEGIES = ['round-robin', 'least-connections', 'random'] as const;
export const HEALTH_TYPES = ['tcp', 'mqtt', 'http', 'none'] as const;
export const PROXY_PROTOCOL_MODES = ['off', 'v1', 'v2'] as const;
export const ON_SERVER_DOWN = ['keep', 'shutdown'] as const;
export const ON_SERVER_UP = ['keep', 'rebalance'] as const;
export const TAKEOVER_KEYS = ['client-id-and-username', 'client-id', 'username', 'off'] as const;
export const REFUSE_WITH = ['connack', 'close'] as const;
export const EVICT_WITH = ['disconnect', 'close'] as const;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const FAILOVER_TRANSPORTS = ['unicast', 'multicast'] as const;

/**
 * Names of listeners, pools and servers: metric label values and path segments of the admin API
 * (`POST /api/servers/<pool>/<server>/drain`), so nothing that needs escaping.
 */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const NAME_RULE = 'letters, digits, `_`, `.`, `-`, starting with a letter or digit, at most 64 characters';
