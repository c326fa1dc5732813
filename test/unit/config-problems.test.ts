import { hostname } from 'node:os';
/**
 * Every kind of problem lb.yaml can have, as `mqtt-lb check` prints it: `FILE:LINE:COL path: message`,
 * pointing at the key (unknown keys), the value (bad values) or the enclosing mapping (missing keys).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parseConfig } from '../../src/config/load.js';
import { formatProblem } from '../../src/errors.js';

function problems(text: string): string[] {
  const out = parseConfig(text, 'lb.yaml');
  if (out.problems.length > 0) expect(out.config).toBeNull();
  return out.problems.map(formatProblem);
}

function warnings(text: string): string[] {
  return parseConfig(text, 'lb.yaml').warnings;
}

/** A valid config of 7 lines: appended sections start on line 8. */
const PREFIX = `listeners:
  - name: mqtt
    bind: 0.0.0.0:1883
    pool: brokers
pools:
  brokers:
    servers: [{ name: b1, address: "10.0.0.11:1883" }]
`;

describe('config problems', () => {
  it('the prefix itself is valid', () => {
    expect(problems(PREFIX)).toEqual([]);
  });

  it('unknown key: at the key, with did-you-mean', () => {
    expect(problems(`${PREFIX}limits:\n  maxConection: 5\n`)).toEqual([
      'lb.yaml:9:3 limits.maxConection: unknown key `maxConection` (did you mean `maxConnections`?)',
    ]);
    expect(problems(`${PREFIX}admin:\n  port: 9883\n`)).toEqual([
      'lb.yaml:9:3 admin.port: unknown key `port`; allowed here: bind, token, stateFile',
    ]);
    expect(problems(PREFIX.replace('listeners:', 'frontends:'))).toEqual([
      'lb.yaml:1:1 frontends: unknown key `frontends` (did you mean `listeners`?)',
      'lb.yaml:1:1 listeners: missing required key `listeners` (at least one listener)',
    ]);
  });

  it('bad value: at the value, saying what was expected and what was got', () => {
    expect(problems(PREFIX.replace('"10.0.0.11:1883" }', '"10.0.0.11:1883", weight: 300 }'))).toEqual([
      'lb.yaml:7:62 pools.brokers.servers[0].weight: must be an integer between 0 and 256 (got 300)',
    ]);
    expect(problems(`${PREFIX}log:\n  level: verbose\n`)).toEqual([
      'lb.yaml:9:10 log.level: must be one of `fatal`, `error`, `warn`, `info`, `debug`, `trace`, `silent` (got "verbose")',
    ]);
    expect(problems(`${PREFIX}    balance: least-connection\n`)).toEqual([
      'lb.yaml:8:14 pools.brokers.balance: must be one of `client-id-hash`, `username-hash`, `round-robin`, `least-connections`, `random` (got "least-connection"; did you mean `least-connections`?)',
    ]);
    // HAProxy's words, from an operator moving a haproxy.cfg over.
    expect(problems(`${PREFIX}    balance: leastconn\n`)).toEqual([
      'lb.yaml:8:14 pools.brokers.balance: must be one of `client-id-hash`, `username-hash`, `round-robin`, `least-connections`, `random` (got "leastconn"; did you mean `least-connections`?)',
    ]);
    // "None" written another way, for a key whose none is `off` (YAML reads `false` as a boolean and `null` as null).
    for (const [written, got] of [['false', 'false'], ['none', '"none"'], ['No', '"No"'], ['disabled', '"disabled"'], ['null', 'null']]) {
      expect(problems(`${PREFIX}    takeover: ${written}\n`), written).toEqual([
        `lb.yaml:8:15 pools.brokers.takeover: must be one of \`client-id-and-username\`, \`client-id\`, \`username\`, \`off\` (got ${got}; did you mean \`off\`?)`,
      ]);
    }
    expect(problems(`${PREFIX}    sendProxyProtocol: false\n`)).toEqual([
      'lb.yaml:8:24 pools.brokers.sendProxyProtocol: must be one of `off`, `v1`, `v2` (got false; did you mean `off`?)',
    ]);
    // Not for a key without `off`, nor for a word that means something else.
    expect(problems(`${PREFIX}    takeover: true\n`)).toEqual([
      'lb.yaml:8:15 pools.brokers.takeover: must be one of `client-id-and-username`, `client-id`, `username`, `off` (got true)',
    ]);
    // One broker probed by two pools under one client ID (a server `b1` in both): the probes take each other over.
    // Not for two brokers that share a name only.
    const twoPools = (second: string) => `${PREFIX}  other:\n    servers: [{ name: b1, address: "${second}" }]\n`;
    expect(warnings(twoPools('10.0.0.11:1883'))).toEqual([
      `lb.yaml:8:3 pools.other: its health probe of server \`b1\` uses the client ID of pool \`brokers\`'s probe of the same address (\`mqtt-lb-health-${hostname()}-b1\`): at the broker each probe takes the other's session over; give one pool \`health.mqtt.clientId: mqtt-lb-health-{hostname}-{pool}-{server}\``,
      'lb.yaml:8:3 pools.other: no listener uses this pool',
    ]);
    expect(warnings(twoPools('10.0.0.12:1883'))).toEqual(['lb.yaml:8:3 pools.other: no listener uses this pool']);
    // As sent (a re-audit): version 3 sends a long ID as a hash of it, so a version-3 pool and a version-4 one differ.
    const long = (version: number) => `listeners:
  - { name: mqtt, bind: "0.0.0.0:1883", pool: a }
  - { name: m2, bind: "0.0.0.0:1884", pool: b }
pools:
  a:
    servers: [{ name: broker-number-one-long, address: "10.0.0.11:1883" }]
    health: { mqtt: { version: 4, clientId: "hc-{server}" } }
  b:
    servers: [{ name: broker-number-one-long, address: "10.0.0.11:1883" }]
    health: { mqtt: { version: ${version}, clientId: "hc-{server}" } }
`;
    expect(warnings(long(3))).toEqual([]);
    expect(warnings(long(4))).toHaveLength(1);
    // Trust lists open to everyone, and CIDRs with host bits set (a PROXY audit: both passed in silence).
    expect(warnings(PREFIX.replace('    pool: brokers\n', '    pool: brokers\n    acceptProxyProtocol: [0.0.0.0/0, 10.0.0.1/8]\n'))).toEqual([
      "lb.yaml:5:27 listeners[0].acceptProxyProtocol[0]: trusts every address: any client may then declare any source in a PROXY header, and perSource limits and `exempt` read the declared one; list your load balancers' addresses",
      'lb.yaml:5:38 listeners[0].acceptProxyProtocol[1]: `10.0.0.1/8` has host bits set: it means the network `10.0.0.0/8`',
    ]);
    expect(warnings(`${PREFIX}limits:\n  perSource: { maxConnections: 5, exempt: ["::/0"] }\n`)).toEqual([
      'lb.yaml:9:44 limits.perSource.exempt[0]: exempts every address from the perSource limits, which then limit nothing',
    ]);
    // IPv6 too (an IPv6 audit: `::2/64` trusted a PROXY header from `::1` in silence); a network itself, a host
    // (/128) and a zone id are no warning.
    expect(warnings(PREFIX.replace('    pool: brokers\n', '    pool: brokers\n    acceptProxyProtocol: ["::2/64", "fd00::/8", "fd00::1", "2001:DB8::1:0:0:1/80", "fe80::1%eth0/64", "fe80::%eth0/64"]\n'))).toEqual([
      'lb.yaml:5:27 listeners[0].acceptProxyProtocol[0]: `::2/64` has host bits set: it means the network `::/64`',
      'lb.yaml:5:60 listeners[0].acceptProxyProtocol[3]: `2001:DB8::1:0:0:1/80` has host bits set: it means the network `2001:db8:0:0:1::/80`',
      'lb.yaml:5:84 listeners[0].acceptProxyProtocol[4]: `fe80::1%eth0/64` has host bits set: it means the network `fe80::%eth0/64`',
    ]);
    expect(warnings(`${PREFIX}limits:\n  perSource: { maxConnections: 5, exempt: ["fd00::1/8", "10.0.0.1/8"] }\n`)).toHaveLength(2);
    // TLS towards the brokers, and TLS policy keys: not supported, said so rather than "belongs in listeners[]".
    expect(problems(`${PREFIX}    health: { check-ssl: true }\n`)).toEqual([
      "lb.yaml:8:15 pools.brokers.health.check-ssl: unknown key `check-ssl` (not supported: connections to the brokers (sessions and health probes) are plain TCP; TLS ends at the listener (`listeners[].tls`), so keep the brokers' plain port on a private network)",
    ]);
    expect(problems(PREFIX.replace('    pool: brokers\n', '    pool: brokers\n    tls: { cert: c.pem, key: k.pem, ciphers: HIGH }\n'))).toEqual([
      'lb.yaml:5:37 listeners[0].tls.ciphers: unknown key `ciphers` (not configurable: the TLS policy is fixed (TLS 1.2 and 1.3, ECDHE key exchange with AEAD ciphers; configuration.md, `tls`))',
    ]);
    expect(problems(`${PREFIX}    balance: "hash mqtt_field_value(connect,username)"\n`)[0]).toContain('did you mean `username-hash`?');
    // HAProxy algorithms with no counterpart: why, and what to use instead.
    expect(problems(`${PREFIX}    balance: first\n`)).toEqual([
      'lb.yaml:8:14 pools.brokers.balance: must be one of `client-id-hash`, `username-hash`, `round-robin`, `least-connections`, `random` (got "first"; HAProxy\'s `first` (fill servers in order) is not supported: for active-passive use `backup: true` servers, to spread use `least-connections`)',
    ]);
    expect(problems(`${PREFIX}    balance: hdr(host)\n`)).toEqual([
      'lb.yaml:8:14 pools.brokers.balance: must be one of `client-id-hash`, `username-hash`, `round-robin`, `least-connections`, `random` (got "hdr(host)"; an HTTP algorithm: an MQTT pool hashes the client ID (`client-id-hash`) or the user name (`username-hash`))',
    ]);
    expect(problems(`${PREFIX}limits:\n  timeout_client: 5m\n  timeout-connect: 3s\n`)).toEqual([
      'lb.yaml:9:3 limits.timeout_client: unknown key `timeout_client` (did you mean `limits.idleTimeout`? `limits.clientConnectTimeout` is the time for the CONNECT)',
      'lb.yaml:10:3 limits.timeout-connect: unknown key `timeout-connect` (did you mean `pools.<name>.serverConnectTimeout`? it is set per pool)',
    ]);
    // Secrets are never quoted back: the message goes to the terminal, `check`'s output and a rejected reload's log line.
    expect(problems(`${PREFIX}admin:\n  token: 12345678901234567890\n`)).toEqual([
      'lb.yaml:9:10 admin.token: must be a string (got a number; quote it)',
    ]);
    expect(problems(`${PREFIX}    health:\n      mqtt: { username: u, password: 0x1F2E3D }\n`)).toEqual([
      'lb.yaml:9:38 pools.brokers.health.mqtt.password: must be a string (got a number; quote it)',
    ]);
    expect(problems(`${PREFIX}    health:\n      mqtt: { username: u, password: [s3cret] }\n`)).toEqual([
      'lb.yaml:9:38 pools.brokers.health.mqtt.password: must be a string (got a list)',
    ]);
    // Two YAML documents: said in lb.yaml's terms, at the `---` (not the library's advice to programmers).
    expect(problems(`${PREFIX}---\nadmin:\n  bind: 127.0.0.1:9883\n`)).toEqual([
      'lb.yaml:8:1 (root): the file holds more than one YAML document (a `---` or `...` line): keep one',
    ]);
    // The admin API reads `Authorization: Bearer <token>`: a token that cannot travel there could never match.
    expect(problems(`${PREFIX}admin:\n  token: correct horse battery staple\n`)).toEqual([
      'lb.yaml:9:10 admin.token: must be a bearer token: letters, digits and - . _ ~ + / only, optionally ending in = (no spaces; `mqtt-lb keygen` prints a good one)',
    ]);
    expect(problems(`${PREFIX}admin:\n  token: tokentokentoken€€€€\n`)).toHaveLength(1);
    expect(problems(`${PREFIX}admin:\n  token: ab+/AB-._~09xyzQ==\n`)).toEqual([]);
    expect(problems(`${PREFIX}log:\n  sessions: yes\n`)).toEqual([
      'lb.yaml:9:13 log.sessions: must be true or false (got "yes": YAML 1.2 reads yes/no/on/off as strings)',
    ]);
  });

  it('missing required key: at the enclosing mapping; MQTT rules on probe credentials', () => {
    expect(problems(PREFIX.replace('    pool: brokers\n', ''))).toEqual([
      'lb.yaml:2:5 listeners[0].pool: missing required key `pool` (the name of a pool under `pools`)',
    ]);
    expect(problems(PREFIX.replace('name: b1, ', ''))).toEqual([
      'lb.yaml:7:15 pools.brokers.servers[0].name: missing required key `name` (the stable identity the hash keys on)',
    ]);
    expect(problems(`${PREFIX}    health: { mqtt: { password: x } }\n`)).toEqual([
      'lb.yaml:8:33 pools.brokers.health.mqtt.password: needs a `username` with MQTT 3.1/3.1.1 (a password without a user name is a protocol error)',
    ]);
  });

  it('durations: a bare number is an error that says so', () => {
    expect(problems(`${PREFIX}    serverConnectTimeout: 3\n`)).toEqual([
      'lb.yaml:8:27 pools.brokers.serverConnectTimeout: a bare number is not a duration: add a unit, e.g. `3ms` (what HAProxy reads in a bare number) or `3s` (as keepalived reads one)',
    ]);
    expect(problems(`${PREFIX}limits:\n  drainTimeout: 30 seconds\n`)).toEqual([
      'lb.yaml:9:17 limits.drainTimeout: unknown unit `seconds` in `30 seconds`: use ms, s, m or h',
    ]);
    expect(problems(`${PREFIX}limits:\n  clientConnectTimeout: 0s\n`)).toEqual([
      'lb.yaml:9:25 limits.clientConnectTimeout: must be more than 0s (got "0s")',
    ]);
  });

  it('ranges of numbers', () => {
    const text = `${PREFIX}    evictRate: 0
    retries: 1.5
limits:
  maxConnectBytes: 16
  acceptRate: -1
workers: 0
`;
    expect(problems(text)).toEqual([
      'lb.yaml:8:16 pools.brokers.evictRate: must be a number greater than 0 (got 0)',
      'lb.yaml:9:14 pools.brokers.retries: must be an integer between 0 and 100 (got 1.5)',
      'lb.yaml:11:20 limits.maxConnectBytes: must be an integer between 32 and 268435460 (got 16)',
      'lb.yaml:12:15 limits.acceptRate: must be a number of at least 0 (got -1)',
      'lb.yaml:13:10 workers: must be an integer of at least 1 or `auto` (got 0)',
    ]);
    expect(problems(`${PREFIX}workers: 4\n`)).toEqual([]);
  });

  it('warmUp: an integer of synthetic sessions from 0 (off) to 20000', () => {
    expect(problems(`${PREFIX}warmUp: 0\n`)).toEqual([]);
    expect(problems(`${PREFIX}warmUp: 20000\n`)).toEqual([]);
    expect(problems(`${PREFIX}warmUp: -1\n`)).toEqual(['lb.yaml:8:9 warmUp: must be an integer between 0 and 20000 (got -1)']);
    expect(problems(`${PREFIX}warmUp: 20001\n`)).toEqual(['lb.yaml:8:9 warmUp: must be an integer between 0 and 20000 (got 20001)']);
    expect(problems(`${PREFIX}warmUp: 2.5\n`)).toEqual(['lb.yaml:8:9 warmUp: must be an integer between 0 and 20000 (got 2.5)']);
    expect(problems(`${PREFIX}warmUp: true\n`)).toEqual(['lb.yaml:8:9 warmUp: must be an integer between 0 and 20000 (got true)']);
  });

  it('integers written as fractions or exponents, integers past 2^53, empty durations', () => {
    const text = `${PREFIX}    retries: 2.0
limits:
  maxConnections: 99999999999999999999999
  acceptQueue: 1e3
  clientConnectTimeout: ""
workers: 1.0
`;
    expect(problems(text)).toEqual([
      'lb.yaml:8:14 pools.brokers.retries: must be an integer between 0 and 100, written without a fraction or exponent (got 2.0)',
      'lb.yaml:10:19 limits.maxConnections: must be an integer between 1 and 9007199254740991 (got 99999999999999999999999)',
      'lb.yaml:11:16 limits.acceptQueue: must be an integer of at least 0, written without a fraction or exponent (got 1e3)',
      'lb.yaml:12:25 limits.clientConnectTimeout: an empty value is not a duration: use a number with a unit (ms, s, m, h), e.g. `2s`',
      'lb.yaml:13:10 workers: must be an integer of at least 1 or `auto` (got 1.0)',
    ]);
    expect(problems(`${PREFIX}limits:\n  acceptQueue: 0x10\n`)).toEqual([]);
  });

  it('no duration beyond Node\'s timer limit (longer ones would run after 1 ms): at most 596h', () => {
    expect(problems(`${PREFIX}limits:\n  clientConnectTimeout: 596h\n`)).toEqual([]);
    expect(problems(`${PREFIX}limits:\n  clientConnectTimeout: 597h\n`)).toEqual([
      'lb.yaml:9:25 limits.clientConnectTimeout: must be more than 0s and at most 596h (got "597h")',
    ]);
    expect(problems(`${PREFIX}    health: { interval: 1000h, timeout: 600h }\n`)).toEqual([
      'lb.yaml:8:25 pools.brokers.health.interval: must be more than 0s and at most 596h (got "1000h")',
      'lb.yaml:8:41 pools.brokers.health.timeout: must be more than 0s and at most 596h (got "600h")',
    ]);
  });

  it('pool names as written: `007` stays 007; two spellings of one name are a duplicate, not a silent drop', () => {
    const named = (pools: string, pool: string): string =>
      `listeners:\n  - name: mqtt\n    bind: 0.0.0.0:1883\n    pool: "${pool}"\npools:\n${pools}`;
    const servers = `    servers: [{ name: b1, address: "10.0.0.11:1883" }]\n`;
    const out = parseConfig(named(`  007:\n${servers}`, '007'), 'lb.yaml');
    expect(out.problems).toEqual([]);
    expect(Object.keys(out.config!.pools)).toEqual(['007']);
    expect(problems(named(`  1:\n${servers}  "1":\n${servers}`, '1'))).toEqual(['lb.yaml:8:3 pools.1: duplicate key: a key may appear only once in a mapping']);
    expect(problems(named(`  &k p:\n${servers}  *k :\n${servers}`, 'p'))).toEqual(['lb.yaml:8:3 pools.p: duplicate key: a key may appear only once in a mapping']);
  });

  it('positions after a multi-line scalar inside a syntax error are on the right line (counted from the text)', () => {
    // A plain scalar `a` continued on the next line by a wrongly indented key: reported where the scalar starts.
    const text = "listeners:\n  - name: mqtt\n    bind: 127.0.0.1:21883\n    pool: demo\npools:\n  demo:\n    servers:\n      - name: a\n         address: 127.0.0.1:21884\nadmin:\n  bind: 127.0.0.1:29883\n";
    expect(problems(text)).toEqual(['lb.yaml:8:15 pools.demo.servers[0].name: Nested mappings are not allowed in compact mappings']);
    // After a quoted value over two lines, the line of an unclosed `[` is counted from the text.
    expect(problems('listeners:\n  - name: "mq\n      tt"\n    bind: 127.0.0.1:21883\n    pool: demo\npools: [\n')).toEqual([
      'lb.yaml:6:8 pools: unclosed `[`: no matching `]` (or a line inside it is not indented more than its key)',
    ]);
  });

  it('every problem on one line: control characters in keys are escaped', () => {
    const lines = problems(`${PREFIX}limits:\n  "max\\rConnections": 5\n  "a\\nb": 1\n`);
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l).not.toMatch(/[\r\n]/);
    expect(lines[0]).toContain('limits.max\\rConnections: unknown key `max\\rConnections`');
  });

  it('IPv6 binds are compared as addresses: [::1] and [0:0::1] collide', () => {
    const text = `listeners:
  - { name: a, bind: "[::1]:21883", pool: brokers }
  - { name: b, bind: "[0:0::1]:21883", pool: brokers }
pools:
  brokers:
    servers: [{ name: b1, address: "10.0.0.11:1883" }]
`;
    expect(problems(text)).toEqual(['lb.yaml:3:22 listeners[1].bind: `[0:0::1]:21883` collides with listener `a` (line 2)']);
    // A wildcard written another way is still the wildcard.
    expect(problems(text.replace('[::1]:21883', '[::0]:21883').replace('[0:0::1]:21883', '127.0.0.1:21883'))).toEqual([
      'lb.yaml:3:22 listeners[1].bind: `127.0.0.1:21883` collides with listener `a` (line 2)',
    ]);
    // IPv4-mapped IPv6 is the IPv4 address (and ::ffff:0.0.0.0 the IPv4 wildcard).
    for (const mapped of ['[::ffff:127.0.0.1]:21883', '[::ffff:0.0.0.0]:21883']) {
      expect(problems(text.replace('[::1]:21883', mapped).replace('[0:0::1]:21883', '127.0.0.1:21883'))).toEqual([
        'lb.yaml:3:22 listeners[1].bind: `127.0.0.1:21883` collides with listener `a` (line 2)',
      ]);
    }
  });

  it('pools.<name>.serverConnackTimeout: 0s (none, the default) or a duration of at least 100ms', () => {
    const pool = (yaml: string): number | undefined => parseConfig(yaml, 'lb.yaml').config?.pools.brokers?.serverConnackTimeout;
    expect(pool(PREFIX)).toBe(0);
    expect(problems(`${PREFIX}    serverConnackTimeout: 0s\n`)).toEqual([]);
    expect(pool(`${PREFIX}    serverConnackTimeout: 100ms\n`)).toBe(100);
    expect(pool(`${PREFIX}    serverConnackTimeout: 10s\n`)).toBe(10_000);
    expect(problems(`${PREFIX}    serverConnackTimeout: 1ms\n`)).toEqual(['lb.yaml:8:27 pools.brokers.serverConnackTimeout: must be 0s (none) or at least 100ms (got "1ms")']);
    expect(problems(`${PREFIX}    serverConnackTimeout: -1s\n`)).toHaveLength(1);
    // Past the timers' limit: the message still names the whole rule, 0s and the floor included.
    expect(problems(`${PREFIX}    serverConnackTimeout: 600h\n`)).toEqual([
      'lb.yaml:8:27 pools.brokers.serverConnackTimeout: must be 0s (none) or at least 100ms and at most 596h (got "600h")',
    ]);
    expect(problems(`${PREFIX}    serverConnackTimeout: 0\n`)[0]).toContain('a bare number is not a duration');
  });

  it('limits.idleTimeout: 0s (never) or a duration of at least 1s', () => {
    expect(parseConfig(PREFIX, 'lb.yaml').config?.limits.idleTimeout).toBe(0);
    expect(problems(`${PREFIX}limits:\n  idleTimeout: 0s\n`)).toEqual([]);
    expect(parseConfig(`${PREFIX}limits:\n  idleTimeout: 1s\n`, 'lb.yaml').config?.limits.idleTimeout).toBe(1000);
    expect(parseConfig(`${PREFIX}limits:\n  idleTimeout: 15m\n`, 'lb.yaml').config?.limits.idleTimeout).toBe(900_000);
    expect(problems(`${PREFIX}limits:\n  idleTimeout: 500ms\n`)).toEqual(['lb.yaml:9:16 limits.idleTimeout: must be 0s (never) or at least 1s (got "500ms")']);
    expect(problems(`${PREFIX}limits:\n  idleTimeout: 700h\n`)).toEqual(['lb.yaml:9:16 limits.idleTimeout: must be 0s (never) or at least 1s and at most 596h (got "700h")']);
    expect(problems(`${PREFIX}limits:\n  idleTimeout: 90\n`)).toEqual([
      // Only the reading the key allows (90ms is below its 1s).
      'lb.yaml:9:16 limits.idleTimeout: a bare number is not a duration: add a unit, e.g. `90s` (as keepalived reads one)',
    ]);
  });

  it('limits.maxMemory: 0 (no ceiling) or at least 128 MiB, in bytes', () => {
    expect(problems(`${PREFIX}limits:\n  maxMemory: 0\n`)).toEqual([]);
    expect(problems(`${PREFIX}limits:\n  maxMemory: 134217728\n`)).toEqual([]);
    expect(parseConfig(`${PREFIX}limits:\n  maxMemory: 2147483648\n`, 'lb.yaml').config?.limits.maxMemory).toBe(2147483648);
    expect(parseConfig(PREFIX, 'lb.yaml').config?.limits.maxMemory).toBe(0);
    expect(problems(`${PREFIX}limits:\n  maxMemory: 1048576\n`)).toEqual([
      'lb.yaml:9:14 limits.maxMemory: must be 0 (no ceiling) or at least 134217728 bytes (128 MiB) (got 1048576)',
    ]);
    expect(problems(`${PREFIX}limits:\n  maxMemory: -1\n`)).toEqual(['lb.yaml:9:14 limits.maxMemory: must be an integer of at least 0 (got -1)']);
    expect(problems(`${PREFIX}limits:\n  maxMemory: 1GiB\n`)).toEqual(['lb.yaml:9:14 limits.maxMemory: must be an integer of at least 0 (got "1GiB")']);
  });

  it('log.bufferBytes: an integer of at least 64 KiB', () => {
    expect(parseConfig(PREFIX, 'lb.yaml').config?.log.bufferBytes).toBe(4_194_304);
    expect(parseConfig(`${PREFIX}log:\n  bufferBytes: 65536\n`, 'lb.yaml').config?.log.bufferBytes).toBe(65_536);
    expect(problems(`${PREFIX}log:\n  bufferBytes: 4096\n`)).toEqual(['lb.yaml:9:16 log.bufferBytes: must be an integer of at least 65536 (got 4096)']);
  });

  it('several problems in one file, all reported in file order', () => {
    const text = `listeners:
  - name: mqtt
    bind: 0.0.0.0
    pool: brokerz
    maxConnections: 0
  - name: mqtt
    bind: 0.0.0.0:1883
    pool: brokers
pools:
  brokers:
    servers:
      - { name: b1, address: "10.0.0.11:1883", healthUrl: "ftp://b1/" }
      - { name: b1, address: "::1:1883" }
    health:
      interval: 2
      rise: 0
admin:
  bind: 0.0.0.0:9883
`;
    expect(problems(text)).toEqual([
      'lb.yaml:3:11 listeners[0].bind: `0.0.0.0` has no port: write host:port, e.g. `0.0.0.0:1883`',
      'lb.yaml:4:11 listeners[0].pool: no pool named `brokerz` (did you mean `brokers`?)',
      'lb.yaml:5:21 listeners[0].maxConnections: must be an integer of at least 1 (got 0)',
      'lb.yaml:6:11 listeners[1].name: duplicate listener name `mqtt` (first on line 2)',
      'lb.yaml:12:59 pools.brokers.servers[0].healthUrl: `ftp://b1/` must be an http:// or https:// URL',
      'lb.yaml:13:17 pools.brokers.servers[1].name: duplicate server name `b1` in this pool (first on line 12)',
      'lb.yaml:13:30 pools.brokers.servers[1].address: `::1:1883`: an IPv6 address needs brackets, e.g. `[::1]:1883`',
      'lb.yaml:15:17 pools.brokers.health.interval: a bare number is not a duration: add a unit, e.g. `2ms` (what HAProxy reads in a bare number) or `2s` (as keepalived reads one)',
      'lb.yaml:16:13 pools.brokers.health.rise: must be an integer of at least 1 (got 0)',
      'lb.yaml:18:9 admin.bind: `0.0.0.0:9883` is not a loopback address: set `admin.token` (the admin API can drain and stop servers)',
    ]);
  });

  it('an unquoted IPv6 host without a port (a YAML list of one address) is told to be quoted, with a port', () => {
    expect(problems(`${PREFIX}admin:\n  bind: [::1]\n`)).toEqual(['lb.yaml:9:9 admin.bind: an IPv6 host:port must be quoted, with a port: `"[::1]:9883"` (unquoted, `[` starts a YAML list)']);
  });

  it('takes any spelling of a loopback address as loopback for admin.bind without a token (an IPv6 audit)', () => {
    const admin = (bind: string) => problems(`${PREFIX}admin:\n  bind: "${bind}"\n`);
    for (const bind of ['[::ffff:127.0.0.1]:9883', '[0:0:0:0:0:0:0:1]:9883', '[::1]:9883', '127.0.0.2:9883', 'localhost:9883']) expect(admin(bind), bind).toEqual([]);
    expect(admin('[::ffff:10.0.0.1]:9883')[0]).toContain('is not a loopback address: set `admin.token`');
  });

  it('a syntax error is reported once, where it is: an unclosed quote or bracket where it opens, not as the cascade after it', () => {
    const demo = readFileSync(new URL('../../lb.yaml', import.meta.url), 'utf8');
    const lineOf = (needle: string): number => demo.slice(0, demo.indexOf(needle)).split('\n').length;
    const bind = lineOf('bind: 127.0.0.1:1883');
    expect(problems(demo.replace('bind: 127.0.0.1:1883', 'bind: "127.0.0.1:1883'))).toEqual([`lb.yaml:${bind}:11 listeners[0].bind: unclosed double quote: no matching \`"\` (or the value's next line is not indented more than its key)`]);
    const level = lineOf('level: info');
    expect(problems(demo.replace('level: info', "level: 'info"))).toEqual([`lb.yaml:${level}:10 log.level: unclosed single quote: no matching \`'\` (or the value's next line is not indented more than its key)`]);
    expect(problems(demo.replace('level: info', 'level: [info'))).toEqual([`lb.yaml:${level}:10 log.level: unclosed \`[\`: no matching \`]\` (or a line inside it is not indented more than its key)`]);
    const addr = lineOf('address: 127.0.0.1:18831');
    expect(problems(demo.replace('address: 127.0.0.1:18831', 'address: { x: 127.0.0.1:18831'))).toEqual([
      `lb.yaml:${addr}:18 pools.demo.servers[0].address: unclosed \`{\`: no matching \`}\` (or a line inside it is not indented more than its key)`,
    ]);
    // A key without its colon: named by the mapping it is in, not by the broken key's words.
    expect(problems(demo.replace('level: info', 'level info'))).toEqual([`lb.yaml:${level}:3 log: a key without \`:\` after it, or a key over several lines`]);
    // A wrongly indented line: named by the mapping it belongs to and its own key, not by the key before it, and
    // said in words that tell what to change (not the parser's).
    const fall = lineOf('      fall: 3');
    expect(problems(demo.replace('      fall: 3', '     fall: 3'))).toEqual([
      `lb.yaml:${fall}:6 pools.demo.health.fall: indented by 5 spaces, unlike the keys beside it: the keys of a mapping start at the same column`,
    ]);
    const pool = lineOf('    pool: demo');
    expect(problems(demo.replace('    pool: demo', '   pool: demo'))).toEqual([
      `lb.yaml:${pool}:4 listeners[0].pool: indented by 3 spaces, which matches no key above it: indent it as the keys it belongs with`,
    ]);
    expect(problems(demo.replace('      fall: 3', '\tfall: 3'))).toEqual([`lb.yaml:${fall}:1 pools.demo.health.fall: a tab in the indentation: YAML indents with spaces only`]);
    // A list item without its `- ` is said so (the old advice, "start at the same column", led to a duplicate key).
    const b = lineOf('      - name: demo-b');
    expect(problems(demo.replace('      - name: demo-b', '      name: demo-b'))).toEqual([
      `lb.yaml:${b}:7 pools.demo.servers: at the column of the list's \`- \` but without one: each item of a list starts with \`- \``,
    ]);
    // A key the item above lacks, at the dash: most likely that item's next key (a new user's audit: told only to
    // start an item, which would have made a server without a name).
    expect(problems(PREFIX.replace('    servers: [{ name: b1, address: "10.0.0.11:1883" }]\n', '    servers:\n      - name: b1\n      address: 10.0.0.11:1883\n'))).toEqual([
      "lb.yaml:9:7 pools.brokers.servers: at the column of the list's `- ` but without one: to add `address` to the item above, indent it as its `name` (column 9); a new item starts with `- `",
    ]);
    // The same with a comment line above it (the library then points at the key, not the line), or CRLF line ends
    // and a blank line before it (the library points at the blank line).
    expect(problems(demo.replace('      fall: 3', '      # x\n     fall: 3'))).toEqual([
      `lb.yaml:${fall + 1}:6 pools.demo.health.fall: indented by 5 spaces, unlike the keys beside it: the keys of a mapping start at the same column`,
    ]);
    expect(problems(demo.replace('      fall: 3', '\n     fall: 3').replace(/\n/g, '\r\n'))).toEqual([
      `lb.yaml:${fall + 1}:6 pools.demo.health.fall: indented by 5 spaces, unlike the keys beside it: the keys of a mapping start at the same column`,
    ]);
    // An item without `- ` of an outer list, after an inner one: the outer list is named.
    expect(problems('listeners:\n  - bind: x\n    pool: demo\n    allow:\n      - 10.0.0.0/8\n  bind: y\n')).toEqual([
      "lb.yaml:6:3 listeners: at the column of the list's `- ` but without one: each item of a list starts with `- `",
    ]);
    // Indented under a top-level key written on one line: named by its own key, not by the key before it.
    expect(problems('log: {}\n  pools: {}\n')).toEqual(['lb.yaml:2:3 pools: indented by 2 spaces, unlike the keys beside it: the keys of a mapping start at the same column']);
    // Nearer the parent's column than the keys before it: named by the mapping alone, not as one of those keys.
    const limits = lineOf('limits:');
    expect(problems(demo.replace('\nlimits:', '\n   limits:'))).toEqual([
      `lb.yaml:${limits}:4 pools.demo.health: indented by 3 spaces, unlike the keys beside it: the keys of a mapping start at the same column`,
    ]);
    // One unclosed bracket in a generated file is one line, not thousands.
    expect(problems(`a: [${'x, '.repeat(3000)}\n${'b: 1\n'.repeat(50)}`)).toHaveLength(1);
  });

  it('a problem inside a value used through an alias is said at the alias, where that use is written', () => {
    const text = `listeners:
  - { name: a, bind: "0.0.0.0:1883", pool: p }
pools:
  p:
    servers:
      - &srv { name: b1, address: "10.0.0.1:1883", weight: 300 }
      - *srv
`;
    expect(problems(text)).toEqual([
      'lb.yaml:6:60 pools.p.servers[0].weight: must be an integer between 0 and 256 (got 300)',
      'lb.yaml:7:9 pools.p.servers[1].weight: must be an integer between 0 and 256 (got 300)',
      'lb.yaml:7:9 pools.p.servers[1].name: duplicate server name `b1` in this pool (first on line 6)',
    ]);
  });

  it('a merge key says it is not supported, not that it is unknown', () => {
    expect(problems(`${PREFIX}limits:\n  <<: { maxConnections: 5 }\n`)).toEqual([
      'lb.yaml:9:3 limits.<<: merge keys (`<<`) are not supported (YAML 1.2): repeat the keys, or use an alias (`*name`) for a whole value',
    ]);
  });

  it('YAML tags, the core ones too, are errors at the tag with the path of what they tag; a %YAML 1.1 directive too', () => {
    const TAG = 'a YAML tag (`!...`), which lb.yaml does not use: quote a value that starts with `!`';
    expect(problems(`${PREFIX}warmUp: !!int "5"\n`)).toEqual([`lb.yaml:8:9 warmUp: ${TAG}`]);
    expect(problems(`${PREFIX}warmUp: !foo 5\n`)).toEqual([`lb.yaml:8:9 warmUp: ${TAG}`]);
    expect(problems(`${PREFIX}log: { level: !!str info }\n`)).toEqual([`lb.yaml:8:15 log.level: ${TAG}`]);
    // A tag that ends its line tags the collection below it.
    expect(problems(PREFIX.replace('servers: [', 'servers: !!seq\n      [') + '')).toEqual([`lb.yaml:7:14 pools.brokers.servers: ${TAG}`]);
    // YAML 1.1 would make `yes` a boolean and `0x10` a number: refused, not read otherwise than documented.
    expect(problems(`%YAML 1.1\n---\n${PREFIX}log:\n  sessions: yes\n`)).toEqual([
      'lb.yaml:1:1 (root): a `%YAML 1.1` directive: lb.yaml is read as YAML 1.2 (`yes` and `no` are strings): remove the line',
    ]);
    expect(problems(`%YAML 1.2\n---\n${PREFIX}`)).toEqual([]);
  });

  it('YAML slips said in lb.yaml terms: a port left out after its colon, a value starting with @ or a backquote', () => {
    expect(problems(PREFIX.replace('bind: 0.0.0.0:1883', 'bind: 0.0.0.0:'))).toEqual([
      'lb.yaml:3:11 listeners[0].bind: `0.0.0.0:` ends with `:`, which YAML reads as a key: a host:port without its port? Write it whole (`0.0.0.0:1883`), or quote the value',
    ]);
    expect(problems(`${PREFIX}log:\n  level: @info\n`)).toEqual(['lb.yaml:9:10 log.level: a value cannot start with `@` in YAML: quote it, e.g. `"@..."`']);
    expect(problems(`${PREFIX}log:\n  level: \`info\`\n`)).toEqual(['lb.yaml:9:10 log.level: a value cannot start with a backquote in YAML: use double quotes, e.g. `"info"`']);
  });

  it('YAML syntax errors, at their position', () => {
    expect(problems(`${PREFIX}    servers: []\n`)).toEqual([
      'lb.yaml:8:5 pools.brokers.servers: duplicate key: a key may appear only once in a mapping',
    ]);
    expect(problems('listeners:\n\t- name: a\n')).toEqual(['lb.yaml:2:1 (root): a tab in the indentation: YAML indents with spaces only']);
    // Below a key that opens a mapping: taken as its child (a reload audit saw `pools.servers` here).
    expect(problems(PREFIX.replace('    servers:', '\tservers:'))).toEqual(['lb.yaml:7:1 pools.brokers.servers: a tab in the indentation: YAML indents with spaces only']);
    expect(problems('listeners: [\n')).toEqual(['lb.yaml:1:12 listeners: unclosed `[`: no matching `]` (or a line inside it is not indented more than its key)']);
    expect(problems(`${PREFIX}limits: *nothing\n`)).toEqual([
      'lb.yaml:8:9 limits: unknown alias `*nothing` (no anchor `&nothing` before it)',
    ]);
  });

  it('secrets and other programs\' files are never quoted back (check may run with more rights than its caller)', () => {
    const leaks = (text: string, ...secrets: string[]): string[] => {
      const out = [...problems(text), ...warnings(text)];
      for (const secret of secrets) for (const line of out) expect(line, secret).not.toContain(secret);
      return out;
    };
    const NOT_OURS = 'lb.yaml:1:1 (root): no key of lb.yaml (listeners, pools, limits, admin, log, workers, warmUp, failover) anywhere: is this an mqtt-lb config file?';
    // /etc/shadow: a mapping of `root:$6$...:` keys; a foreign file with a syntax error, or a tag, on its first line.
    expect(leaks('root:$6$SALT$HASH:20228:0:99999:7::\ndaemon:*:20228:0:99999:7::\n', 'SALT', 'daemon')).toEqual([
      'lb.yaml:1:1 (root): none of the top-level keys is an mqtt-lb key (listeners, pools, limits, admin, log, workers, warmUp, failover): is this an mqtt-lb config file?',
    ]);
    expect(leaks('|SECRET\n', 'SECRET')).toEqual([NOT_OURS]);
    expect(leaks('!SECRET\n', 'SECRET')).toEqual([NOT_OURS]);
    expect(leaks('a: SECRET: c\n', 'SECRET')).toEqual([NOT_OURS]);
    expect(leaks('SECRETfirst: [\n', 'SECRET')).toEqual([NOT_OURS]);
    // A bad byte: its key path would quote the line.
    expect(parseConfig('root:$6$s$h:1:0:9:7:::\nbob:$6$SECRET\ufffdh2:19000:::\n', 'lb.yaml', { notUtf8At: 33 }).problems.map(formatProblem)).toEqual([NOT_OURS]);
    // A misspelt config is still told what it meant.
    expect(problems('listener: []\npool: {}\n')[0]).toBe('lb.yaml:1:1 listener: unknown key `listener` (did you mean `listeners`?)');
    // Passwords that YAML cannot read as written (a tag, an alias, a block scalar header, a key).
    const mqtt = (password: string): string => `${PREFIX}    health:\n      mqtt:\n        username: u\n        password: ${password}\n`;
    const SECRET_NOT_YAML = 'this secret cannot be read as a YAML value (it is not shown): quote it, e.g. password: "..."';
    for (const written of ['!Passw0rd', '*Passw0rd', '|Passw0rd', '>Passw0rd', 'Passw0rd: x']) {
      const got = leaks(mqtt(written), 'Passw0rd');
      expect(got.length, written).toBe(1);
      expect(got[0], written).toMatch(/^lb\.yaml:11:\d+ pools\.brokers\.health\.mqtt(\.password)?: /);
      expect(got[0], written).toContain(SECRET_NOT_YAML);
    }
    // The example names the secret's own key (a new user's audit: `admin.token` was told `password: "..."`).
    for (const written of ['|Tok3n', '!Tok3n', '*Tok3n']) {
      const got = leaks(`${PREFIX}admin:\n  token: ${written}\n`, 'Tok3n');
      expect(got.length, written).toBe(1);
      expect(got[0], written).toContain('quote it, e.g. token: "..."');
    }
    // A password YAML reads as a key, on the line after its key, or in a flow mapping: the key path stops at the secret.
    const nextLine = `${PREFIX}    health:\n      mqtt:\n        username: u\n        password:\n          SECRETc: x: y\n`;
    expect(leaks(nextLine, 'SECRET')).toEqual(['lb.yaml:12:20 pools.brokers.health.mqtt.password: Nested mappings are not allowed in compact mappings']);
    expect(leaks(`${PREFIX}admin: {bind: "127.0.0.1:9883",\n  token:\n   SECRETtok: x}\n`, 'SECRET')[0]).toMatch(/^lb\.yaml:\d+:\d+ admin\.token: /);
    expect(parseConfig(`${PREFIX}    health:\n      mqtt: { username: u, password: SECRETnu: x\ufffd }\n`, 'lb.yaml', { notUtf8At: PREFIX.length + 56 }).problems.map(formatProblem)[0]).toMatch(
      /^lb\.yaml:9:\d+ pools\.brokers\.health\.mqtt\.password: not UTF-8/,
    );
    // A key anchored elsewhere and used as the password.
    expect(leaks(`limits:\n  &s SECRETkey: 1\n${PREFIX}    health:\n      mqtt: { username: u, password: *s }\n`, 'SECRET')[0]).toBe(
      'lb.yaml:2:6 limits: a key that is also the value of a secret (`admin.token` or a password, by an anchor and an alias): not shown, and not allowed',
    );
    // A tag on another value is an error too (YAML would read it as empty), and does not quote it either.
    expect(leaks(`${PREFIX}log:\n  level: !info\n`)).toEqual(['lb.yaml:9:10 log.level: a YAML tag (`!...`), which lb.yaml does not use: quote a value that starts with `!`']);
    // A secret's value used for another key by an anchor and an alias.
    const aliased = `${PREFIX}admin:\n  token: &t SECRETTOKEN1234567890\n  bind: *t\n`;
    expect(leaks(aliased, 'SECRETTOKEN')).toEqual(['lb.yaml:10:9 admin.bind: is the value of a secret (`admin.token` or a password, by an anchor and an alias): a secret cannot be used for another key']);
    // Said once: not followed by what the refused value, read as nothing, would make of the key or of others.
    expect(leaks(`${PREFIX}    health:\n      mqtt: { password: &p SECRETpw, username: *p }\n`, 'SECRETpw')).toEqual([
      'lb.yaml:9:48 pools.brokers.health.mqtt.username: is the value of a secret (`admin.token` or a password, by an anchor and an alias): a secret cannot be used for another key',
    ]);
  });

  it('structure: empty file, wrong types, empty lists', () => {
    expect(problems('')).toEqual(['lb.yaml:1:1 (root): the file is empty: `listeners` and `pools` are required']);
    expect(problems('- a\n')).toEqual(['lb.yaml:1:1 (root): must be a mapping (got a list: is this an mqtt-lb config file?)']);
    // A file that is no config at all (a key given to --config): its text is not printed (`check` may run under sudo).
    expect(problems('3J6wzdBYmPvBQG81RQLsJA5qUDBEFrNNA6B7a+WDcb8=\n')).toEqual(['lb.yaml:1:1 (root): must be a mapping (got a string: is this an mqtt-lb config file?)']);
    expect(problems('-----BEGIN PRIVATE KEY-----\nMIIEvAIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n')).toEqual([
      'lb.yaml:1:1 (root): must be a mapping (got a string: is this an mqtt-lb config file?)',
    ]);
    expect(problems('listeners: []\npools: {}\n')).toEqual([
      'lb.yaml:1:12 listeners: must list at least one listener',
      'lb.yaml:2:8 pools: must define at least one pool',
    ]);
    expect(problems(PREFIX.replace('servers: [{ name: b1, address: "10.0.0.11:1883" }]', 'servers: []'))).toEqual([
      'lb.yaml:7:14 pools.brokers.servers: a pool needs at least one server',
    ]);
    expect(problems(PREFIX.replace('  brokers:\n    servers', '  brokers:\n  other:\n    servers'))).toEqual([
      'lb.yaml:6:3 pools.brokers: a pool needs at least `servers`',
    ]);
    expect(problems(`${PREFIX}limits: 5\n`)).toEqual(['lb.yaml:8:9 limits: must be a mapping (got 5)']);
    // HAProxy's `log` line and a level written alone: said for what they are.
    expect(problems(`${PREFIX}log: "127.0.0.1:514 local0"\n`)).toEqual([
      'lb.yaml:8:6 log: must be a mapping (`level`, `sessions`, `bufferBytes`), got "127.0.0.1:514 local0": mqtt-lb writes JSON lines to stdout, not to syslog; under systemd the journal takes them (docs/operations.md, Logs)',
    ]);
    expect(problems(`${PREFIX}log: debug\n`)).toEqual(['lb.yaml:8:6 log: must be a mapping: did you mean `log: { level: debug }`?']);
    expect(problems(`${PREFIX}    health: { type: http, http: { path: status } }\n`)).toEqual([
      'lb.yaml:8:41 pools.brokers.health.http.path: "status" is not allowed here: an HTTP path starts with `/` and has no spaces',
    ]);
  });

  it('tls: required files and consistent client-certificate options', () => {
    const text = PREFIX.replace('    pool: brokers\n', '    pool: brokers\n    tls: { key: k.pem, certAsUsername: true }\n');
    expect(problems(text)).toEqual([
      'lb.yaml:5:10 listeners[0].tls.cert: missing required key `cert` (the PEM certificate chain file)',
      'lb.yaml:5:40 listeners[0].tls.certAsUsername: needs `requestCert: true`: without it there is no verified client certificate to read',
    ]);
  });

  it('tls: a `ca` without `requestCert: true` is said to check nothing (it would look like mutual TLS)', () => {
    const text = PREFIX.replace('    pool: brokers\n', '    pool: brokers\n    tls: { cert: c.pem, key: k.pem, ca: ca.pem }\n');
    expect(problems(text)).toEqual([]);
    expect(warnings(text)).toEqual(['lb.yaml:5:41 listeners[0].tls.ca: used only with `requestCert: true` or `optional`: without it no client certificate is asked for or checked']);
    expect(warnings(text.replace('ca: ca.pem }', 'ca: ca.pem, requestCert: true }'))).toEqual([]);
    expect(warnings(text.replace('ca: ca.pem }', 'ca: ca.pem, requestCert: optional }'))).toEqual([]);
  });

  it('tls.requestCert: true, false or optional; certAsUsername needs true', () => {
    const tls = (inner: string) => PREFIX.replace('    pool: brokers\n', `    pool: brokers\n    tls: { cert: c.pem, key: k.pem, ca: ca.pem, ${inner} }\n`);
    expect(problems(tls('requestCert: optional'))).toEqual([]);
    expect(problems(tls('requestCert: maybe'))).toEqual(['lb.yaml:5:62 listeners[0].tls.requestCert: must be true, false or `optional` (got "maybe")']);
    expect(problems(tls('requestCert: optional, certAsUsername: true'))).toEqual([
      'lb.yaml:5:88 listeners[0].tls.certAsUsername: needs `requestCert: true`: with `optional` a client without a certificate would send the broker a username of its own choosing',
    ]);
  });

  it('binds that collide', () => {
    const text = `${PREFIX.replace('pools:', '  - { name: other, bind: "127.0.0.1:1883", pool: brokers }\npools:')}admin:
  bind: 127.0.0.1:1883
  token: a-long-enough-admin-token
`;
    expect(problems(text)).toEqual([
      'lb.yaml:5:26 listeners[1].bind: `127.0.0.1:1883` collides with listener `mqtt` (line 3)',
      'lb.yaml:10:9 admin.bind: `127.0.0.1:1883` collides with listener `mqtt` (line 3)',
    ]);
  });

  it('a listener on the default admin port, PROXY sources, instances without a router id', () => {
    expect(problems(PREFIX.replace('0.0.0.0:1883', '0.0.0.0:9883'))).toEqual([
      'lb.yaml:3:11 listeners[0].bind: `0.0.0.0:9883` collides with the default `admin.bind`',
    ]);
    expect(problems(PREFIX.replace('    pool: brokers\n', '    pool: brokers\n    acceptProxyProtocol: [10.0.0.0/8, 10.0.0.0/40, nlb]\n'))).toEqual([
      'lb.yaml:5:39 listeners[0].acceptProxyProtocol[1]: prefix `/40` must be between 0 and 32',
      'lb.yaml:5:52 listeners[0].acceptProxyProtocol[2]: `nlb` is not an IP address or CIDR (e.g. `10.0.0.0/8`)',
    ]);
    expect(problems(`${PREFIX}limits:\n  perSource: { maxConnections: 5, exempt: [nat.example] }\n`)).toEqual([
      'lb.yaml:9:44 limits.perSource.exempt[0]: `nat.example` is not an IP address or CIDR (e.g. `10.0.0.0/8`)',
    ]);
    const text = `${PREFIX}failover:
  interface: eth0
  authKeyFile: /k
  peers: [10.0.0.2]
  instances:
    - { priority: 10, vips: [192.0.2.10/24] }
`;
    expect(problems(text)).toEqual([
      'lb.yaml:13:7 failover.instances[0].routerId: missing required key `routerId` (1 to 255, the same on both hosts)',
    ]);
  });

  it('failover: strict values and the rules between keys', () => {
    const text = `${PREFIX}failover:
  interface: -batch
  peers: [10.0.0.2, "fe80::1", 10.0.0.2]
  advertInterval: 15ms
  routerId: 256
  vips: [2001:db8::10/64, 192.0.2.10/33]
  garp: { cont: 3 }
`;
    expect(problems(text)).toEqual([
      'lb.yaml:9:3 failover.authKeyFile: missing required key `authKeyFile` (the key file written by `mqtt-lb keygen`)',
      'lb.yaml:9:14 failover.interface: "-batch" is not allowed here: an interface name is 1 to 15 letters, digits, `_`, `.` or `-`, does not start with `-` or `.` (no alias labels such as `eth0:1`) and is not `help`',
      'lb.yaml:10:21 failover.peers[1]: IPv6 peers are not supported yet',
      'lb.yaml:10:32 failover.peers[2]: duplicate peer `10.0.0.2`',
      'lb.yaml:11:19 failover.advertInterval: must be a multiple of 10ms (got "15ms")',
      'lb.yaml:12:13 failover.routerId: must be an integer between 1 and 255 (got 256)',
      'lb.yaml:13:10 failover.vips[0]: IPv6 VIPs are not supported yet',
      'lb.yaml:13:27 failover.vips[1]: `192.0.2.10/33` is not an IPv4 address with a prefix (e.g. `192.0.2.10/24`)',
      'lb.yaml:14:11 failover.garp.cont: unknown key `cont` (did you mean `count`?)',
    ]);
  });

  it('a bare number for a duration: the unit offered is one the key allows, or the rule when neither is', () => {
    const interval = (v: string) => problems(`${PREFIX}failover:\n  interface: eth0\n  authKeyFile: /k\n  peers: [10.0.0.2]\n  routerId: 1\n  vips: [192.0.2.10/24]\n  advertInterval: ${v}\n`).filter((p) => p.includes('advertInterval'));
    // keepalived's seconds first; both fit.
    expect(interval('20')).toEqual(['lb.yaml:14:19 failover.advertInterval: a bare number is not a duration: add a unit, e.g. `20s` (as keepalived reads one) or `20ms` (what HAProxy reads in a bare number)']);
    // 1000s is past the wire format's 655.35 s: milliseconds only.
    expect(interval('1000')).toEqual(['lb.yaml:14:19 failover.advertInterval: a bare number is not a duration: add a unit, e.g. `1000ms` (what HAProxy reads in a bare number)']);
    // 5ms is no multiple of 10ms, 5 s is.
    expect(interval('5')).toEqual(['lb.yaml:14:19 failover.advertInterval: a bare number is not a duration: add a unit, e.g. `5s` (as keepalived reads one)']);
    // Neither 0.005s (5ms) nor 0.005ms: the rule.
    expect(interval('0.005')).toEqual(['lb.yaml:14:19 failover.advertInterval: a bare number is not a duration: add a unit (ms, s, m, h); it must be at least 10ms and at most 655350ms']);
    // Readings as written with a unit (1.005 s is 1005 ms), and a number too large for either (a re-audit).
    expect(problems(`${PREFIX}limits:\n  drainTimeout: 1.005\n`)).toEqual(['lb.yaml:9:17 limits.drainTimeout: a bare number is not a duration: add a unit, e.g. `1.005s` (as keepalived reads one)']);
    expect(problems(`${PREFIX}limits:\n  idleTimeout: 1e30\n`)).toEqual(['lb.yaml:9:16 limits.idleTimeout: a bare number is not a duration: add a unit (ms, s, m, h); it must be 0s (never) or at least 1s and at most 596h']);
    // `0` where 0s means something: both readings are 0.
    expect(problems(`${PREFIX}limits:\n  idleTimeout: 0\n`)).toEqual([
      'lb.yaml:9:16 limits.idleTimeout: a bare number is not a duration: add a unit, e.g. `0ms` (what HAProxy reads in a bare number) or `0s` (as keepalived reads one)',
    ]);
  });

  it('failover: `help` is no interface, and a VIP is a host address (reference catalogue #84)', () => {
    const text = `${PREFIX}failover:
  interface: help
  authKeyFile: /k
  peers: [10.0.0.2]
  vips: [10.0.0.0/24, 10.0.0.255/24, 10.0.0.7/24, 10.0.1.0/31, 10.0.2.0/32]
`;
    expect(problems(text)).toEqual([
      'lb.yaml:9:14 failover.interface: "help" is not allowed here: an interface name is 1 to 15 letters, digits, `_`, `.` or `-`, does not start with `-` or `.` (no alias labels such as `eth0:1`) and is not `help`',
      'lb.yaml:12:10 failover.vips[0]: `10.0.0.0/24` is the network address of its /24: a VIP is a host address (e.g. `192.0.2.10/24`)',
      'lb.yaml:12:23 failover.vips[1]: `10.0.0.255/24` is the broadcast address of its /24: a VIP is a host address (e.g. `192.0.2.10/24`)',
    ]);
  });

  it('failover: unicast needs peers, multicast needs a multicast group, VIPs are required', () => {
    expect(problems(`${PREFIX}failover:\n  interface: eth0\n  authKeyFile: /k\n`)).toEqual([
      'lb.yaml:9:3 failover.peers: missing required key `peers` (transport unicast sends the adverts to them)',
      'lb.yaml:9:3 failover.vips: missing required key `vips` (or list the VIP groups under `instances`)',
    ]);
    expect(
      problems(`${PREFIX}failover:\n  interface: eth0\n  authKeyFile: /k\n  transport: multicast\n  group: 10.0.0.1\n  vips: [192.0.2.1/24]\n`),
    ).toEqual(['lb.yaml:12:10 failover.group: `10.0.0.1` is not an IPv4 multicast address (224.0.0.0 to 239.255.255.255)']);
    expect(
      problems(`${PREFIX}failover:\n  interface: eth0\n  authKeyFile: /k\n  peers: []\n  vips: [192.0.2.1/24]\n`),
    ).toEqual(['lb.yaml:11:10 failover.peers: must list at least one peer address with transport unicast']);
  });

  it('failover: shorthand and instances are exclusive; router ids are unique', () => {
    const text = `${PREFIX}failover:
  interface: eth0
  authKeyFile: /k
  peers: [10.0.0.2]
  priority: 200
  instances:
    - { routerId: 51, vips: [192.0.2.10/24] }
    - { routerId: 51, priority: 255, vips: [192.0.2.10/24] }
`;
    expect(problems(text)).toEqual([
      'lb.yaml:14:5 failover.instances: use either `instances` or the shorthand `priority`, not both',
      'lb.yaml:15:19 failover.instances[1].routerId: duplicate routerId 51 (first on line 14)',
      'lb.yaml:15:33 failover.instances[1].priority: must be an integer between 1 and 254 (got 255)',
      'lb.yaml:15:45 failover.instances[1].vips[0]: duplicate VIP `192.0.2.10` (first on line 14)',
    ]);
  });

  it('failover: a VIP that is a peer’s address is an error (this host would take the peer’s address when master)', () => {
    expect(problems(`${PREFIX}failover:\n  interface: eth0\n  authKeyFile: /k\n  peers: [10.0.0.2]\n  vips: [192.0.2.10/24, 10.0.0.2/24]\n`)).toEqual([
      'lb.yaml:12:25 failover.vips[1]: `10.0.0.2` is the address of a peer (failover.peers): a VIP must be an address no host owns',
    ]);
  });

  it('a first config written by an HAProxy user: each habit gets the lb.yaml way of writing it', () => {
    const text = `listeners:
  - { name: a, bind: "1883", pool: p }
  - { name: b, bind: "*:1884", pool: p }
frontend: mqtt
backend: brokers
pools:
  p:
    timeout: { connect: 5s }
    mode: tcp
    servers:
      - { name: s, address: "127.0.0.1:1883", send-proxy-v2: true }
`;
    expect(problems(text)).toEqual([
      'lb.yaml:2:22 listeners[0].bind: `1883` has no host: write host:port, e.g. `0.0.0.0:1883` (every IPv4 address) or `127.0.0.1:1883`',
      'lb.yaml:3:22 listeners[1].bind: `*` (HAProxy\'s "every address") is written `0.0.0.0:1884` here (`[::]:1884` for IPv6 too)',
      'lb.yaml:4:1 frontend: unknown key `frontend` (an HAProxy `frontend` is an entry of `listeners` (`name`, `bind`, `pool`); docs/migration.md maps the rest)',
      'lb.yaml:5:1 backend: unknown key `backend` (an HAProxy `backend` is a pool under `pools` (`balance`, `servers`, `health`); docs/migration.md maps the rest)',
      "lb.yaml:8:5 pools.p.timeout: unknown key `timeout` (HAProxy's `timeout connect` is `pools.p.serverConnectTimeout`, the check's `timeout check` is `pools.p.health.timeout`, the wait for a server's CONNACK `pools.p.serverConnackTimeout`; the client and idle timeouts are in `limits`)",
      'lb.yaml:9:5 pools.p.mode: unknown key `mode` (no mode: mqtt-lb always proxies TCP and reads the MQTT CONNECT itself)',
      'lb.yaml:11:47 pools.p.servers[0].send-proxy-v2: unknown key `send-proxy-v2` (the PROXY header is set per pool: `pools.p.sendProxyProtocol: v2`)',
    ]);
  });

  it('a bare port, which YAML reads as a number, is said to lack its host at once (not "quote it", then that)', () => {
    expect(problems(PREFIX.replace('bind: 0.0.0.0:1883', 'bind: 1883'))).toEqual([
      'lb.yaml:3:11 listeners[0].bind: `1883` has no host: write host:port, e.g. `0.0.0.0:1883` (every IPv4 address) or `127.0.0.1:1883`',
    ]);
  });

  it('more HAProxy words, where they are written: each says where its lb.yaml key is (docs/migration.md)', () => {
    const text = `listeners:
  - { name: a, bind: "0.0.0.0:1883", pool: p, crt: /x.pem }
pools:
  p:
    inter: 2s
    maxqueue: 10
    timeout connect: 5s
    sendProxyProtocol: send-proxy-v2
    health: { type: http-check }
    servers:
      - { name: s, address: "127.0.0.1:1883", on-marked-down: shutdown-sessions, agent-check: true }
limits:
  timeout client: 1m
logging: { level: info }
`;
    expect(problems(text)).toEqual([
      "lb.yaml:2:47 listeners[0].crt: unknown key `crt` (did you mean `tls.cert`? with `tls.key` (HAProxy's combined PEM, certificate and key in one file, may be named by both))",
      'lb.yaml:5:5 pools.p.inter: unknown key `inter` (did you mean `pools.p.health.interval`?)',
      'lb.yaml:6:5 pools.p.maxqueue: unknown key `maxqueue` (there is no queue: a client whose server is at its `maxConnections` is refused with CONNACK Server busy)',
      'lb.yaml:7:5 pools.p.timeout connect: unknown key `timeout connect` (did you mean `pools.p.serverConnectTimeout`?)',
      'lb.yaml:8:24 pools.p.sendProxyProtocol: must be one of `off`, `v1`, `v2` (got "send-proxy-v2"; did you mean `v2`?)',
      'lb.yaml:9:21 pools.p.health.type: must be one of `tcp`, `mqtt`, `http`, `none` (got "http-check"; did you mean `http`?)',
      'lb.yaml:11:47 pools.p.servers[0].on-marked-down: unknown key `on-marked-down` (set per pool: `pools.p.onServerDown: shutdown`)',
      "lb.yaml:11:82 pools.p.servers[0].agent-check: unknown key `agent-check` (not supported; the nearest is `pools.p.health.type: http` with this server's `healthUrl`)",
      'lb.yaml:13:3 limits.timeout client: unknown key `timeout client` (did you mean `limits.idleTimeout`? `limits.clientConnectTimeout` is the time for the CONNECT)',
      'lb.yaml:14:1 logging: unknown key `logging` (did you mean `log`?)',
    ]);
  });

  it('an HAProxy migration audit\'s slips: each names the key to write, not a list of allowed keys', () => {
    const text = `listeners:
  - name: a
    bind: "127.0.0.1:1883 ssl crt /x.pem"
    pool: p
    timeout client: 1m
    default_backend: p
pools:
  p:
    balance: "hash var(txn.cid)"
    hash-type: consistent
    maxConnections: 5
    servers:
      - { name: s, address: "127.0.0.1:1883", port: 8080 }
    health: { timeout check: 1s }
limits:
  timeout queue: 5s
admin:
  stats uri: /stats
log:
  level: notice
  format: json
stats: enable
option: tcplog
`;
    expect(problems(text)).toEqual([
      "lb.yaml:3:11 listeners[0].bind: `127.0.0.1:1883 ssl crt /x.pem`: write host:port alone, `127.0.0.1:1883`: TLS is the listener's `tls` (`cert`, `key`)",
      'lb.yaml:5:5 listeners[0].timeout client: unknown key `timeout client` (did you mean `limits.idleTimeout`? `limits.clientConnectTimeout` is the time for the CONNECT)',
      'lb.yaml:6:5 listeners[0].default_backend: unknown key `default_backend` (did you mean `pool`? the name of the pool (under `pools`) this listener sends its clients to)',
      'lb.yaml:9:14 pools.p.balance: must be one of `client-id-hash`, `username-hash`, `round-robin`, `least-connections`, `random` (got "hash var(txn.cid)"; did you mean `client-id-hash`?)',
      'lb.yaml:10:5 pools.p.hash-type: unknown key `hash-type` (not needed: `pools.p.balance: client-id-hash` is consistent (rendezvous) hashing already: a server added or removed moves only its own share of clients)',
      'lb.yaml:11:5 pools.p.maxConnections: unknown key `maxConnections` (there is no per-pool cap: `maxConnections` on each server, `listeners[].maxConnections` or `limits.maxConnections`)',
      'lb.yaml:13:47 pools.p.servers[0].port: unknown key `port` (the port is part of `address`; a health check on another port is `pools.p.health.port`)',
      'lb.yaml:14:15 pools.p.health.timeout check: unknown key `timeout check` (did you mean `timeout`? one bound for the whole probe: connect and answer)',
      'lb.yaml:16:3 limits.timeout queue: unknown key `timeout queue` (no queue timeout: clients wait for an accept slot (`limits.acceptQueue` is how many may wait, `limits.acceptRate` how fast they are taken) up to `limits.clientConnectTimeout`)',
      'lb.yaml:18:3 admin.stats uri: unknown key `stats uri` (the status page is `/` on `admin.bind`, with `/metrics` and `/api/status` beside it; `admin.token` guards changes)',
      'lb.yaml:20:10 log.level: must be one of `fatal`, `error`, `warn`, `info`, `debug`, `trace`, `silent` (got "notice"; did you mean `info`?)',
      "lb.yaml:21:3 log.format: unknown key `format` (no format to choose: every line is JSON (pino); `log.sessions: true` adds one line per session, as HAProxy's `option tcplog`)",
      'lb.yaml:22:1 stats: unknown key `stats` (the status page is `/` on `admin.bind`, with `/metrics` and `/api/status` beside it; `admin.token` guards changes)',
      "lb.yaml:23:1 option: unknown key `option` (HAProxy options are keys here: `option redispatch` is a pool's `retries`, check options are under its `health`, `option tcplog` is `log.sessions: true`)",
    ]);
  });

  it('more HAProxy words from a re-audit: mode and option on a listener, fullconn, resolvers, init-addr, log target', () => {
    const text = `listeners:
  - { name: a, bind: "127.0.0.1:1883", pool: p, mode: tcp, option: tcplog }
pools:
  p:
    fullconn: 1000
    resolvers: dns
    servers:
      - { name: s, address: "127.0.0.1:1883", resolvers: dns, init-addr: none }
log:
  target: syslog
`;
    expect(problems(text)).toEqual([
      'lb.yaml:2:49 listeners[0].mode: unknown key `mode` (no mode: mqtt-lb always proxies TCP and reads the MQTT CONNECT itself)',
      'lb.yaml:2:60 listeners[0].option: unknown key `option` (HAProxy options are keys here: `option tcplog` is `log.sessions: true`; the rest are under the pool (`retries`, `health`) and `limits`)',
      'lb.yaml:5:5 pools.p.fullconn: unknown key `fullconn` (not needed: caps do not scale with load here; `maxConnections` on each server)',
      'lb.yaml:6:5 pools.p.resolvers: unknown key `resolvers` (not needed: server names are resolved with the system resolver when dialled, an answer kept up to 30 s)',
      'lb.yaml:8:47 pools.p.servers[0].resolvers: unknown key `resolvers` (not needed: server names are resolved with the system resolver when dialled, an answer kept up to 30 s)',
      'lb.yaml:8:63 pools.p.servers[0].init-addr: unknown key `init-addr` (not needed: a server whose name does not resolve at start is down until it does; the start goes on)',
      'lb.yaml:10:3 log.target: unknown key `target` (no target: lines go to stdout (the journal under systemd); send them on from there)',
    ]);
  });

  it('HAProxy sections and words at the top level: mode, fullconn, resolvers', () => {
    expect(problems(`${PREFIX}mode: tcp\nfullconn: 100\nresolvers: { dns: {} }\n`)).toEqual([
      'lb.yaml:8:1 mode: unknown key `mode` (no mode: mqtt-lb always proxies TCP and reads the MQTT CONNECT itself)',
      'lb.yaml:9:1 fullconn: unknown key `fullconn` (not needed: caps do not scale with load here; `maxConnections` on each server, `limits.maxConnections` in all)',
      'lb.yaml:10:1 resolvers: unknown key `resolvers` (not needed: server names are resolved with the system resolver when dialled, an answer kept up to 30 s)',
    ]);
  });

  it('a pool key indented as a pool name (`servers:` one level too shallow) says where it belongs', () => {
    const text = `listeners:\n  - { name: a, bind: "0.0.0.0:1883", pool: brokers }\npools:\n  brokers:\n  servers:\n    - { name: b1, address: "10.0.0.1:1883" }\n`;
    expect(problems(text)).toEqual([
      'lb.yaml:4:3 pools.brokers: a pool needs at least `servers`',
      "lb.yaml:5:3 pools.servers: `servers` is a key of a pool, here at the level of the pool names: indent it under its pool's name (`pools.<name>.servers`)",
    ]);
  });

  it('YAML slips: a key without a space after its colon, a list item indented under the key above it', () => {
    expect(problems(`${PREFIX}log:\n  sessions:true\n  level: info\n`)).toEqual([
      'lb.yaml:9:3 log.sessions: `sessions:true`: a key needs a space after its `:` (`sessions: true`)',
    ]);
    const nested = `${PREFIX.replace('    servers: [{ name: b1, address: "10.0.0.11:1883" }]\n', '')}    servers:
      - name: b1
        address: 10.0.0.11:1883
        - name: b2
          address: 10.0.0.12:1883
`;
    expect(problems(nested)).toEqual([
      'lb.yaml:10:9 pools.brokers.servers[0].address: a list item (`- `) indented deeper than the items of its list: start it at the column of their `- `',
    ]);
  });

  it('pool names, listener names and references', () => {
    const text = `listeners:
  - { name: "my listener", bind: "0.0.0.0:1883", pool: "a/b" }
pools:
  a/b:
    servers: [{ name: s, address: "h:1" }]
`;
    expect(problems(text)).toEqual([
      'lb.yaml:2:13 listeners[0].name: "my listener" is not allowed here: letters, digits, `_`, `.`, `-`, starting with a letter or digit, at most 64 characters',
      'lb.yaml:4:3 pools.a/b: pool name `a/b` is not allowed: letters, digits, `_`, `.`, `-`, starting with a letter or digit, at most 64 characters',
    ]);
  });
});

describe('config warnings', () => {
  it('are formatted like problems and do not invalidate the config', () => {
    const text = `${PREFIX}    balance: round-robin
    fallback: random
  spare:
    servers: [{ name: s1, address: "10.0.0.12:1883", healthUrl: "http://10.0.0.12/health" }]
admin:
  token: short
`;
    const out = parseConfig(text, 'lb.yaml');
    expect(out.problems).toEqual([]);
    expect(out.config).not.toBeNull();
    expect(out.warnings).toEqual([
      'lb.yaml:9:15 pools.brokers.fallback: ignored: `balance: round-robin` does not hash, so there is no empty key to fall back from',
      'lb.yaml:10:3 pools.spare: no listener uses this pool',
      'lb.yaml:11:65 pools.spare.servers[0].healthUrl: ignored: this pool\'s health.type is `mqtt`, not `http`',
      'lb.yaml:13:10 admin.token: shorter than 16 characters: easy to guess (`mqtt-lb keygen` prints a good one)',
    ]);
  });

  it('warns when limits.maxPendingConnectBytes is below its floor, saying the value used (0, no bound, is no warning)', () => {
    expect(warnings(`${PREFIX}limits:\n  maxPendingConnectBytes: 1000\n`)).toEqual([
      'lb.yaml:9:27 limits.maxPendingConnectBytes: below its floor: 1310720 is used, 4 × (maxConnectBytes + 64 KiB), so that a CONNECT of maxConnectBytes always fits when it comes alone',
    ]);
    expect(warnings(`${PREFIX}limits:\n  maxConnectBytes: 32\n  maxPendingConnectBytes: 262272\n`)).toEqual([]);
    expect(warnings(`${PREFIX}limits:\n  maxPendingConnectBytes: 0\n`)).toEqual([]);
  });

  it('warns when every server has weight 0, and when timeout is not below interval', () => {
    expect(warnings(PREFIX.replace('"10.0.0.11:1883" }', '"10.0.0.11:1883", weight: 0 }'))).toEqual([
      'lb.yaml:7:14 pools.brokers.servers: every server has weight 0: this pool can never place a session',
    ]);
    expect(warnings(`${PREFIX}    health: { interval: 500ms }\n`)).toEqual([
      'lb.yaml:8:25 pools.brokers.health.interval: timeout 1s is not shorter than interval 500ms: a server that hangs is probed back to back',
    ]);
  });

  it('health.fastInterval / downInterval (HAProxy fastinter / downinter): a duration or null; a warning when not longer than the timeout', () => {
    expect(problems(`${PREFIX}    health: { fastInterval: 500ms, downInterval: 10s, timeout: 200ms }\n`)).toEqual([]);
    expect(warnings(`${PREFIX}    health: { fastInterval: 500ms, downInterval: 10s, timeout: 200ms }\n`)).toEqual([]);
    expect(problems(`${PREFIX}    health: { fastInterval: null, downInterval: null }\n`)).toEqual([]);
    expect(problems(`${PREFIX}    health: { fastInterval: 0s }\n`)).toEqual([expect.stringMatching(/^lb\.yaml:8:29 pools\.brokers\.health\.fastInterval: /)]);
    expect(problems(`${PREFIX}    health: { downInterval: soon }\n`)).toEqual([expect.stringMatching(/^lb\.yaml:8:29 pools\.brokers\.health\.downInterval: /)]);
    expect(warnings(`${PREFIX}    health: { fastInterval: 1s }\n`)).toEqual([
      'lb.yaml:8:29 pools.brokers.health.fastInterval: timeout 1s is not shorter than fastInterval 1s: a server in transition that hangs is probed back to back',
    ]);
    expect(warnings(`${PREFIX}    health: { downInterval: 300ms }\n`)).toEqual([
      'lb.yaml:8:29 pools.brokers.health.downInterval: timeout 1s is not shorter than downInterval 300ms: a down server that hangs is probed back to back',
    ]);
    // HAProxy's names point to ours.
    expect(problems(`${PREFIX}    health: { fastinter: 1s }\n`)).toEqual([
      'lb.yaml:8:15 pools.brokers.health.fastinter: unknown key `fastinter` (did you mean `fastInterval`?)',
    ]);
    expect(problems(`${PREFIX}    health: { downinter: 1s }\n`)).toEqual([
      'lb.yaml:8:15 pools.brokers.health.downinter: unknown key `downinter` (did you mean `downInterval`?)',
    ]);
  });

  it('health.port: a port or null for the tcp and mqtt probes; an error with http, a warning with none', () => {
    expect(problems(`${PREFIX}    health: { type: tcp, port: 1884 }\n`)).toEqual([]);
    expect(problems(`${PREFIX}    health: { port: null }\n`)).toEqual([]);
    expect(problems(`${PREFIX}    health: { port: 0 }\n`)).toEqual(['lb.yaml:8:21 pools.brokers.health.port: must be an integer between 1 and 65535 (got 0)']);
    expect(problems(`${PREFIX}    health: { port: "1884" }\n`)).toEqual([expect.stringMatching(/^lb\.yaml:8:21 pools\.brokers\.health\.port: /)]);
    expect(problems(`${PREFIX}    health: { type: http, port: 1884 }\n`)).toEqual([
      "lb.yaml:8:33 pools.brokers.health.port: applies to the tcp and mqtt probes; the http probe's port is `health.http.port`",
    ]);
    expect(warnings(`${PREFIX}    health: { type: none, port: 1884 }\n`)).toEqual([
      'lb.yaml:8:33 pools.brokers.health.port: is ignored with `type: none` (nothing is probed)',
    ]);
  });

  it('warns when every server of a pool would be probed with one fixed MQTT client ID', () => {
    const two = PREFIX.replace('}]', '}, { name: b2, address: "10.0.0.12:1883" }]');
    expect(warnings(`${two}    health: { mqtt: { clientId: probe } }\n`)).toEqual([
      'lb.yaml:8:33 pools.brokers.health.mqtt.clientId: every server of this pool is probed with this one client ID, and a clustered broker sees one session that each probe takes over: add `{server}` (and `{hostname}` when several LB hosts probe)',
    ]);
    expect(warnings(`${two}    health: { mqtt: { clientId: "probe-{server}" } }\n`)).toEqual([]);
    expect(warnings(`${PREFIX}    health: { mqtt: { clientId: probe } }\n`)).toEqual([]); // one server: one ID per server anyway
    expect(warnings(`${two}    health: { type: tcp, mqtt: { clientId: probe } }\n`)).toEqual([]);
  });

  it('warns of a `{...}` in the probe client ID that is no placeholder (sent as written)', () => {
    expect(warnings(`${PREFIX}    health: { mqtt: { clientId: "hc-{hostname}-{sever}-{port}" } }\n`)).toEqual([
      'lb.yaml:8:33 pools.brokers.health.mqtt.clientId: `{sever}`, `{port}` are no placeholders and are sent as written (placeholders: `{hostname}`, `{pool}`, `{server}`, `{pid}`)',
    ]);
    expect(warnings(`${PREFIX}    health: { mqtt: { clientId: "hc-{host}" } }\n`)).toEqual([
      'lb.yaml:8:33 pools.brokers.health.mqtt.clientId: `{host}` is no placeholder and is sent as written (placeholders: `{hostname}`, `{pool}`, `{server}`, `{pid}`)',
    ]);
    expect(warnings(`${PREFIX}    health: { mqtt: { clientId: "hc-{hostname}-{pool}-{server}-{pid}" } }\n`)).toEqual([]);
  });
});

/**
 * Words operators bring from haproxy.cfg and keepalived.conf, written where lb.yaml has no key of that name:
 * the hint names the lb.yaml key path (and value) to write instead, or says the thing does not exist here.
 */
describe('HAProxy and keepalived words', () => {
  /** PREFIX with its server as a block mapping: keys appended on line 10 and after belong to servers[0]. */
  const SERVER = PREFIX.replace('    servers: [{ name: b1, address: "10.0.0.11:1883" }]\n', '    servers:\n      - name: b1\n        address: 10.0.0.11:1883\n');
  const FAILOVER = `${PREFIX}failover:\n  interface: eth0\n  authKeyFile: /k\n  peers: [10.0.0.2]\n  vips: [192.0.2.10/24]\n`;

  it('server lines: health checks are per pool, the cap is maxConnections, no queue, no slowstart, `disabled` is maint', () => {
    expect(problems(SERVER)).toEqual([]);
    const keys = '        check: true\n        inter: 2s\n        fastinter: 500ms\n        downinter: 10s\n        fall: 3\n        rise: 2\n        maxconn: 1000\n        slowstart: 30s\n        disabled: true\n        maxqueue: 10\n';
    expect(problems(`${SERVER}${keys}`)).toEqual([
      'lb.yaml:10:9 pools.brokers.servers[0].check: unknown key `check` (health checks are per pool, on by default: `pools.brokers.health.type`)',
      'lb.yaml:11:9 pools.brokers.servers[0].inter: unknown key `inter` (health checks are per pool: `pools.brokers.health.interval`)',
      'lb.yaml:12:9 pools.brokers.servers[0].fastinter: unknown key `fastinter` (health checks are per pool: `pools.brokers.health.fastInterval`)',
      'lb.yaml:13:9 pools.brokers.servers[0].downinter: unknown key `downinter` (health checks are per pool: `pools.brokers.health.downInterval`)',
      'lb.yaml:14:9 pools.brokers.servers[0].fall: unknown key `fall` (health checks are per pool: `pools.brokers.health.fall`)',
      'lb.yaml:15:9 pools.brokers.servers[0].rise: unknown key `rise` (health checks are per pool: `pools.brokers.health.rise`)',
      'lb.yaml:16:9 pools.brokers.servers[0].maxconn: unknown key `maxconn` (did you mean `maxConnections`? a server at its cap refuses new clients with CONNACK Server busy; there is no queue)',
      'lb.yaml:17:9 pools.brokers.servers[0].slowstart: unknown key `slowstart` (not supported: a server takes its full share as soon as it is up)',
      'lb.yaml:18:9 pools.brokers.servers[0].disabled: unknown key `disabled` (set it in `maint` with the admin API, `POST /api/servers/<pool>/<server>/maint`; `admin.stateFile` keeps it across restarts)',
      'lb.yaml:19:9 pools.brokers.servers[0].maxqueue: unknown key `maxqueue` (there is no queue: a client whose server is at its `maxConnections` is refused with CONNACK Server busy)',
    ]);
    expect(problems(`${SERVER}        maxConnections: 500\n`)).toEqual([]);
    expect(problems(`${SERVER}        maxConnections: -1\n`)).toEqual([expect.stringMatching(/^lb\.yaml:10:25 pools\.brokers\.servers\[0\]\.maxConnections: /)]);
    // The pool's own path, whatever the pool is called and whichever server it is.
    expect(problems(`${SERVER.replaceAll('brokers', 'edge.eu')}      - { name: b2, address: "10.0.0.12:1883", inter: 2s }\n`)).toEqual([
      'lb.yaml:10:48 pools.edge.eu.servers[1].inter: unknown key `inter` (health checks are per pool: `pools.edge.eu.health.interval`)',
    ]);
  });

  it('more words (audit): maxconn at the top and in a pool, nbthread, a listener\'s inspect-delay and timeout, track.weight, mqtt-check', () => {
    expect(problems(`${PREFIX}    maxconn: 100\nmaxconn: 5\nnbthread: 2\n`)).toEqual([
      'lb.yaml:8:5 pools.brokers.maxconn: unknown key `maxconn` (there is no per-pool cap: `maxConnections` on each server, `listeners[].maxConnections` or `limits.maxConnections`)',
      'lb.yaml:9:1 maxconn: unknown key `maxconn` (did you mean `limits.maxConnections`?)',
      'lb.yaml:10:1 nbthread: unknown key `nbthread` (did you mean `workers`? processes, one per core with `workers: auto`)',
    ]);
    expect(problems(PREFIX.replace('    pool: brokers\n', '    pool: brokers\n    inspect-delay: 5s\n    timeout: 5s\n'))).toEqual([
      'lb.yaml:5:5 listeners[0].inspect-delay: unknown key `inspect-delay` (did you mean `limits.clientConnectTimeout`? the time a client has for its whole CONNECT)',
      'lb.yaml:6:5 listeners[0].timeout: unknown key `timeout` (the timeouts are `limits.clientConnectTimeout`, `pools.<name>.serverConnectTimeout`, `pools.<name>.serverConnackTimeout` and `limits.idleTimeout`)',
    ]);
    expect(problems(`${FAILOVER}  track: { weight: 30 }\n`)).toEqual([
      'lb.yaml:13:12 failover.track.weight: unknown key `weight` (did you mean `failover.track.pools.weight`? what each pool with no server up takes off the priority)',
    ]);
    expect(problems(`${PREFIX}    health: { type: mqtt-check }\n`)).toEqual([
      'lb.yaml:8:21 pools.brokers.health.type: must be one of `tcp`, `mqtt`, `http`, `none` (got "mqtt-check"; did you mean `mqtt`?)',
    ]);
  });

  // A new user's audit (session 32): migration.md lists close-spread-time as not carried over and promises a hint.
  it('close-spread-time and hard-stop-after, at the top and in limits', () => {
    expect(problems(`${PREFIX}close-spread-time: 10s\nhard-stop-after: 30s\nlimits:\n  close-spread-time: 10s\n`)).toEqual([
      "lb.yaml:8:1 close-spread-time: unknown key `close-spread-time` (not supported: at `limits.drainTimeout` the sessions still open are closed at once (a drain or `onServerDown: shutdown` closes them at its pool's `evictRate`))",
      'lb.yaml:9:1 hard-stop-after: unknown key `hard-stop-after` (did you mean `limits.drainTimeout`? how long sessions may drain on stop before they are closed)',
      "lb.yaml:11:3 limits.close-spread-time: unknown key `close-spread-time` (not supported: at `limits.drainTimeout` the sessions still open are closed at once (a drain or `onServerDown: shutdown` closes them at its pool's `evictRate`))",
    ]);
  });

  it('our own keys in the wrong mapping say where they belong (in at most two places)', () => {
    expect(problems(`${PREFIX}    refuseWith: close\nlimits:\n  evictRate: 10\n`)).toEqual([
      'lb.yaml:8:5 pools.brokers.refuseWith: unknown key `refuseWith` (`refuseWith` belongs in `listeners[]`; allowed here: balance, fallback, serverConnectTimeout, serverConnackTimeout, retries, sendProxyProtocol, onServerDown, onServerUp, takeover, evictRate, servers, health)',
      'lb.yaml:10:3 limits.evictRate: unknown key `evictRate` (`evictRate` belongs in `pools.<name>`; allowed here: clientConnectTimeout, maxConnectBytes, maxConnections, acceptRate, acceptQueue, perSource, drainTimeout, idleTimeout, maxMemory, maxPendingConnectBytes)',
    ]);
    expect(problems(PREFIX.replace('    pool: brokers\n', '    pool: brokers\n    balance: round-robin\n'))).toEqual([
      'lb.yaml:5:5 listeners[0].balance: unknown key `balance` (`balance` belongs in `pools.<name>`; allowed here: name, bind, pool, maxConnections, tls, acceptProxyProtocol, refuseWith, evictWith)',
    ]);
    expect(problems(PREFIX.replace('"10.0.0.11:1883" }]', '"10.0.0.11:1883", onServerDown: shutdown }]'))).toEqual([
      'lb.yaml:7:54 pools.brokers.servers[0].onServerDown: unknown key `onServerDown` (`onServerDown` belongs in `pools.<name>`; allowed here: name, address, weight, backup, healthUrl, maxConnections)',
    ]);
    // A key of three places or more (port, name) is no hint.
    expect(problems(`${PREFIX}admin:\n  port: 9883\n`)).toEqual(['lb.yaml:9:3 admin.port: unknown key `port`; allowed here: bind, token, stateFile']);
  });

  it('pool level: slowstart, on-marked-down/up, redispatch, stick tables, hash-type, agent-check', () => {
    const keys = [
      'slowstart: 30s',
      'on-marked-down: shutdown-sessions',
      'on_marked_down: shutdown-sessions',
      'on-marked-up: shutdown-backup-sessions',
      'redispatch: true',
      'option redispatch: true',
      'stick-table: type string len 64',
      'stick_table: x',
      'stick: on src',
      'hash-type: consistent',
      'agent-check: true',
    ];
    expect(problems(`${PREFIX}${keys.map((k) => `    ${k}\n`).join('')}`)).toEqual([
      'lb.yaml:8:5 pools.brokers.slowstart: unknown key `slowstart` (not supported: a server takes its full share as soon as it is up)',
      'lb.yaml:9:5 pools.brokers.on-marked-down: unknown key `on-marked-down` (did you mean `pools.brokers.onServerDown: shutdown`?)',
      'lb.yaml:10:5 pools.brokers.on_marked_down: unknown key `on_marked_down` (did you mean `pools.brokers.onServerDown: shutdown`?)',
      'lb.yaml:11:5 pools.brokers.on-marked-up: unknown key `on-marked-up` (did you mean `pools.brokers.onServerUp: rebalance`?)',
      'lb.yaml:12:5 pools.brokers.redispatch: unknown key `redispatch` (did you mean `pools.brokers.retries`? a retry always goes to another server)',
      'lb.yaml:13:5 pools.brokers.option redispatch: unknown key `option redispatch` (did you mean `pools.brokers.retries`? a retry always goes to another server)',
      'lb.yaml:14:5 pools.brokers.stick-table: unknown key `stick-table` (no table: `pools.brokers.balance: client-id-hash` keeps a client on one server by rendezvous hashing, the same on every LB host)',
      'lb.yaml:15:5 pools.brokers.stick_table: unknown key `stick_table` (no table: `pools.brokers.balance: client-id-hash` keeps a client on one server by rendezvous hashing, the same on every LB host)',
      'lb.yaml:16:5 pools.brokers.stick: unknown key `stick` (no table: `pools.brokers.balance: client-id-hash` keeps a client on one server by rendezvous hashing, the same on every LB host)',
      'lb.yaml:17:5 pools.brokers.hash-type: unknown key `hash-type` (not needed: `pools.brokers.balance: client-id-hash` is consistent (rendezvous) hashing already: a server added or removed moves only its own share of clients)',
      'lb.yaml:18:5 pools.brokers.agent-check: unknown key `agent-check` (not supported; the nearest is `pools.brokers.health.type: http`)',
    ]);
  });

  it('values: balance, onServerDown, onServerUp and health.type in HAProxy words', () => {
    const BALANCE = 'must be one of `client-id-hash`, `username-hash`, `round-robin`, `least-connections`, `random`';
    expect(problems(`${PREFIX}    balance: hash\n`)).toEqual([`lb.yaml:8:14 pools.brokers.balance: ${BALANCE} (got "hash"; did you mean \`client-id-hash\`?)`]);
    expect(problems(`${PREFIX}    balance: source\n`)).toEqual([`lb.yaml:8:14 pools.brokers.balance: ${BALANCE} (got "source"; did you mean \`client-id-hash\`?)`]);
    expect(problems(`${PREFIX}    balance: roundrobin\n`)).toEqual([`lb.yaml:8:14 pools.brokers.balance: ${BALANCE} (got "roundrobin"; did you mean \`round-robin\`?)`]);
    expect(problems(`${PREFIX}    balance: static-rr\n`)).toEqual([`lb.yaml:8:14 pools.brokers.balance: ${BALANCE} (got "static-rr"; did you mean \`round-robin\`?)`]);
    // `leastconn`: 'bad value' above.
    expect(problems(`${PREFIX}    onServerDown: shutdown-sessions\n`)).toEqual([
      'lb.yaml:8:19 pools.brokers.onServerDown: must be one of `keep`, `shutdown` (got "shutdown-sessions"; did you mean `shutdown`?)',
    ]);
    expect(problems(`${PREFIX}    onServerUp: shutdown-backup-sessions\n`)).toEqual([
      'lb.yaml:8:17 pools.brokers.onServerUp: must be one of `keep`, `rebalance` (got "shutdown-backup-sessions"; did you mean `rebalance`? with a hash it also moves back the sessions of a returning non-backup server)',
    ]);
    const TYPES = 'must be one of `tcp`, `mqtt`, `http`, `none`';
    expect(problems(`${PREFIX}    health: { type: tcp-check }\n`)).toEqual([`lb.yaml:8:21 pools.brokers.health.type: ${TYPES} (got "tcp-check"; did you mean \`tcp\`?)`]);
    expect(problems(`${PREFIX}    health: { type: check }\n`)).toEqual([`lb.yaml:8:21 pools.brokers.health.type: ${TYPES} (got "check"; did you mean \`tcp\`?)`]);
    expect(problems(`${PREFIX}    health: { type: httpchk }\n`)).toEqual([`lb.yaml:8:21 pools.brokers.health.type: ${TYPES} (got "httpchk"; did you mean \`http\`?)`]);
    // `check` as a pool key is still `health`.
    expect(problems(`${PREFIX}    check: { type: tcp }\n`)).toEqual(['lb.yaml:8:5 pools.brokers.check: unknown key `check` (did you mean `health`?)']);
  });

  it('top level and limits: inspect-delay, tcp-request, timeout', () => {
    const TIMEOUTS = 'the timeouts are `limits.clientConnectTimeout`, `pools.<name>.serverConnectTimeout`, `pools.<name>.serverConnackTimeout` and `limits.idleTimeout`';
    expect(problems(`${PREFIX}inspect-delay: 5s\ninspect_delay: 5s\ntcp-request: x\ntimeout: 5s\n`)).toEqual([
      'lb.yaml:8:1 inspect-delay: unknown key `inspect-delay` (did you mean `limits.clientConnectTimeout`?)',
      'lb.yaml:9:1 inspect_delay: unknown key `inspect_delay` (did you mean `limits.clientConnectTimeout`?)',
      'lb.yaml:10:1 tcp-request: unknown key `tcp-request` (did you mean `limits.clientConnectTimeout`?)',
      `lb.yaml:11:1 timeout: unknown key \`timeout\` (${TIMEOUTS})`,
    ]);
    expect(problems(`${PREFIX}limits:\n  inspect-delay: 5s\n  timeout: 5s\n`)).toEqual([
      'lb.yaml:9:3 limits.inspect-delay: unknown key `inspect-delay` (did you mean `clientConnectTimeout`?)',
      `lb.yaml:10:3 limits.timeout: unknown key \`timeout\` (${TIMEOUTS})`,
    ]);
  });

  it('failover: keepalived words', () => {
    expect(problems(FAILOVER)).toEqual([]);
    const keys = [
      'state: MASTER',
      'nopreempt: true',
      'track_interface: [eth0]',
      'track_script: [chk_haproxy]',
      'vrrp_script: chk_haproxy',
      'garp_master_delay: 5',
      'garp_master_repeat: 3',
      'garp_master_refresh: 60',
      'notify_master: /x',
      'notify_backup: /x',
      'notify_fault: /x',
      'authentication: { auth_type: PASS }',
      'auth_pass: secret',
      'unicast_src_ip: 10.0.0.1',
      'virtual_router_id: 51',
      'advert_int: 1',
    ];
    const TRACK = 'did you mean `failover.track.scripts`? a list of scripts (`name`, `command`, `args`, `interval`, `weight`), tracked by every instance';
    const NOTIFY = 'did you mean `failover.notify`? one hook, called as `notify STATE ROUTER_ID`';
    const AUTH = 'did you mean `failover.authKeyFile`? a key file written by `mqtt-lb keygen`';
    expect(problems(`${FAILOVER}${keys.map((k) => `  ${k}\n`).join('')}`)).toEqual([
      'lb.yaml:13:3 failover.state: unknown key `state` (there is no initial state: the priority decides which host is master)',
      'lb.yaml:14:3 failover.nopreempt: unknown key `nopreempt` (did you mean `failover.preempt: false`?)',
      'lb.yaml:15:3 failover.track_interface: unknown key `track_interface` (did you mean `failover.track.interface`?)',
      `lb.yaml:16:3 failover.track_script: unknown key \`track_script\` (${TRACK})`,
      `lb.yaml:17:3 failover.vrrp_script: unknown key \`vrrp_script\` (${TRACK})`,
      'lb.yaml:18:3 failover.garp_master_delay: unknown key `garp_master_delay` (did you mean `failover.garp.repeatAfter`?)',
      'lb.yaml:19:3 failover.garp_master_repeat: unknown key `garp_master_repeat` (did you mean `failover.garp.count`?)',
      'lb.yaml:20:3 failover.garp_master_refresh: unknown key `garp_master_refresh` (not supported: gratuitous ARPs are sent on becoming master, and once more after `failover.garp.repeatAfter`)',
      `lb.yaml:21:3 failover.notify_master: unknown key \`notify_master\` (${NOTIFY})`,
      `lb.yaml:22:3 failover.notify_backup: unknown key \`notify_backup\` (${NOTIFY})`,
      `lb.yaml:23:3 failover.notify_fault: unknown key \`notify_fault\` (${NOTIFY})`,
      `lb.yaml:24:3 failover.authentication: unknown key \`authentication\` (${AUTH})`,
      `lb.yaml:25:3 failover.auth_pass: unknown key \`auth_pass\` (${AUTH})`,
      'lb.yaml:26:3 failover.unicast_src_ip: unknown key `unicast_src_ip` (not needed: adverts are sent from the address of `failover.interface`)',
      // Words that have a key of their own keep pointing to it.
      'lb.yaml:27:3 failover.virtual_router_id: unknown key `virtual_router_id` (did you mean `routerId`?)',
      'lb.yaml:28:3 failover.advert_int: unknown key `advert_int` (did you mean `advertInterval`?)',
    ]);
    // In an instance (keepalived's vrrp_instance), and inside the sub-mappings they belong to.
    expect(
      problems(
        `${FAILOVER.replace('  vips: [192.0.2.10/24]\n', '')}  instances:\n    - { routerId: 51, vips: [192.0.2.10/24], state: BACKUP }\n  garp: { garp_master_repeat: 3, garp_master_delay: 5s }\n  track: { track_interface: true }\nvrrp_script: chk\n`,
      ),
    ).toEqual([
      'lb.yaml:13:46 failover.instances[0].state: unknown key `state` (there is no initial state: the priority decides which host is master)',
      'lb.yaml:14:11 failover.garp.garp_master_repeat: unknown key `garp_master_repeat` (did you mean `count`?)',
      'lb.yaml:14:34 failover.garp.garp_master_delay: unknown key `garp_master_delay` (did you mean `repeatAfter`?)',
      'lb.yaml:15:12 failover.track.track_interface: unknown key `track_interface` (did you mean `interface`?)',
      `lb.yaml:16:1 vrrp_script: unknown key \`vrrp_script\` (${TRACK})`,
    ]);
  });

  it('failover.track.pools.weight: keepalived\'s negative weight is said to be subtracted already', () => {
    expect(problems(`${FAILOVER}  track: { pools: { weight: -60 } }\n`)).toEqual([
      'lb.yaml:13:29 failover.track.pools.weight: must be an integer between 0 and 254 (got -60; the weight is subtracted already: write `60`)',
    ]);
    expect(problems(`${FAILOVER}  track:\n    pools:\n      weight: -254\n`)).toEqual([
      'lb.yaml:15:15 failover.track.pools.weight: must be an integer between 0 and 254 (got -254; the weight is subtracted already: write `254`)',
    ]);
    // Beyond what could be written positively, or not a whole number: the plain rule.
    expect(problems(`${FAILOVER}  track: { pools: { weight: -300 } }\n`)).toEqual([
      'lb.yaml:13:29 failover.track.pools.weight: must be an integer between 0 and 254 (got -300)',
    ]);
    expect(problems(`${FAILOVER}  track: { pools: { weight: -60.0 } }\n`)).toEqual([
      'lb.yaml:13:29 failover.track.pools.weight: must be an integer between 0 and 254, written without a fraction or exponent (got -60.0)',
    ]);
    expect(problems(`${FAILOVER}  track: { pools: { weight: 60 } }\n`)).toEqual([]);
    // track.scripts: keepalived's vrrp_script, checked entry by entry.
    const scripts = (entries: string): string[] => problems(`${FAILOVER}  track:\n    scripts:\n${entries}`);
    expect(scripts('      - { name: gw, command: /bin/true }\n      - { name: up, command: /bin/true, args: [a, "b c"], interval: 500ms, rise: 2, fall: 3, weight: 30 }\n')).toEqual([]);
    expect(
      scripts(
        '      - { name: gw, command: /bin/true, weight: -20 }\n      - { name: gw, command: /bin/true, interval: 1s, timeout: 2s }\n      - { name: x, args: [a] }\n      - { name: y, command: /bin/true, script: /bin/x }\n',
      ),
    ).toEqual([
      'lb.yaml:15:49 failover.track.scripts[0].weight: must be an integer between 0 and 254 (got -20; the weight is subtracted already: write `20`)',
      'lb.yaml:16:17 failover.track.scripts[1].name: duplicate script name `gw` (first on line 15)',
      'lb.yaml:16:64 failover.track.scripts[1].timeout: must not be longer than `interval` (1s): one run at a time',
      'lb.yaml:17:9 failover.track.scripts[2].command: missing required key `command` (the executable to run, e.g. /usr/local/bin/check-gateway; no shell: its arguments go in `args`)',
      'lb.yaml:18:40 failover.track.scripts[3].script: unknown key `script` (did you mean `command`?)',
    ]);
    // keepalived's init_fail: what it did is what every script does here.
    expect(scripts('      - { name: gw, command: /bin/true, init_fail: true }\n')).toEqual([
      'lb.yaml:15:41 failover.track.scripts[0].init_fail: unknown key `init_fail` (not needed: no instance becomes master while a script has no first result yet)',
    ]);
    // A fork every few ms is a busy core, and so short a timeout fails healthy checks under load: 100 ms at least.
    expect(scripts('      - { name: gw, command: /bin/true, interval: 20ms, timeout: 10ms }\n')).toEqual([
      'lb.yaml:15:51 failover.track.scripts[0].interval: must be at least 100ms (got "20ms")',
      'lb.yaml:15:66 failover.track.scripts[0].timeout: must be at least 100ms (got "10ms")',
    ]);
    // Arguments as written: YAML's numbers and booleans are passed as their text, an empty string is an argument.
    const written = parseConfig(`${FAILOVER}  track:\n    scripts: [{ name: gw, command: /bin/true, args: [-c, 1, 010, 1.50, true, "", x] }]\n`, 'lb.yaml').config!;
    expect(written.failover!.track.scripts[0]!.args).toEqual(['-c', '1', '010', '1.50', 'true', '', 'x']);
    // An interval under 1 s without a timeout: the timeout is the interval.
    const short = parseConfig(`${FAILOVER}  track:\n    scripts: [{ name: gw, command: /bin/true, interval: 300ms }]\n`, 'lb.yaml').config!;
    expect(short.failover!.track.scripts[0]).toMatchObject({ interval: 300, timeout: 300 });
  });
});
