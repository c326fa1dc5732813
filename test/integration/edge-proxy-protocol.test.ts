/**
 * PROXY protocol at the edge (issue 6): v1/v2 headers sent to the servers with the real client address,
 * headers required (strict, bounded, timed) from acceptProxyProtocol sources and treated as a bad first
 * packet from anyone else, and the declared address used for limits and passed on. The servers are the
 * PROXY-aware fake broker (mosquitto 2.0 cannot read PROXY headers). Runs the built CLI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import tls from 'node:tls';
import mqttPacket from 'mqtt-packet';
import { startProxyAwareBroker, type ProxyAwareBroker, type ProxyAwareBrokerConnection } from '../helpers/proxy-server.js';
import { lbYaml } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { startLb, stopAllLbs, sleep, type LbProcess } from '../helpers/lb.js';
import { connectPacket, parsePackets, connectRaw, collect, exchange, type Exchange } from '../helpers/raw-client.js';
import { createTestPki, type TestPki } from '../helpers/tls-certs.js';
import { encodeV1, encodeV2 } from '../../src/proxy/proxy-protocol.js';

const CONNACK_OK = [0x20, 0x02, 0x00, 0x00];

function findConnection(broker: ProxyAwareBroker, clientId: string): ProxyAwareBrokerConnection | undefined {
  return broker.connections.find((c) => {
    const p = parsePackets(c.connect, c.connect[8] === 5 ? 5 : 4)[0] as mqttPacket.IConnectPacket | undefined;
    return p?.clientId === clientId;
  });
}

async function waitConnection(broker: ProxyAwareBroker, clientId: string, timeoutMs = 5000): Promise<ProxyAwareBrokerConnection> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const c = findConnection(broker, clientId);
    if (c !== undefined) return c;
    if (Date.now() > until) throw new Error(`broker never saw ${clientId}`);
    await sleep(20);
  }
}

/** Send segments on a fresh socket, return the exchange and the socket's own local port. */
async function exchangeFrom(port: number, segments: Buffer[], waitMs = 1500): Promise<Exchange & { localPort: number }> {
  const s = await connectRaw(port);
  const localPort = s.localPort!;
  const result = collect(s, waitMs);
  for (const seg of segments) if (!s.destroyed) s.write(seg);
  return { ...(await result), localPort };
}

async function metric(admin: number, listener: string, reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  const m = new RegExp(`mqtt_lb_connect_rejected_total\\{listener="${listener}",reason="${reason}"\\} (\\d+)`).exec(text);
  return m === null ? 0 : Number(m[1]);
}

function v1Line(src: string, dst: string, sp: number, dp: number): Buffer {
  return encodeV1({ family: net.isIPv6(src) ? 'tcp6' : 'tcp4', srcAddress: src, dstAddress: dst, srcPort: sp, dstPort: dp });
}

let broker: ProxyAwareBroker;
let pki: TestPki;
const ports: Record<string, number> = {};
let admin: number;
let mainLb: LbProcess;

beforeAll(async () => {
  pki = createTestPki();
  broker = await startProxyAwareBroker();
  for (const name of ['sendV1', 'sendV2', 'trusted', 'untrusted', 'trustedTls']) ports[name] = await freePort();
  admin = await freePort();
  const fake = `      - name: fake\n        address: 127.0.0.1:${broker.port}`;
  const health = `    health:\n      type: none\n`;
  const yaml = `listeners:
  - name: send-v1
    bind: 127.0.0.1:${ports.sendV1}
    pool: v1
  - name: send-v2
    bind: 127.0.0.1:${ports.sendV2}
    pool: v2
  - name: trusted
    bind: 127.0.0.1:${ports.trusted}
    pool: v2
    acceptProxyProtocol: [127.0.0.1/32]
  - name: untrusted
    bind: 127.0.0.1:${ports.untrusted}
    pool: v2
    acceptProxyProtocol: [10.0.0.0/8, "2001:db8::/32"]
  - name: trusted-tls
    bind: 127.0.0.1:${ports.trustedTls}
    pool: v2
    acceptProxyProtocol: [127.0.0.0/8]
    tls:
      cert: ${pki.serverCert}
      key: ${pki.serverKey}
pools:
  v1:
    balance: round-robin
    sendProxyProtocol: v1
    servers:
${fake}
${health}  v2:
    balance: round-robin
    sendProxyProtocol: v2
    servers:
${fake}
${health}limits:
  clientConnectTimeout: 1s
admin:
  bind: 127.0.0.1:${admin}
log:
  level: debug
`;
  mainLb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
});

afterAll(async () => {
  await stopAllLbs();
  await broker?.close();
  pki?.cleanup();
});

describe('sendProxyProtocol', () => {
  it('v1: the broker reads the real client address in a text header, then the CONNECT byte for byte', async () => {
    const connect = connectPacket({ clientId: 'send-v1-client', username: 'u' });
    const r = await exchangeFrom(ports.sendV1!, [connect]);
    expect([...r.data]).toEqual(CONNACK_OK);
    const c = await waitConnection(broker, 'send-v1-client');
    expect(c.header).toMatchObject({ kind: 'ok', local: false, addresses: { family: 'tcp4', srcAddress: '127.0.0.1', srcPort: r.localPort, dstAddress: '127.0.0.1', dstPort: ports.sendV1 } });
    if (c.header.kind !== 'ok') throw new Error('unreachable');
    expect(c.header.headerLength).toBe(v1Line('127.0.0.1', '127.0.0.1', r.localPort, ports.sendV1!).length); // a v1 line
    expect(c.connect.equals(connect)).toBe(true);
  });

  it('v2: the broker reads the real client address in a binary header (no TLVs without TLS)', async () => {
    const connect = connectPacket({ clientId: 'send-v2-client', protocolVersion: 5 });
    const r = await exchangeFrom(ports.sendV2!, [connect]);
    expect(parsePackets(r.data, 5)[0]).toMatchObject({ cmd: 'connack', reasonCode: 0 });
    const c = await waitConnection(broker, 'send-v2-client');
    expect(c.header).toMatchObject({ kind: 'ok', local: false, headerLength: 16 + 12, addresses: { family: 'tcp4', srcAddress: '127.0.0.1', srcPort: r.localPort, dstPort: ports.sendV2 } });
    if (c.header.kind !== 'ok') throw new Error('unreachable');
    expect(c.header.tlvs).toEqual({});
    expect(c.connect.equals(connect)).toBe(true);
  });
});

describe('acceptProxyProtocol from a trusted source (127.0.0.1/32)', () => {
  it('a v1 header: its source and destination are what the broker sees', async () => {
    const r = await exchangeFrom(ports.trusted!, [Buffer.concat([v1Line('203.0.113.7', '198.51.100.1', 40001, 8883), connectPacket({ clientId: 'via-v1' })])]);
    expect([...r.data]).toEqual(CONNACK_OK);
    const c = await waitConnection(broker, 'via-v1');
    expect(c.header).toMatchObject({ kind: 'ok', local: false, addresses: { family: 'tcp4', srcAddress: '203.0.113.7', srcPort: 40001, dstAddress: '198.51.100.1', dstPort: 8883 } });
  });

  it('the PROXY header is not client bytes: mqtt_lb_server_bytes_total{direction="in"} grows by the CONNECT only', async () => {
    const serverBytesIn = async (): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      const m = /mqtt_lb_server_bytes_total\{pool="v2",server="fake",direction="in"\} (\d+)/.exec(text);
      return m === null ? 0 : Number(m[1]);
    };
    const before = await serverBytesIn();
    const header = v1Line('203.0.113.9', '198.51.100.1', 40002, 8883);
    const connect = connectPacket({ clientId: 'bytes-v1' });
    const r = await exchangeFrom(ports.trusted!, [Buffer.concat([header, connect])], 500);
    expect([...r.data]).toEqual(CONNACK_OK);
    await waitConnection(broker, 'bytes-v1');
    expect(await serverBytesIn()).toBe(before + connect.length); // not + header.length (41 bytes)
  });

  it('a v2 header for IPv6, sent one byte at a time with the CONNECT glued to its last byte', async () => {
    const header = encodeV2({ family: 'tcp6', srcAddress: '2001:db8::7', srcPort: 50000, dstAddress: '2001:db8::1', dstPort: 1883 });
    const bytes = [...header].map((b) => Buffer.from([b]));
    bytes[bytes.length - 1] = Buffer.concat([bytes[bytes.length - 1]!, connectPacket({ clientId: 'via-v2-v6' })]);
    const s = await connectRaw(ports.trusted!);
    const result = collect(s, 1500);
    for (const b of bytes) {
      s.write(b);
      await sleep(1);
    }
    expect([...(await result).data]).toEqual(CONNACK_OK);
    const c = await waitConnection(broker, 'via-v2-v6');
    expect(c.header).toMatchObject({ kind: 'ok', addresses: { family: 'tcp6', srcAddress: '2001:db8::7', srcPort: 50000, dstAddress: '2001:db8::1', dstPort: 1883 } });
  });

  it('a LOCAL header (the NLB health-checking us) keeps the connection own address', async () => {
    const r = await exchangeFrom(ports.trusted!, [encodeV2(null), connectPacket({ clientId: 'via-local' })]);
    expect([...r.data]).toEqual(CONNACK_OK);
    const c = await waitConnection(broker, 'via-local');
    expect(c.header).toMatchObject({ kind: 'ok', addresses: { srcAddress: '127.0.0.1', srcPort: r.localPort } });
  });

  // A PROXY audit: HAProxy's check with send-proxy-v2 sends a LOCAL header and resets at once; gone before its
  // address was asked, it was taken for an untrusted source and counted `not_connect` (every 2 s per HAProxy server).
  it('a LOCAL header and a reset at once (HAProxy\'s check with send-proxy-v2) is counted as nothing, on plain and TLS listeners', async () => {
    const reasons = ['not_connect', 'bad_proxy_header', 'tls_handshake', 'malformed'];
    const counts = async (listener: string): Promise<number[]> => Promise.all(reasons.map((r) => metric(admin, listener, r)));
    const before = { trusted: await counts('trusted'), tls: await counts('trusted-tls') };
    for (const port of [ports.trusted!, ports.trustedTls!]) {
      for (let i = 0; i < 10; i++) {
        await new Promise<void>((resolve) => {
          const s = net.connect(port, '127.0.0.1', () => {
            s.write(encodeV2(null));
            s.resetAndDestroy();
            setTimeout(resolve, 30);
          });
          s.on('error', () => {});
        });
      }
    }
    await sleep(300);
    expect(await counts('trusted')).toEqual(before.trusted);
    expect(await counts('trusted-tls')).toEqual(before.tls);
  });

  it('no header, a malformed header, or an oversized one: closed without an answer, nothing reaches a server', async () => {
    const before = broker.connections.length;
    const counted = await metric(admin, 'trusted', 'bad_proxy_header');
    const cases: Array<[string, Buffer]> = [
      ['plain CONNECT', connectPacket({ clientId: 'no-header' })],
      ['bad v1 address', Buffer.concat([Buffer.from('PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\n'), connectPacket({ clientId: 'bad-v1' })])],
      ['lowercase v1', Buffer.concat([Buffer.from('proxy TCP4 1.2.3.4 127.0.0.1 1 2\r\n'), connectPacket({ clientId: 'lc-v1' })])],
      ['v1 without CRLF in 107 bytes', Buffer.from('PROXY TCP6 ' + 'f'.repeat(120))],
      ['v2 declaring 60000 bytes', Buffer.concat([encodeV2(null).subarray(0, 12), Buffer.from([0x21, 0x11, 0xea, 0x60])])],
    ];
    for (const [name, bytes] of cases) {
      const r = await exchange(ports.trusted!, [bytes], { waitMs: 1500 });
      expect(r.data.length, name).toBe(0);
      expect(r.closed, name).toBe(true);
      expect(r.elapsedMs, name).toBeLessThan(900); // refused on sight, not at the deadline
    }
    await sleep(200);
    expect(broker.connections.length).toBe(before);
    expect(await metric(admin, 'trusted', 'bad_proxy_header')).toBe(counted + cases.length);
  });

  it('a header that does not finish within clientConnectTimeout is closed at the deadline', async () => {
    const r = await exchange(ports.trusted!, [Buffer.from('PROXY TCP4 203.0.113.9 ')], { waitMs: 3000 });
    expect(r.closed).toBe(true);
    expect(r.data.length).toBe(0);
    expect(r.elapsedMs).toBeGreaterThanOrEqual(900);
    expect(r.elapsedMs).toBeLessThan(2500);
  });

  it('PROXY header then TLS: the declared address and the SNI reach the broker', async () => {
    const s = await connectRaw(ports.trustedTls!);
    s.write(v1Line('192.0.2.44', '192.0.2.1', 41000, 8883));
    const data = await new Promise<Buffer>((resolve, reject) => {
      const t = tls.connect({ socket: s, servername: 'localhost', ca: pki.read(pki.caCert) });
      const timer = setTimeout(() => {
        t.destroy();
        reject(new Error('no CONNACK over TLS'));
      }, 3000);
      t.on('secureConnect', () => t.write(connectPacket({ clientId: 'proxy-then-tls' })));
      t.on('data', (d: Buffer) => {
        clearTimeout(timer);
        t.destroy();
        resolve(d);
      });
      t.on('error', reject);
    });
    expect([...data]).toEqual(CONNACK_OK);
    const c = await waitConnection(broker, 'proxy-then-tls');
    expect(c.header).toMatchObject({ kind: 'ok', addresses: { srcAddress: '192.0.2.44', srcPort: 41000, dstAddress: '192.0.2.1', dstPort: 8883 }, tlvs: { authority: 'localhost', verified: false } });
  });
});

describe('a TLS handshake that fails after a PROXY header', () => {
  it('is logged with the client address the header declared, not the proxy in front', async () => {
    const s = await connectRaw(ports.trustedTls!);
    const closed = collect(s, 3000);
    s.write(Buffer.concat([v1Line('192.0.2.45', '192.0.2.1', 41001, 8883), Buffer.from('this is not a TLS ClientHello\r\n')]));
    expect((await closed).closed).toBe(true);
    const line = await mainLb.waitForLog((l) => l.msg === 'TLS handshake failed' && l.listener === 'trusted-tls', 3000);
    expect(line.client).toBe('192.0.2.45');
  });
});

describe('acceptProxyProtocol that does not include 127.0.0.1', () => {
  it('a PROXY header from 127.0.0.1 is a bad first packet: closed without an answer; plain MQTT passes', async () => {
    const before = broker.connections.length;
    for (const header of [v1Line('203.0.113.7', '127.0.0.1', 1, 2), encodeV2({ family: 'tcp4', srcAddress: '203.0.113.7', srcPort: 1, dstAddress: '127.0.0.1', dstPort: 2 })]) {
      const r = await exchange(ports.untrusted!, [Buffer.concat([header, connectPacket({ clientId: 'spoofer' })])], { waitMs: 1500 });
      expect(r.data.length).toBe(0);
      expect(r.closed).toBe(true);
    }
    await sleep(200);
    expect(broker.connections.length).toBe(before);
    const rejected = (await metric(admin, 'untrusted', 'malformed')) + (await metric(admin, 'untrusted', 'not_connect'));
    expect(rejected).toBe(2);
    const ok = await exchangeFrom(ports.untrusted!, [connectPacket({ clientId: 'honest' })]);
    expect([...ok.data]).toEqual(CONNACK_OK);
    const c = await waitConnection(broker, 'honest');
    expect(c.header).toMatchObject({ kind: 'ok', addresses: { srcAddress: '127.0.0.1', srcPort: ok.localPort } });
  });
});

describe('the declared address is the one limits count', () => {
  it('perSource.maxConnections applies per PROXY-declared source (0x97 for MQTT 5, rc 3 for 3.1.1), freed when it leaves', async () => {
    const [port, admin2] = [await freePort(), await freePort()];
    const yaml = lbYaml({
      listeners: [{ name: 'nlb', port, extra: '    acceptProxyProtocol: [127.0.0.1/32]\n' }],
      admin: admin2,
      servers: [{ name: 'fake', port: broker.port }],
      pool: '    sendProxyProtocol: v2\n',
      health: { type: 'none' },
      limits: '  clientConnectTimeout: 2s\n  perSource: { maxConnections: 1 }\n',
    });
    const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin2}/readyz` });
    const hold = await connectRaw(port);
    hold.write(Buffer.concat([v1Line('198.51.100.1', '192.0.2.1', 1000, 1883), connectPacket({ clientId: 'src1-a' })]));
    await waitConnection(broker, 'src1-a');
    const other = await exchange(port, [Buffer.concat([v1Line('198.51.100.2', '192.0.2.1', 1000, 1883), connectPacket({ clientId: 'src2' })])], { waitMs: 800 });
    expect([...other.data]).toEqual(CONNACK_OK);
    const same5 = await exchange(port, [Buffer.concat([v1Line('198.51.100.1', '192.0.2.1', 1001, 1883), connectPacket({ clientId: 'src1-b', protocolVersion: 5 })])], { waitMs: 1500 });
    expect(parsePackets(same5.data, 5)[0]).toMatchObject({ cmd: 'connack', reasonCode: 0x97 });
    expect(same5.closed).toBe(true);
    const same4 = await exchange(port, [Buffer.concat([v1Line('198.51.100.1', '192.0.2.1', 1002, 1883), connectPacket({ clientId: 'src1-c' })])], { waitMs: 1500 });
    expect([...same4.data]).toEqual([0x20, 0x02, 0x00, 0x03]);
    hold.destroy();
    await sleep(300);
    const again = await exchange(port, [Buffer.concat([v1Line('198.51.100.1', '192.0.2.1', 1003, 1883), connectPacket({ clientId: 'src1-d' })])], { waitMs: 800 });
    expect([...again.data]).toEqual(CONNACK_OK);
    expect(await metric(admin2, 'nlb', 'source_full')).toBe(2);
    await lb.stop();
  });
});
