import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config/defaults.js';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import type { LbConfig } from '../../src/config/types.js';
import { ConfigError, ErrorCodes, MqttLbError } from '../../src/errors.js';

/** Every key of design.md §4, none at its default where a different value is allowed. */
const FULL = `
listeners:
  - name: mqtt
    bind: 0.0.0.0:1883
    pool: brokers
    maxConnections: 5000
    acceptProxyProtocol: [10.0.0.0/8, 192.0.2.7, "2001:db8::/32"]
    refuseWith: close
    evictWith: close
  - name: mqtts
    bind: "[::]:8883"
    pool: emqx
    tls:
      cert: /etc/mqtt-lb/tls.crt
      key: tls/tls.key
      ca: /etc/mqtt-lb/ca.crt
      requestCert: true
      certAsUsername: true

pools:
  brokers:
    balance: username-hash
    fallback: round-robin
    serverConnectTimeout: 1500ms
    serverConnackTimeout: 4s
    retries: 0
    sendProxyProtocol: v2
    onServerDown: shutdown
    onServerUp: rebalance
    takeover: username
    evictRate: 12.5
    servers:
      - name: b1
        address: 10.0.0.11:1883
        weight: 3
        backup: false
        healthUrl: null
        maxConnections: 5000
      - name: b2
        address: "[fd00::12]:1884"
        weight: 0
        backup: true
    health:
      type: mqtt
      interval: 5s
      fastInterval: 1s
      downInterval: 30s
      timeout: 500ms
      rise: 1
      fall: 5
      port: 1885
      mqtt: { version: 5, clientId: 'probe-{server}', username: lb, password: secret }
  emqx:
    balance: round-robin
    servers:
      - name: e1
        address: emqx-1.example:1883
        healthUrl: https://emqx-1.example:18084/api/v5/status
    health:
      type: http
      interval: 1m
      timeout: 10s
      http: { port: 8081, path: /status }

limits:
  clientConnectTimeout: 5s
  maxConnectBytes: 65536
  maxConnections: 30000
  acceptRate: 200
  acceptQueue: 50
  perSource: { maxConnections: 10, connectRate: 2.5, exempt: [198.51.100.0/24, 203.0.113.9] }
  drainTimeout: 1h
  idleTimeout: 2h
  maxPendingConnectBytes: 33554432

admin:
  bind: 0.0.0.0:9883
  token: 0123456789abcdef0123
  stateFile: /var/lib/mqtt-lb/admin-state.json

log:
  level: debug
  sessions: true
  bufferBytes: 1048576

workers: auto
warmUp: 2000

failover:
  interface: eth1
  transport: multicast
  group: 224.0.0.19
  port: 18832
  authKeyFile: ./failover.key
  advertInterval: 250ms
  preempt: false
  preemptDelay: 30s
  instances:
    - { routerId: 51, priority: 150, vips: [192.0.2.10/24] }
    - { routerId: 52, vips: [192.0.2.11/24, 198.51.100.5] }
  track:
    listeners: false
    interface: false
    pools: { weight: 20 }
  garp: { count: 3, interval: 1s, repeatAfter: 0s }
  notify: /usr/local/bin/lb-notify
`;

function expectedFull(file: string): LbConfig {
  const dir = resolve(file, '..');
  return {
    file,
    listeners: [
      {
        name: 'mqtt',
        bind: '0.0.0.0:1883',
        address: { host: '0.0.0.0', port: 1883 },
        pool: 'brokers',
        maxConnections: 5000,
        maxConnectionsWritten: true,
        tls: null,
        acceptProxyProtocol: ['10.0.0.0/8', '192.0.2.7/32', '2001:db8::/32'],
        refuseWith: 'close',
        evictWith: 'close',
      },
      {
        name: 'mqtts',
        bind: '[::]:8883',
        address: { host: '::', port: 8883 },
        pool: 'emqx',
        maxConnections: 10_000,
        maxConnectionsWritten: false,
        tls: {
          cert: '/etc/mqtt-lb/tls.crt',
          key: join(dir, 'tls/tls.key'),
          ca: '/etc/mqtt-lb/ca.crt',
          requestCert: true,
          certAsUsername: true,
          material: null, // parsed without reading the files
        },
        acceptProxyProtocol: [],
        refuseWith: 'connack',
        evictWith: 'disconnect',
      },
    ],
    pools: {
      brokers: {
        name: 'brokers',
        balance: 'username-hash',
        fallback: 'round-robin',
        serverConnectTimeout: 1500,
        serverConnackTimeout: 4000,
        retries: 0,
        sendProxyProtocol: 'v2',
        onServerDown: 'shutdown',
        onServerUp: 'rebalance',
        takeover: 'username',
        evictRate: 12.5,
        servers: [
          { name: 'b1', address: '10.0.0.11:1883', host: '10.0.0.11', port: 1883, weight: 3, backup: false, healthUrl: null, maxConnections: 5000 },
          { name: 'b2', address: '[fd00::12]:1884', host: 'fd00::12', port: 1884, weight: 0, backup: true, healthUrl: null, maxConnections: 0 },
        ],
        health: {
          type: 'mqtt',
          interval: 5000,
          fastInterval: 1000,
          downInterval: 30_000,
          timeout: 500,
          rise: 1,
          fall: 5,
          port: 1885,
          mqtt: { version: 5, clientId: 'probe-{server}', username: 'lb', password: 'secret' },
          http: { port: 18083, path: '/api/v5/status' },
        },
      },
      emqx: {
        name: 'emqx',
        balance: 'round-robin',
        fallback: 'least-connections',
        serverConnectTimeout: 3000,
        serverConnackTimeout: 0,
        retries: 2,
        sendProxyProtocol: 'off',
        onServerDown: 'keep',
        onServerUp: 'keep',
        takeover: 'client-id-and-username',
        evictRate: 500,
        servers: [
          {
            name: 'e1',
            address: 'emqx-1.example:1883',
            host: 'emqx-1.example',
            port: 1883,
            weight: 1,
            backup: false,
            healthUrl: 'https://emqx-1.example:18084/api/v5/status',
            maxConnections: 0,
          },
        ],
        health: {
          type: 'http',
          interval: 60_000,
          fastInterval: null,
          downInterval: null,
          timeout: 10_000,
          rise: 2,
          fall: 3,
          port: null,
          mqtt: { version: 4, clientId: null, username: null, password: null },
          http: { port: 8081, path: '/status' },
        },
      },
    },
    limits: {
      clientConnectTimeout: 5000,
      maxConnectBytes: 65536,
      maxConnections: 30000,
      maxConnectionsWritten: true,
      acceptRate: 200,
      acceptQueue: 50,
      perSource: { maxConnections: 10, connectRate: 2.5, exempt: ['198.51.100.0/24', '203.0.113.9/32'] },
      drainTimeout: 3_600_000,
      idleTimeout: 7_200_000,
      maxMemory: 0,
      maxPendingConnectBytes: 33_554_432,
    },
    admin: { bind: '0.0.0.0:9883', address: { host: '0.0.0.0', port: 9883 }, token: '0123456789abcdef0123', stateFile: '/var/lib/mqtt-lb/admin-state.json' },
    log: { level: 'debug', sessions: true, bufferBytes: 1_048_576 },
    workers: 'auto',
    warmUp: 2_000,
    failover: {
      interface: 'eth1',
      transport: 'multicast',
      peers: [],
      group: '224.0.0.19',
      port: 18832,
      authKeyFile: join(dir, 'failover.key'),
      advertInterval: 250,
      preempt: false,
      preemptDelay: 30_000,
      instances: [
        { routerId: 51, priority: 150, vips: ['192.0.2.10/24'] },
        { routerId: 52, priority: 100, vips: ['192.0.2.11/24', '198.51.100.5/32'] },
      ],
      track: { listeners: false, interface: false, pools: { weight: 20 }, scripts: [] },
      garp: { count: 3, interval: 1000, repeatAfter: 0 },
      notify: '/usr/local/bin/lb-notify',
    },
  };
}

/** The shape of the repository's demo: only the keys without a default. */
const MINIMAL = `
listeners:
  - name: mqtt
    bind: 0.0.0.0:1883
    pool: demo
pools:
  demo:
    servers:
      - { name: demo-1, address: 127.0.0.1:18831 }
      - { name: demo-2, address: 127.0.0.1:18832 }
`;

describe('parseConfig', () => {
  it('reads a config that sets every key', () => {
    const file = '/etc/mqtt-lb/lb.yaml';
    const out = parseConfig(FULL, file);
    expect(out.problems).toEqual([]);
    expect(out.warnings).toEqual([]);
    expect(out.config).toEqual(expectedFull(file));
  });

  it('fills every default into a minimal config', () => {
    const out = parseConfig(MINIMAL, 'lb.yaml');
    expect(out.problems).toEqual([]);
    expect(out.warnings).toEqual([]);
    const serverDefaults = { weight: 1, backup: false, healthUrl: null, maxConnections: 0 };
    const expected: LbConfig = {
      file: resolve('lb.yaml'),
      listeners: [
        {
          name: 'mqtt',
          bind: '0.0.0.0:1883',
          address: { host: '0.0.0.0', port: 1883 },
          pool: 'demo',
          maxConnections: 10_000,
          maxConnectionsWritten: false,
          tls: null,
          acceptProxyProtocol: [],
          refuseWith: 'connack',
          evictWith: 'disconnect',
        },
      ],
      pools: {
        demo: {
          name: 'demo',
          balance: 'client-id-hash',
          fallback: 'least-connections',
          serverConnectTimeout: 3_000,
          serverConnackTimeout: 0,
          retries: 2,
          sendProxyProtocol: 'off',
          onServerDown: 'keep',
          onServerUp: 'keep',
          takeover: 'client-id-and-username',
          evictRate: 500,
          servers: [
            { name: 'demo-1', address: '127.0.0.1:18831', host: '127.0.0.1', port: 18831, ...serverDefaults },
            { name: 'demo-2', address: '127.0.0.1:18832', host: '127.0.0.1', port: 18832, ...serverDefaults },
          ],
          health: {
            type: 'mqtt',
            interval: 2_000,
            fastInterval: null,
            downInterval: null,
            timeout: 1_000,
            rise: 2,
            fall: 3,
            port: null,
            mqtt: { version: 4, clientId: null, username: null, password: null },
            http: { port: 18083, path: '/api/v5/status' },
          },
        },
      },
      limits: {
        clientConnectTimeout: 10_000,
        maxConnectBytes: 262_144,
        maxConnections: 20_000,
        maxConnectionsWritten: false,
        acceptRate: 0,
        acceptQueue: 1_000,
        perSource: { maxConnections: 0, connectRate: 0, exempt: [] },
        drainTimeout: 30_000,
        idleTimeout: 0,
        maxMemory: 0,
        maxPendingConnectBytes: 67_108_864,
      },
      admin: { bind: '127.0.0.1:9883', address: { host: '127.0.0.1', port: 9883 }, token: null, stateFile: null },
      log: { level: 'info', sessions: false, bufferBytes: 4_194_304 },
      workers: 1,
      warmUp: 3_000,
      failover: null,
    };
    expect(out.config).toEqual(expected);
  });

  it('takes its defaults from DEFAULTS (one source of truth)', () => {
    const c = parseConfig(MINIMAL, 'lb.yaml').config!;
    const pool = c.pools['demo']!;
    expect(pool.serverConnectTimeout).toBe(DEFAULTS.pool.serverConnectTimeout);
    expect(pool.health.interval).toBe(DEFAULTS.health.interval);
    expect(c.limits.drainTimeout).toBe(DEFAULTS.limits.drainTimeout);
    expect(c.listeners[0]!.maxConnections).toBe(DEFAULTS.listener.maxConnections);
  });

  it('turns the failover shorthand into instances[0] with failover defaults', () => {
    const text = `${MINIMAL}
failover:
  interface: eth0
  peers: [10.0.0.2]
  authKeyFile: /etc/mqtt-lb/failover.key
  vips: [192.0.2.10/24]
`;
    const out = parseConfig(text, '/srv/lb.yaml');
    expect(out.problems).toEqual([]);
    expect(out.config!.failover).toEqual({
      interface: 'eth0',
      transport: 'unicast',
      peers: ['10.0.0.2'],
      group: '224.0.0.18',
      port: 18831,
      authKeyFile: '/etc/mqtt-lb/failover.key',
      advertInterval: 100,
      preempt: true,
      preemptDelay: 0,
      instances: [{ routerId: 51, priority: 100, vips: ['192.0.2.10/24'] }],
      track: { listeners: true, interface: true, pools: { weight: 50 }, scripts: [] },
      garp: { count: 5, interval: 200, repeatAfter: 5_000 },
      notify: null,
    });
  });

  it('accepts health type none, explicit nulls for optional sections, and anchors', () => {
    const text = `
defaults: &srv { weight: 2 }
listeners:
  - { name: a, bind: "127.0.0.1:1883", pool: p }
pools:
  p:
    servers:
      - { name: s1, address: "127.0.0.1:1884" }
    health: { type: none }
limits:
admin: ~
failover: null
`;
    // `defaults` is not a key of lb.yaml: anchors need a home, and that home is reported.
    const withAnchorHome = parseConfig(text, 'lb.yaml');
    expect(withAnchorHome.problems.map((p) => p.path)).toEqual(['defaults']);

    const ok = parseConfig(text.replace('defaults: &srv { weight: 2 }\n', ''), 'lb.yaml');
    expect(ok.problems).toEqual([]);
    expect(ok.config!.pools['p']!.health.type).toBe('none');
    expect(ok.config!.failover).toBeNull();

    const aliased = parseConfig(
      `
listeners:
  - { name: a, bind: &b "127.0.0.1:1883", pool: p }
pools:
  p:
    servers:
      - { name: s1, address: *b }
`,
      'lb.yaml',
    );
    expect(aliased.problems).toEqual([]);
    expect(aliased.config!.pools['p']!.servers[0]!.address).toBe('127.0.0.1:1883');
  });

  it('reports nothing as config when there is a problem', () => {
    const out = parseConfig(MINIMAL.replace('pool: demo', 'pool: nope'), 'lb.yaml');
    expect(out.config).toBeNull();
    expect(out.problems).toHaveLength(1);
  });

  it('keeps warnings apart from problems', () => {
    const out = parseConfig(`${MINIMAL}    health: { interval: 1s, timeout: 1s }\n`, 'lb.yaml');
    expect(out.problems).toEqual([]);
    expect(out.config).not.toBeNull();
    expect(out.warnings).toEqual([
      'lb.yaml:11:38 pools.demo.health.timeout: timeout 1s is not shorter than interval 1s: a server that hangs is probed back to back',
    ]);
  });
});

describe('parseConfig on a file with lone-CR line endings', () => {
  it('says so at the first one', () => {
    const r = parseConfig('listeners:\r  - { name: a, bind: "127.0.0.1:1", pool: p }\rpools: {}\r', 'cr.yaml');
    expect(r.problems.map((p) => `${p.line}:${p.col} ${p.path}: ${p.message}`)).toEqual([
      '1:11 (root): a line ends with a lone CR (classic Mac line endings): save the file with LF (or CRLF) line endings',
    ]);
  });
});

describe('parseConfig on an unquoted IPv6 host:port', () => {
  it.each([
    ['block', 'listeners:\n  - name: a\n    bind: [::]:41883\n    pool: p\n', '3:11 listeners[0].bind', '[::]:41883'],
    ['flow', 'listeners:\n  - { name: a, bind: [::]:41883, pool: p }\n', '2:22 listeners[0].bind', '[::]:41883'],
    // The value as written, not the wildcard and the MQTT port (a re-audit).
    ['admin', 'admin:\n  bind: [::1]:9883\n', '2:9 admin.bind', '[::1]:9883'],
  ])('%s: says to quote it, where the `[` opens', (_name, text, at, written) => {
    const r = parseConfig(text, 'v6.yaml');
    expect(r.problems.map((p) => `${p.line}:${p.col} ${p.path}: ${p.message}`)).toEqual([`${at}: an IPv6 host:port must be quoted: \`"${written}"\` (unquoted, \`[\` starts a YAML list)`]);
  });
});

describe('parseConfig on files nested thousands deep (the YAML library recurses per level)', () => {
  const deep: Array<[string, string, string]> = [
    ['flow sequences', `x: ${'['.repeat(4000)}${']'.repeat(4000)}\n`, '1:4003'],
    ['flow sequences the library still reads', `x: ${'['.repeat(1500)}${']'.repeat(1500)}\n`, '1:1503'],
    ['flow mappings', `x: ${'{a: '.repeat(3000)}1${'}'.repeat(3000)}\n`, '1:12000'],
    ['block mappings', `${Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n')}\n${' '.repeat(3000)}v: 1\n`, '3001:3001'],
  ];
  it.each(deep)('%s: one problem where it nests deepest, no stack overflow', (_name, text, at) => {
    const r = parseConfig(text, 'deep.yaml');
    expect(r.config).toBeNull();
    expect(r.problems.map((p) => `${p.line}:${p.col} ${p.path}`)).toEqual([`${at} (root)`]);
    expect(r.problems[0]!.message).toMatch(/^nested too deeply/);
  });
});

describe('loadConfig', () => {
  let dir: string | null = null;
  afterEach(() => {
    if (dir !== null) rmSync(dir, { recursive: true, force: true });
    dir = null;
  });

  it('reads a file and returns its absolute path in the config', () => {
    dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-config-'));
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, MINIMAL);
    const config = loadConfig(file);
    expect(config.file).toBe(file);
    expect(config.listeners[0]!.name).toBe('mqtt');
  });

  it('throws CONFIG_READ when the file cannot be read', () => {
    dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-config-'));
    const file = join(dir, 'missing.yaml');
    let caught: unknown;
    try {
      loadConfig(file);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(MqttLbError);
    expect((caught as MqttLbError).code).toBe(ErrorCodes.CONFIG_READ);
    expect((caught as MqttLbError).message).toContain(file);
  });

  it('refuses to read more than 16 MiB (a device, a pipe, a runaway file) as CONFIG_READ, without reading it all', () => {
    let caught: unknown;
    try {
      loadConfig('/dev/zero');
    } catch (err) {
      caught = err;
    }
    expect((caught as MqttLbError).code).toBe(ErrorCodes.CONFIG_READ);
    expect((caught as MqttLbError).message).toBe('cannot read config file /dev/zero: larger than 16 MiB: not a config file');
  });

  it('reads a file with a byte-order mark: positions on line 1 count from after it', () => {
    dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-config-'));
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, `\ufefflisteners:\n  - { name: mqtt, bind: "0.0.0.0:1883", pool: demo }\npools:\n  demo:\n    servers: [{ name: b1, address: "127.0.0.1:1884" }]\nworker: 1\n`);
    let caught: unknown;
    try {
      loadConfig(file);
    } catch (err) {
      caught = err;
    }
    expect((caught as ConfigError).problems.map((p) => `${p.line}:${p.col} ${p.path}`)).toEqual(['6:1 worker']);
    writeFileSync(file, `\ufefflistners: []\n`);
    try {
      loadConfig(file);
    } catch (err) {
      caught = err;
    }
    expect((caught as ConfigError).problems[0]).toMatchObject({ line: 1, col: 1, path: 'listners' });
  });

  it('throws one ConfigError carrying every problem', () => {
    dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-config-'));
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, MINIMAL.replace('pool: demo', 'pool: nope').replace('18832', '0'));
    let caught: unknown;
    try {
      loadConfig(file);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const e = caught as ConfigError;
    expect(e.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(e.problems.map((p) => p.path)).toEqual(['listeners[0].pool', 'pools.demo.servers[1].address']);
    expect(e.message.split('\n')).toEqual([
      `${file}:5:11 listeners[0].pool: no pool named \`nope\`; pools: \`demo\``,
      `${file}:10:34 pools.demo.servers[1].address: port \`0\` must be an integer between 1 and 65535`,
    ]);
  });

  it('hands warnings to onWarning', () => {
    dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-config-'));
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, `${MINIMAL}  unused:\n    servers: [{ name: x, address: "127.0.0.1:1" }]\n`);
    const warnings: string[] = [];
    loadConfig(file, { onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([`${file}:11:3 pools.unused: no listener uses this pool`]);
  });
});
