/**
 * "did you mean" for unknown keys: the closest allowed key by edit distance, after folding case and
 * `_`/`-` (so `max_connections` and `maxconnections` find `maxConnections`), plus the names operators
 * bring from HAProxy and keepalived.
 */
import { KEYS } from './keys.js';

/**
 * Words from HAProxy / keepalived / EMQX configs and the lb.yaml key (or value) they correspond to: the first
 * one allowed where the word is written (`check` is `health` among a pool's keys, `tcp` among health types).
 */
const FOREIGN_NAMES: Readonly<Record<string, string | readonly string[]>> = {
  maxconn: 'maxConnections',
  script: 'command',
  server_state_file: 'stateFile',
  serverstatefile: 'stateFile',
  inter: 'interval',
  virtual_router_id: 'routerId',
  virtualrouterid: 'routerId',
  vrid: 'routerId',
  unicast_peer: 'peers',
  unicastpeers: 'peers',
  advert_int: 'advertInterval',
  virtual_ipaddress: 'vips',
  vip: 'vips',
  preempt_delay: 'preemptDelay',
  nopreempt: 'preempt',
  auth_pass: 'authKeyFile',
  authkey: 'authKeyFile',
  notify_master: 'notify',
  send_proxy: 'sendProxyProtocol',
  accept_proxy: 'acceptProxyProtocol',
  acceptproxy: 'acceptProxyProtocol',
  backends: 'servers',
  backend: 'servers',
  upstreams: 'servers',
  frontends: 'listeners',
  listen: 'bind',
  address: 'bind',
  addr: 'address',
  host: 'address',
  check: ['health', 'tcp'],
  healthcheck: 'health',
  algorithm: 'balance',
  strategy: 'balance',
  connecttimeout: 'serverConnectTimeout',
  connacktimeout: 'serverConnackTimeout',
  certificate: 'cert',
  privatekey: 'key',
  loglevel: 'level',
  // HAProxy values and names
  leastconn: 'least-connections',
  staticrr: 'round-robin',
  hash: 'client-id-hash',
  source: 'client-id-hash',
  hashtype: 'balance',
  shutdownsessions: 'shutdown',
  shutdownbackupsessions: 'rebalance',
  tcpcheck: 'tcp',
  mqttcheck: 'mqtt',
  httpchk: 'http',
  inspectdelay: 'clientConnectTimeout',
  tcprequest: 'clientConnectTimeout',
  timeoutconnect: 'serverConnectTimeout',
  timeoutclient: 'idleTimeout',
  timeoutserver: 'idleTimeout',
  timeouttunnel: 'idleTimeout',
  timeoutclientfin: 'idleTimeout',
  fastinter: 'fastInterval',
  downinter: 'downInterval',
  ssl: 'tls',
  crt: 'cert',
  cafile: 'ca',
  verify: 'requestCert',
  sendproxyv2: ['sendProxyProtocol', 'v2'],
  sendproxy: ['sendProxyProtocol', 'v1'],
  httpcheck: 'http',
  logging: 'log',
  // keepalived (in `failover` itself, FOREIGN_NOTES says more)
  trackinterface: 'interface',
  garpmasterrepeat: 'count',
  garpmasterdelay: 'repeatAfter',
  notifybackup: 'notify',
  notifyfault: 'notify',
  notifystop: 'notify',
  authentication: 'authKeyFile',
  // syslog levels (HAProxy's `log ... notice`) as pino's
  notice: 'info',
  warning: 'warn',
  err: 'error',
  crit: 'fatal',
  alert: 'fatal',
  emerg: 'fatal',
};

const HEALTH_PER_POOL = 'health checks are per pool';
const TRACKABLE = 'did you mean `failover.track.scripts`? a list of scripts (`name`, `command`, `args`, `interval`, `weight`), tracked by every instance';
const TIMEOUTS = 'the timeouts are `limits.clientConnectTimeout`, `pools.<name>.serverConnectTimeout`, `pools.<name>.serverConnackTimeout` and `limits.idleTimeout`';
const NOTIFY = 'did you mean `failover.notify`? one hook, called as `notify STATE ROUTER_ID`';
const AUTH = 'did you mean `failover.authKeyFile`? a key file written by `mqtt-lb keygen`';
const NO_POOL_CAP = 'there is no per-pool cap: `maxConnections` on each server, `listeners[].maxConnections` or `limits.maxConnections`';
const NO_STICK_TABLE = 'no table: `{pool}.balance: client-id-hash` keeps a client on one server by rendezvous hashing, the same on every LB host';
const NO_SERVER_QUEUE = 'there is no queue: a client whose server is at its `maxConnections` is refused with CONNACK Server busy';
const ACCEPT_QUEUE_ONLY = 'there is no queue for a server; clients wait for an accept slot in `limits.acceptQueue`';
const IDLE_TIMEOUT = 'did you mean `limits.idleTimeout`?';
const CLIENT_TIMEOUT = `${IDLE_TIMEOUT} \`limits.clientConnectTimeout\` is the time for the CONNECT`;
const WORKERS = 'did you mean `workers`? processes, one per core with `workers: auto`';
const TO_POOL = 'did you mean `pool`? the name of the pool (under `pools`) this listener sends its clients to';
const STATS = 'the status page is `/` on `admin.bind`, with `/metrics` and `/api/status` beside it; `admin.token` guards changes';
const HEALTH_TIMEOUT = 'did you mean `timeout`? one bound for the whole probe: connect and answer';
const NO_RESOLVERS = 'not needed: server names are resolved with the system resolver when dialled, an answer kept up to 30 s';
const NO_MODE = 'no mode: mqtt-lb always proxies TCP and reads the MQTT CONNECT itself';
const NO_BROKER_TLS = 'not supported: connections to the brokers (sessions and health probes) are plain TCP; TLS ends at the listener (`listeners[].tls`), so keep the brokers\' plain port on a private network';
const TLS_POLICY_FIXED = 'not configurable: the TLS policy is fixed (TLS 1.2 and 1.3, ECDHE key exchange with AEAD ciphers; configuration.md, `tls`)';
const ONE_CERT = 'not supported: one certificate per listener (`tls.cert`), whatever SNI the client sends; a listener per certificate, on its own port';
const KEEPALIVED: Readonly<Record<string, string>> = {
  state: 'there is no initial state: the priority decides which host is master',
  nopreempt: 'did you mean `failover.preempt: false`?',
  trackinterface: 'did you mean `failover.track.interface`?',
  trackscript: TRACKABLE,
  vrrpscript: TRACKABLE,
  garpmasterdelay: 'did you mean `failover.garp.repeatAfter`?',
  garpmasterrepeat: 'did you mean `failover.garp.count`?',
  garpmasterrefresh: 'not supported: gratuitous ARPs are sent on becoming master, and once more after `failover.garp.repeatAfter`',
  notifymaster: NOTIFY,
  notifybackup: NOTIFY,
  notifyfault: NOTIFY,
  authentication: AUTH,
  authpass: AUTH,
  unicastsrcip: 'not needed: adverts are sent from the address of `failover.interface`',
};

const HARD_STOP_AFTER = 'did you mean `limits.drainTimeout`? how long sessions may drain on stop before they are closed';
// A new user's audit: the migration guide promised a hint for every word it lists as not carried over.
const CLOSE_SPREAD_TIME = 'not supported: at `limits.drainTimeout` the sessions still open are closed at once (a drain or `onServerDown: shutdown` closes them at its pool\'s `evictRate`)';

/**
 * HAProxy / keepalived words that have no key of that name where they are written, by the mapping (its KEYS
 * list) they are written in: what to write instead, or that it does not exist. `{pool}` is the pool's path.
 */
const FOREIGN_NOTES = new Map<readonly string[], Readonly<Record<string, string>>>([
  [
    KEYS.server,
    {
      check: `${HEALTH_PER_POOL}, on by default: \`{pool}.health.type\``,
      inter: `${HEALTH_PER_POOL}: \`{pool}.health.interval\``,
      fastinter: `${HEALTH_PER_POOL}: \`{pool}.health.fastInterval\``,
      downinter: `${HEALTH_PER_POOL}: \`{pool}.health.downInterval\``,
      fall: `${HEALTH_PER_POOL}: \`{pool}.health.fall\``,
      rise: `${HEALTH_PER_POOL}: \`{pool}.health.rise\``,
      maxconn: 'did you mean `maxConnections`? a server at its cap refuses new clients with CONNACK Server busy; there is no queue',
      maxqueue: NO_SERVER_QUEUE,
      sendproxy: 'the PROXY header is set per pool: `{pool}.sendProxyProtocol: v1`',
      sendproxyv2: 'the PROXY header is set per pool: `{pool}.sendProxyProtocol: v2`',
      slowstart: 'not supported: a server takes its full share as soon as it is up',
      disabled: 'set it in `maint` with the admin API, `POST /api/servers/<pool>/<server>/maint`; `admin.stateFile` keeps it across restarts',
      onmarkeddown: 'set per pool: `{pool}.onServerDown: shutdown`',
      onmarkedup: 'set per pool: `{pool}.onServerUp: rebalance`',
      agentcheck: 'not supported; the nearest is `{pool}.health.type: http` with this server\'s `healthUrl`',
      sticktable: NO_STICK_TABLE,
      stick: NO_STICK_TABLE,
      port: 'the port is part of `address`; a health check on another port is `{pool}.health.port`',
      resolvers: NO_RESOLVERS,
      initaddr: 'not needed: a server whose name does not resolve at start is down until it does; the start goes on',
      ssl: NO_BROKER_TLS,
      tls: NO_BROKER_TLS,
      verify: NO_BROKER_TLS,
      sni: NO_BROKER_TLS,
      checkssl: NO_BROKER_TLS,
      cafile: NO_BROKER_TLS,
    },
  ],
  [
    KEYS.pool,
    {
      slowstart: 'not supported: a server takes its full share as soon as it is up',
      onmarkeddown: 'did you mean `{pool}.onServerDown: shutdown`?',
      onmarkedup: 'did you mean `{pool}.onServerUp: rebalance`?',
      redispatch: 'did you mean `{pool}.retries`? a retry always goes to another server',
      optionredispatch: 'did you mean `{pool}.retries`? a retry always goes to another server',
      sticktable: NO_STICK_TABLE,
      stick: NO_STICK_TABLE,
      agentcheck: 'not supported; the nearest is `{pool}.health.type: http`',
      maxconn: NO_POOL_CAP,
      maxconnections: NO_POOL_CAP,
      hashtype: 'not needed: `{pool}.balance: client-id-hash` is consistent (rendezvous) hashing already: a server added or removed moves only its own share of clients',
      maxqueue: NO_SERVER_QUEUE,
      inter: 'did you mean `{pool}.health.interval`?',
      fastinter: 'did you mean `{pool}.health.fastInterval`?',
      downinter: 'did you mean `{pool}.health.downInterval`?',
      timeoutconnect: 'did you mean `{pool}.serverConnectTimeout`?',
      timeoutcheck: 'did you mean `{pool}.health.timeout`?',
      timeoutclient: CLIENT_TIMEOUT,
      timeoutserver: IDLE_TIMEOUT,
      timeouttunnel: IDLE_TIMEOUT,
      timeoutqueue: ACCEPT_QUEUE_ONLY,
      timeout: 'HAProxy\'s `timeout connect` is `{pool}.serverConnectTimeout`, the check\'s `timeout check` is `{pool}.health.timeout`, the wait for a server\'s CONNACK `{pool}.serverConnackTimeout`; the client and idle timeouts are in `limits`',
      defaultserver: 'no `default-server`: health checks are `{pool}.health`, the PROXY header `{pool}.sendProxyProtocol`',
      mode: NO_MODE,
      fullconn: 'not needed: caps do not scale with load here; `maxConnections` on each server',
      resolvers: NO_RESOLVERS,
      option: 'HAProxy options are keys here: `option redispatch` is `{pool}.retries`, check options are under `{pool}.health`',
      ssl: NO_BROKER_TLS,
      tls: NO_BROKER_TLS,
    },
  ],
  [
    KEYS.listener,
    {
      inspectdelay: 'did you mean `limits.clientConnectTimeout`? the time a client has for its whole CONNECT',
      tcprequest: 'did you mean `limits.clientConnectTimeout`? the time a client has for its whole CONNECT',
      timeout: TIMEOUTS,
      timeoutclient: CLIENT_TIMEOUT,
      defaultbackend: TO_POOL,
      mode: NO_MODE,
      option: 'HAProxy options are keys here: `option tcplog` is `log.sessions: true`; the rest are under the pool (`retries`, `health`) and `limits`',
      usebackend: TO_POOL,
      crt: 'did you mean `tls.cert`? with `tls.key` (HAProxy\'s combined PEM, certificate and key in one file, may be named by both)',
      ssl: 'did you mean `tls`? a mapping with `cert` and `key`',
    },
  ],
  [
    KEYS.root,
    {
      inspectdelay: 'did you mean `limits.clientConnectTimeout`?',
      tcprequest: 'did you mean `limits.clientConnectTimeout`?',
      timeout: TIMEOUTS,
      vrrpscript: TRACKABLE,
      maxconn: 'did you mean `limits.maxConnections`?',
      frontend: 'an HAProxy `frontend` is an entry of `listeners` (`name`, `bind`, `pool`); docs/migration.md maps the rest',
      backend: 'an HAProxy `backend` is a pool under `pools` (`balance`, `servers`, `health`); docs/migration.md maps the rest',
      listen: 'an HAProxy `listen` section is an entry of `listeners` and its pool under `pools`; docs/migration.md',
      global: 'HAProxy `global` settings: `limits` (`maxconn` is `limits.maxConnections`), `workers` (`nbthread`), `log`, `admin`',
      defaults: 'no defaults section: every key has its default (docs/configuration.md); timeouts are in `limits` and each pool',
      vrrpinstance: 'a keepalived `vrrp_instance` is the `failover` section (`interface`, `routerId`, `priority`, `vips`, `peers`)',
      nbthread: WORKERS,
      nbproc: WORKERS,
      stats: STATS,
      mode: NO_MODE,
      fullconn: 'not needed: caps do not scale with load here; `maxConnections` on each server, `limits.maxConnections` in all',
      resolvers: NO_RESOLVERS,
      option: 'HAProxy options are keys here: `option redispatch` is a pool\'s `retries`, check options are under its `health`, `option tcplog` is `log.sessions: true`',
      hardstopafter: HARD_STOP_AFTER,
      closespreadtime: CLOSE_SPREAD_TIME,
    },
  ],
  [
    KEYS.health,
    {
      timeoutcheck: HEALTH_TIMEOUT,
      timeoutconnect: HEALTH_TIMEOUT,
      ssl: NO_BROKER_TLS,
      tls: NO_BROKER_TLS,
      checkssl: NO_BROKER_TLS,
    },
  ],
  [
    KEYS.tls,
    {
      ciphers: TLS_POLICY_FIXED,
      ciphersuites: TLS_POLICY_FIXED,
      minversion: TLS_POLICY_FIXED,
      maxversion: TLS_POLICY_FIXED,
      sslminver: TLS_POLICY_FIXED,
      sslmaxver: TLS_POLICY_FIXED,
      curves: TLS_POLICY_FIXED,
      ecdhcurve: TLS_POLICY_FIXED,
      alpn: 'not supported: no ALPN is negotiated (a client that offers `mqtt` connects all the same)',
      crtlist: ONE_CERT,
      sni: ONE_CERT,
      certs: ONE_CERT,
    },
  ],
  [KEYS.admin, { stats: STATS, statsuri: STATS, statsenable: STATS, statsauth: 'did you mean `token`? a bearer token for the admin API', statssocket: STATS }],
  [
    KEYS.log,
    {
      format: 'no format to choose: every line is JSON (pino); `log.sessions: true` adds one line per session, as HAProxy\'s `option tcplog`',
      target: 'no target: lines go to stdout (the journal under systemd); send them on from there',
    },
  ],
  [KEYS.track, { weight: 'did you mean `failover.track.pools.weight`? what each pool with no server up takes off the priority' }],
  [
    KEYS.limits,
    {
      timeout: TIMEOUTS,
      timeoutconnect: 'did you mean `pools.<name>.serverConnectTimeout`? it is set per pool',
      timeoutclient: CLIENT_TIMEOUT,
      timeoutserver: IDLE_TIMEOUT,
      timeouttunnel: IDLE_TIMEOUT,
      timeoutqueue: 'no queue timeout: clients wait for an accept slot (`limits.acceptQueue` is how many may wait, `limits.acceptRate` how fast they are taken) up to `limits.clientConnectTimeout`',
      maxqueue: ACCEPT_QUEUE_ONLY,
      hardstopafter: HARD_STOP_AFTER,
      closespreadtime: CLOSE_SPREAD_TIME,
    },
  ],
  [KEYS.trackScript, { initfail: 'not needed: no instance becomes master while a script has no first result yet' }],
  [KEYS.failover, KEEPALIVED],
  [KEYS.instance, KEEPALIVED],
]);

/** What to write instead of a foreign word, for the mapping of KEYS list `allowed` at `path`; null when none is known. */
export function foreignNote(unknown: string, allowed: readonly string[], path: string): string | null {
  const note = FOREIGN_NOTES.get(allowed)?.[fold(unknown).replace(/\s+/g, '')];
  return note === undefined ? null : note.replaceAll('{pool}', path.replace(/\.servers\[\d+\]$/, ''));
}

/** How each KEYS list is written as a path, for "`key` is a key of …" (elsewhereNote). */
const SECTION_PATHS = new Map<readonly string[], string>([
  [KEYS.root, 'the top level'],
  [KEYS.listener, '`listeners[]`'],
  [KEYS.tls, '`listeners[].tls`'],
  [KEYS.pool, '`pools.<name>`'],
  [KEYS.server, '`pools.<name>.servers[]`'],
  [KEYS.health, '`pools.<name>.health`'],
  [KEYS.healthMqtt, '`pools.<name>.health.mqtt`'],
  [KEYS.healthHttp, '`pools.<name>.health.http`'],
  [KEYS.limits, '`limits`'],
  [KEYS.perSource, '`limits.perSource`'],
  [KEYS.admin, '`admin`'],
  [KEYS.log, '`log`'],
  [KEYS.failover, '`failover`'],
  [KEYS.instance, '`failover.instances[]`'],
  [KEYS.track, '`failover.track`'],
  [KEYS.trackPools, '`failover.track.pools`'],
  [KEYS.garp, '`failover.garp`'],
]);

/**
 * An lb.yaml key written in a mapping that does not hold it: where it belongs (`refuseWith` in a pool); null when
 * nowhere, or in more than two places (`port`, `name`: a list of them would say little).
 */
export function elsewhereNote(key: string, allowed: readonly string[]): string | null {
  const places: string[] = [];
  for (const [keys, path] of SECTION_PATHS) if (keys !== allowed && keys.includes(key)) places.push(path);
  if (places.length === 0 || places.length > 2) return null;
  return `\`${key}\` belongs in ${places.join(' or ')}`;
}

/** Said after the suggestion of a value that does not do quite what the foreign one did. */
const VALUE_NOTES: Readonly<Record<string, string>> = {
  shutdownbackupsessions: 'with a hash it also moves back the sessions of a returning non-backup server',
};

/**
 * HAProxy `balance` algorithms with no counterpart here, keyed by the folded word without its arguments (`hdr(host)`):
 * why, and what to use. Said only for the `balance` values (recognised by `client-id-hash` among them).
 */
const MQTT_KEYS = 'an MQTT pool hashes the client ID (`client-id-hash`) or the user name (`username-hash`)';
const BALANCE_NOTES: Readonly<Record<string, string>> = {
  first: 'HAProxy\'s `first` (fill servers in order) is not supported: for active-passive use `backup: true` servers, to spread use `least-connections`',
  hdr: `an HTTP algorithm: ${MQTT_KEYS}`,
  uri: `an HTTP algorithm: ${MQTT_KEYS}`,
  urlparam: `an HTTP algorithm: ${MQTT_KEYS}`,
  rdpcookie: `an RDP algorithm: ${MQTT_KEYS}`,
};

/** `; did you mean …?` for a value not among `allowed`, or '' when nothing is close. */
export function valueHint(value: string, allowed: readonly string[]): string {
  // HAProxy writes arguments after the word (`hash var(txn.cid)`): the word alone then.
  const first = value.trim().split(/\s+/)[0]!;
  let guess = suggestKey(value, allowed) ?? (first !== value ? suggestKey(first, allowed) : null);
  // HAProxy's `hash mqtt_field_value(connect,username)`: the username's hash (a balancing audit got client-id-hash).
  if (guess === 'client-id-hash' && allowed.includes('username-hash') && /username/i.test(value)) guess = 'username-hash';
  if (guess === null) {
    const balanceNote = allowed.includes('client-id-hash') ? BALANCE_NOTES[fold(first.replace(/\(.*$/, ''))] : undefined;
    return balanceNote === undefined ? '' : `; ${balanceNote}`;
  }
  const note = VALUE_NOTES[fold(value)];
  return `; did you mean \`${guess}\`?${note !== undefined ? ` ${note}` : ''}`;
}

/** What people write for "none" where the allowed values say `off` (YAML reads `false` as a boolean, `null` as null). */
const OFF_WORDS = new Set(['false', 'none', 'no', 'disabled', 'disable', 'null', '0']);

/** For a key whose values include `off` (`takeover`, `sendProxyProtocol`): `false`, `none`, `no` and the like point to it. */
export function offHint(value: unknown, allowed: readonly string[]): string {
  if (!allowed.includes('off')) return '';
  const text = typeof value === 'string' ? fold(value.trim()) : typeof value === 'boolean' || typeof value === 'number' || value === null ? String(value) : null;
  return text !== null && OFF_WORDS.has(text) ? '; did you mean `off`?' : '';
}

function fold(s: string): string {
  return s.toLowerCase().replace(/[_-]/g, '');
}

/** Optimal string alignment distance (Levenshtein plus adjacent transposition: `pirority`). */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array<number>(rows * cols).fill(0);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[(i - 1) * cols + j]! + 1, d[i * cols + j - 1]! + 1, d[(i - 1) * cols + j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, d[(i - 2) * cols + j - 2]! + 1);
      }
      d[i * cols + j] = v;
    }
  }
  return d[rows * cols - 1]!;
}

/** The allowed key `unknown` most likely meant, or null when nothing is close enough to be a useful hint. */
export function suggestKey(unknown: string, allowed: readonly string[]): string | null {
  const folded = fold(unknown);
  const foreign = [FOREIGN_NAMES[unknown.toLowerCase()] ?? FOREIGN_NAMES[folded] ?? []].flat().find((f) => allowed.includes(f));
  if (foreign !== undefined) return foreign;
  // Up to a third of the word may differ, at least 1 edit and at most 3.
  const limit = Math.min(3, Math.max(1, Math.floor(folded.length / 3)));
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const key of allowed) {
    const dist = editDistance(folded, fold(key));
    if (dist < bestDistance) {
      best = key;
      bestDistance = dist;
    }
  }
  return bestDistance <= limit ? best : null;
}
