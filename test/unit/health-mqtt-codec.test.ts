import { parser } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { healthClientId, unknownPlaceholders } from '../../src/health/client-id.js';
import { readConnack } from '../../src/health/connack.js';
import { healthUrlFor } from '../../src/health/http.js';
import { probeConnectBytes, type MqttProbeOptions } from '../../src/health/mqtt.js';
import { PROXY_V1_UNKNOWN, PROXY_V2_LOCAL } from '../../src/health/proxy-header.js';

function parseConnect(bytes: Buffer, version: 3 | 4 | 5): Record<string, unknown> {
  const p = parser({ protocolVersion: version });
  const packets: Array<Record<string, unknown>> = [];
  p.on('packet', (pkt) => packets.push(pkt as unknown as Record<string, unknown>));
  p.on('error', (err) => {
    throw err;
  });
  p.parse(bytes);
  expect(packets).toHaveLength(1);
  return packets[0]!;
}

const base: MqttProbeOptions = { timeout: 1000, version: 4, clientId: 'probe-1', username: null, password: null, proxyProtocol: 'off' };

describe('readConnack', () => {
  it('accepts a 3.1.1 success and reports refusals with their code', () => {
    expect(readConnack(Buffer.from([0x20, 0x02, 0x00, 0x00]), 4)).toEqual({ kind: 'accepted' });
    expect(readConnack(Buffer.from([0x20, 0x02, 0x00, 0x05]), 4)).toEqual({ kind: 'refused', detail: "CONNACK return code 5 (not authorized: set or check the pool's health.mqtt.username and password, or allow the probe's client ID)" });
    expect(readConnack(Buffer.from([0x20, 0x02, 0x00, 0x05]), 3)).toMatchObject({ kind: 'refused' });
  });

  it('waits for more bytes while the packet is incomplete', () => {
    const full = Buffer.from([0x20, 0x02, 0x00, 0x00]);
    for (let n = 0; n < full.length; n++) expect(readConnack(full.subarray(0, n), 4)).toEqual({ kind: 'incomplete' });
  });

  it('reads v5 CONNACKs with properties', () => {
    // flags 0, reason 0, properties length 3: topic alias maximum (0x22) = 10
    expect(readConnack(Buffer.from([0x20, 0x06, 0x00, 0x00, 0x03, 0x22, 0x00, 0x0a]), 5)).toEqual({ kind: 'accepted' });
    expect(readConnack(Buffer.from([0x20, 0x03, 0x00, 0x87, 0x00]), 5)).toEqual({ kind: 'refused', detail: "CONNACK reason code 0x87 (not authorized: set or check the pool's health.mqtt.username and password, or allow the probe's client ID)" });
    // A code no name is known for: the number alone.
    expect(readConnack(Buffer.from([0x20, 0x03, 0x00, 0x9d, 0x00]), 5)).toEqual({ kind: 'refused', detail: 'CONNACK reason code 0x9d' });
    expect(readConnack(Buffer.from([0x20, 0x06, 0x00, 0x00, 0x03, 0x22]), 5)).toEqual({ kind: 'incomplete' });
  });

  it('judges a 5.0 CONNACK longer than MAX_CONNACK_BYTES on its flags and reason code, without waiting for the rest', () => {
    // 80,000 bytes of properties (user properties, say): remaining length 80,003 as a variable byte integer.
    const head = (code: number) => Buffer.from([0x20, 0x83, 0xf1, 0x04, 0x00, code, 0x80, 0xf1, 0x04]);
    expect(readConnack(head(0x00), 5)).toEqual({ kind: 'accepted' });
    expect(readConnack(head(0x87), 5)).toMatchObject({ kind: 'refused' });
    expect(readConnack(head(0x00).subarray(0, 5), 5)).toEqual({ kind: 'incomplete' });
    expect(readConnack(Buffer.from([0x20, 0x83, 0xf1, 0x04, 0x02, 0x00]), 5)).toMatchObject({ kind: 'malformed' }); // reserved flag bits
    // At 3.1.1 the length must be 2, whatever its size.
    expect(readConnack(Buffer.from([0x20, 0x83, 0xf1, 0x04, 0x00, 0x00]), 4)).toMatchObject({ kind: 'malformed' });
  });

  it('calls anything but a CONNACK first malformed', () => {
    expect(readConnack(Buffer.from('HTTP/1.1 400 Bad Request\r\n'), 4)).toMatchObject({ kind: 'malformed' });
    expect(readConnack(Buffer.from([0x21, 0x02, 0x00, 0x00]), 4)).toMatchObject({ kind: 'malformed' }); // reserved flags [MQTT-2.2.2-1]
    expect(readConnack(Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]), 4)).toMatchObject({ kind: 'malformed' }); // 3.1.1 length must be 2
    expect(readConnack(Buffer.from([0x20, 0x02, 0x02, 0x00]), 4)).toMatchObject({ kind: 'malformed' }); // reserved ack flag bits
    expect(readConnack(Buffer.from([0x20, 0xff, 0xff, 0xff, 0xff, 0x01]), 5)).toMatchObject({ kind: 'malformed' });
    // A re-audit: a 5.0 property length past the packet (or short of it) passed as a well-formed CONNACK.
    expect(readConnack(Buffer.from([0x20, 0x03, 0x00, 0x00, 0x05]), 5)).toMatchObject({ kind: 'malformed' });
    expect(readConnack(Buffer.from([0x20, 0x05, 0x00, 0x00, 0x01, 0x24, 0x01]), 5)).toMatchObject({ kind: 'malformed' });
    expect(readConnack(Buffer.from([0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x01]), 5)).toMatchObject({ kind: 'accepted' });
  });
});

describe('probe CONNECT bytes', () => {
  it('v3 uses MQIsdp/3, clean session, keepalive 10', () => {
    const pkt = parseConnect(probeConnectBytes({ ...base, version: 3 }), 3);
    expect(pkt).toMatchObject({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clean: true, keepalive: 10, clientId: 'probe-1' });
  });

  it('v4 carries the configured username and password', () => {
    const pkt = parseConnect(probeConnectBytes({ ...base, username: 'u', password: 'p' }), 4);
    expect(pkt).toMatchObject({ protocolId: 'MQTT', protocolVersion: 4, clean: true, username: 'u' });
    expect((pkt.password as Buffer).toString()).toBe('p');
  });

  it('never sends a password without a username [MQTT-3.1.2-22]', () => {
    const pkt = parseConnect(probeConnectBytes({ ...base, password: 'p' }), 4);
    expect(pkt.username).toBeUndefined();
    expect(pkt.password).toBeUndefined();
  });

  it('v5 sends a password without a username when only a password is configured (MQTT 5 §3.1.2.9 allows it)', () => {
    const bytes = probeConnectBytes({ ...base, version: 5, password: 'tok' });
    // Flags 0x42: Password Flag and Clean Start, no User Name Flag; the payload ends with the password.
    expect([...bytes]).toEqual([0x10, 25, 0, 4, ...Buffer.from('MQTT'), 5, 0x42, 0, 10, 0, 0, 7, ...Buffer.from('probe-1'), 0, 3, ...Buffer.from('tok')]);
    const pkt = parseConnect(bytes, 5);
    expect(pkt.username).toBeUndefined();
    expect((pkt.password as Buffer).toString()).toBe('tok');
    // 128 bytes with an empty username (two length bytes) become 126: the remaining length shrinks to one byte.
    const long = probeConnectBytes({ ...base, version: 5, password: 'p'.repeat(104) });
    expect([long[0], long[1], long.length]).toEqual([0x10, 126, 128]);
    expect((parseConnect(long, 5).password as Buffer).toString()).toBe('p'.repeat(104));
  });

  it('v5 uses clean start and no session expiry', () => {
    const pkt = parseConnect(probeConnectBytes({ ...base, version: 5 }), 5);
    expect(pkt).toMatchObject({ protocolVersion: 5, clean: true });
    expect((pkt.properties as { sessionExpiryInterval?: number } | undefined)?.sessionExpiryInterval ?? 0).toBe(0);
  });

  it('puts a PROXY v2 LOCAL or v1 UNKNOWN header first when the pool sends PROXY', () => {
    const v2 = probeConnectBytes({ ...base, proxyProtocol: 'v2' });
    expect(v2.subarray(0, 16)).toEqual(
      Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00]),
    );
    expect(v2.subarray(0, 16)).toEqual(PROXY_V2_LOCAL);
    expect(parseConnect(v2.subarray(16), 4)).toMatchObject({ cmd: 'connect' });
    const v1 = probeConnectBytes({ ...base, proxyProtocol: 'v1' });
    expect(v1.subarray(0, PROXY_V1_UNKNOWN.length).toString('latin1')).toBe('PROXY UNKNOWN\r\n');
    expect(parseConnect(v1.subarray(PROXY_V1_UNKNOWN.length), 4)).toMatchObject({ cmd: 'connect' });
  });
});

describe('healthClientId', () => {
  it('defaults to mqtt-lb-health-<hostname>-<server>', () => {
    expect(healthClientId(null, { hostname: 'lb1', pool: 'p', server: 'b1' }, 4)).toBe('mqtt-lb-health-lb1-b1');
  });

  it('differs per LB host and per server', () => {
    const ids = new Set([
      healthClientId(null, { hostname: 'lb1', pool: 'p', server: 'b1' }, 4),
      healthClientId(null, { hostname: 'lb2', pool: 'p', server: 'b1' }, 4),
      healthClientId(null, { hostname: 'lb1', pool: 'p', server: 'b2' }, 4),
    ]);
    expect(ids.size).toBe(3);
  });

  it('expands {hostname} and {server} in a configured ID, else uses it as written', () => {
    expect(healthClientId('hc-{hostname}-{server}', { hostname: 'lb1', pool: 'p', server: 'b1' }, 4)).toBe('hc-lb1-b1');
    expect(healthClientId('fixed', { hostname: 'lb1', pool: 'p', server: 'b1' }, 5)).toBe('fixed');
    expect(healthClientId('hc-{hostname}-{pid}-{server}', { hostname: 'lb1', pool: 'p', server: 'b1' }, 4, 4242)).toBe('hc-lb1-4242-b1');
    expect(healthClientId('hc-{pid}-{server}', { hostname: 'lb1', pool: 'p', server: 'b1' }, 4)).toBe(`hc-${process.pid}-b1`);
    // {pool}: two pools of one balancer reaching one cluster under the same server names.
    expect(healthClientId('hc-{pool}-{server}', { hostname: 'lb1', pool: 'east', server: 'b1' }, 4)).toBe('hc-east-b1');
    expect(healthClientId('hc-{sever}', { hostname: 'lb1', pool: 'p', server: 'b1' }, 4)).toBe('hc-{sever}'); // no placeholder
    expect(unknownPlaceholders('hc-{hostname}-{sever}-{port}-{sever}-{pool}')).toEqual(['{sever}', '{port}']);
    expect(unknownPlaceholders('hc-{hostname}-{pool}-{server}-{pid}')).toEqual([]);
  });

  it('keeps MQTT 3.1 IDs within 23 characters, still distinct', () => {
    const a = healthClientId(null, { hostname: 'a-long-host-name.example.org', pool: 'p', server: 'b1' }, 3);
    const b = healthClientId(null, { hostname: 'a-long-host-name.example.org', pool: 'p', server: 'b2' }, 3);
    expect(a.length).toBeLessThanOrEqual(23);
    expect(a).not.toBe(b);
    expect(healthClientId(null, { hostname: 'h', pool: 'p', server: 'b' }, 3)).toBe('mqtt-lb-health-h-b');
  });
});

describe('healthUrlFor', () => {
  it('prefers the server healthUrl, else builds one from host, port and path', () => {
    expect(healthUrlFor({ host: '10.0.0.1', healthUrl: 'http://x/y' }, { port: 1, path: '/z' })).toBe('http://x/y');
    expect(healthUrlFor({ host: '10.0.0.1', healthUrl: null }, { port: 18083, path: '/api/v5/status' })).toBe(
      'http://10.0.0.1:18083/api/v5/status',
    );
    expect(healthUrlFor({ host: '::1', healthUrl: null }, { port: 80, path: 'ready' })).toBe('http://[::1]:80/ready');
  });
});
