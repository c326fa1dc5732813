/**
 * Every default of lb.yaml (contract: design.md §4), in one place.
 * Values are in the validated units of types.ts: durations in milliseconds, rates per second, sizes in bytes.
 * docs/configuration.md repeats them for people; test/unit/config-docs.test.ts keeps the two in step.
 * Keys without a default (listeners, pools, names, addresses, failover.interface/authKeyFile/vips) are not here.
 */

export const DEFAULTS = {
  listener: {
    maxConnections: 10_000, // sessions on this listener; clamped at start to the open-file limit
    acceptProxyProtocol: [] as readonly string[], // CIDRs that must send a PROXY header; none
    tls: null, // plain TCP
    refuseWith: 'connack', // a refused client gets a CONNACK with the reason
    evictWith: 'disconnect', // a 5.0 client whose session the balancer closes gets a DISCONNECT with the reason
  },
  tls: {
    ca: null, // no client CA: Node's default roots when requestCert is on
    requestCert: false,
    certAsUsername: false,
  },
  pool: {
    balance: 'client-id-hash',
    fallback: 'least-connections', // used when the hash key is empty
    serverConnectTimeout: 3_000, // ms (YAML `3s`)
    // ms; the server's first byte after the CONNECT. 0 = wait as long as the client: a refusal on by default would make
    // mqtt.js and mosquitto_sub clients stop reconnecting for good under refuseWith: connack (an audit), where a
    // stalled broker's queue may still be served.
    serverConnackTimeout: 0,
    retries: 2, // other servers tried when a dial fails before any byte was sent
    sendProxyProtocol: 'off',
    onServerDown: 'keep',
    onServerUp: 'keep',
    takeover: 'client-id-and-username',
    evictRate: 500, // sessions closed per second
  },
  server: {
    weight: 1, // 0 = never picked (HAProxy semantics), max 256
    backup: false,
    healthUrl: null, // use the pool's health.http port/path at the server's host
    maxConnections: 0, // sessions on this server, 0 = no cap (HAProxy's server `maxconn`)
  },
  health: {
    type: 'mqtt',
    interval: 2_000, // ms (YAML `2s`), HAProxy `inter 2s`
    fastInterval: null, // ms, while a verdict is in the making (HAProxy `fastinter`); null = interval
    downInterval: null, // ms, while a server is down (HAProxy `downinter`); null = interval
    timeout: 1_000, // ms (YAML `1s`)
    rise: 2, // consecutive successes to mark up (HAProxy rise 2)
    fall: 3, // consecutive failures to mark down (HAProxy fall 3)
    port: null, // tcp/mqtt probes: null = the server's own port (HAProxy `check port`)
    mqtt: {
      version: 4, // protocol level: 3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0
      clientId: null, // null: the health code uses "mqtt-lb-health-<hostname>-<server>"
      username: null,
      password: null,
    },
    http: {
      port: 18083, // EMQX dashboard/API port
      path: '/api/v5/status',
    },
  },
  limits: {
    clientConnectTimeout: 10_000, // ms (YAML `10s`), from accept to a complete CONNECT
    maxConnectBytes: 262_144, // bytes, whole first packet including the fixed header
    maxConnections: 20_000, // sessions over all listeners
    acceptRate: 0, // new sessions per second, 0 = unlimited
    acceptQueue: 1_000, // clients waiting for an accept-rate slot
    perSource: {
      maxConnections: 0, // per client address, 0 = unlimited
      connectRate: 0, // per client address per second, 0 = unlimited
      exempt: [] as readonly string[], // CIDRs neither limit applies to; none
    },
    drainTimeout: 30_000, // ms (YAML `30s`)
    idleTimeout: 0, // ms; 0 = a routed session is never closed for silence (src/proxy/idle-sweep.ts)
    maxMemory: 0, // bytes of JavaScript heap in use + Buffers; 0 = no ceiling (src/proxy/memory-ceiling.ts)
    maxPendingConnectBytes: 67_108_864, // bytes all unfinished CONNECTs may hold beyond 512 each; 0 = no bound
  },
  admin: {
    bind: '127.0.0.1:9883',
    token: null, // required when bind is not loopback
    stateFile: null as string | null, // admin states kept across restarts; null = until a restart
  },
  log: {
    level: 'info',
    sessions: false, // true: one info line per closed session
    bufferBytes: 4_194_304, // bytes of log lines held while the reader does not keep up
  },
  workers: 1, // proxy processes; `auto` = one per core
  warmUp: 3_000, // synthetic loopback sessions at start, to compile the session code before a storm (src/warm-up.ts)
  failover: {
    transport: 'unicast',
    peers: [] as readonly string[], // required (non-empty) with unicast
    group: '224.0.0.18', // multicast group (the VRRP group address)
    port: 18831, // UDP port of the adverts
    advertInterval: 100, // ms (YAML `100ms`); carried in centiseconds on the wire
    preempt: true,
    preemptDelay: 0, // ms (YAML `0s`)
    track: {
      listeners: true,
      interface: true,
      pools: { weight: 50 }, // priority lowered per pool with no server up
      scripts: [] as readonly never[], // keepalived's vrrp_script: none
    },
    garp: {
      count: 5, // gratuitous ARPs per VIP on becoming MASTER
      interval: 200, // ms (YAML `200ms`) between them
      repeatAfter: 5_000, // ms (YAML `5s`): one more round after this, 0 = none
    },
    notify: null, // no state-change hook
  },
  failoverInstance: {
    routerId: 51, // shorthand only; entries of `instances` must name theirs
    priority: 100, // keepalived's default
  },
  trackScript: {
    args: [] as readonly string[],
    interval: 2_000, // ms between runs (keepalived's `interval`)
    timeout: 1_000, // ms; killed (with what it started) and failed after this
    rise: 1, // consecutive passes to pass again (keepalived's default)
    fall: 1, // consecutive failures to fail
    weight: 0, // 0 = FAULT while failing; N = priority lowered by N
  },
} as const;

/**
 * The least limits.maxPendingConnectBytes can be (a value written below it is raised to it, with a warning): a CONNECT
 * of `maxConnectBytes` always fits when it comes alone, its buffer doubling past it by a read of 64 KiB at most.
 */
export function pendingConnectFloor(maxConnectBytes: number): number {
  return 4 * (maxConnectBytes + 64 * 1024);
}

/** The bound in effect on what unfinished CONNECTs hold together: the configured value, raised to its floor. */
export function pendingConnectBound(limits: { maxPendingConnectBytes: number; maxConnectBytes: number }): number {
  return Math.max(limits.maxPendingConnectBytes, pendingConnectFloor(limits.maxConnectBytes));
}
