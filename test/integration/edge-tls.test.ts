/**
 * TLS at the edge (issue 6): termination with a chain made in the test (openssl), TLS 1.2+ with modern
 * ciphers, mutual TLS accepted and refused, tls.certAsUsername seen by the broker, SNI + CN as PROXY v2
 * TLVs, the handshake inside clientConnectTimeout, and certificates reloaded on SIGHUP without dropping
 * sessions. Runs the built CLI (`npx tsc -p .` first).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import mqttPacket from 'mqtt-packet';
import mqtt from 'mqtt';
import { createTestPki, type TestPki, type CertFiles } from '../helpers/tls-certs.js';
import { lbYaml, type ServerSpec } from '../helpers/lb-config.js';
import { startMosquitto, freePort, type Broker } from '../helpers/mosquitto.js';
import { startProxyAwareBroker, type ProxyAwareBroker } from '../helpers/proxy-server.js';
import { startLb, stopAllLbs, sleep, type LbProcess } from '../helpers/lb.js';
import { connectPacket, connectRaw, parsePackets, exchange } from '../helpers/raw-client.js';

interface TlsOutcome {
  /** The TLS handshake completed on the client side (TLS 1.3 completes before the server checks the client certificate). */
  secure: boolean;
  data: Buffer;
  closed: boolean;
  error: string | null;
  serverCn: string | null;
  protocol: string | null;
  elapsedMs: number;
  /** The TLS session to resume (tls.connect's `session`), once the server sent one. */
  session: Buffer | null;
  /** The handshake resumed the session given in `opts.session`. */
  reused: boolean;
}

/** TLS-connect to the LB, send `bytes` once secure, collect the reply until close, waitMs, or `enough` bytes. */
function tlsExchange(port: number, opts: tls.ConnectionOptions, bytes: Buffer | null, waitMs = 2000, enough = Infinity): Promise<TlsOutcome> {
  const start = Date.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const out: TlsOutcome = { secure: false, data: Buffer.alloc(0), closed: false, error: null, serverCn: null, protocol: null, elapsedMs: 0, session: null, reused: false };
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts });
    let finished = false;
    const done = (closed: boolean): void => {
      if (finished) return;
      finished = true;
      clearTimeout(t);
      out.closed = closed;
      out.data = Buffer.concat(chunks);
      out.elapsedMs = Date.now() - start;
      s.destroy();
      resolve(out);
    };
    const t = setTimeout(() => done(false), waitMs);
    s.on('secureConnect', () => {
      out.secure = true;
      out.protocol = s.getProtocol();
      const cn = s.getPeerCertificate()?.subject?.CN;
      out.serverCn = typeof cn === 'string' ? cn : null;
      out.reused = s.isSessionReused();
      if (bytes !== null) s.write(bytes);
    });
    s.on('session', (session: Buffer) => {
      out.session = session;
    });
    let received = 0;
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      received += d.length;
      if (received >= enough) done(false);
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      out.error ??= e.code ?? e.message;
    });
    s.on('close', () => done(true));
  });
}

/** One TLS listener `edge` (its `tls:` keys given) in front of `server`; TCP probes, debug logs. */
function tlsLbYaml(o: { port: number; admin: number; server: ServerSpec; tls: string; pool?: string; timeout?: string }): string {
  return lbYaml({
    listeners: [{ name: 'edge', port: o.port, tls: o.tls }],
    admin: o.admin,
    servers: [o.server],
    pool: o.pool,
    health: { type: 'tcp', interval: '500ms', timeout: '400ms', rise: 1, fall: 1 },
    limits: `  clientConnectTimeout: ${o.timeout ?? '2s'}\n`,
    log: '  level: debug\n',
  });
}

/** mqtt-lb with the one TLS listener `edge` in front of `server`, started and ready; its ports. */
async function startTlsLb(o: { server: ServerSpec; tls: string; pool?: string; timeout?: string }): Promise<{ port: number; admin: number; lb: LbProcess }> {
  const [port, admin] = [await freePort(), await freePort()];
  const lb = await startLb(tlsLbYaml({ port, admin, ...o }), { waitReady: `http://127.0.0.1:${admin}/readyz` });
  return { port, admin, lb };
}

async function metric(admin: number, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  const m = pattern.exec(text);
  return m === null ? NaN : Number(m[1]);
}

let pki: TestPki;
beforeAll(() => {
  pki = createTestPki();
});
afterAll(async () => {
  await stopAllLbs();
  pki?.cleanup();
});

describe('TLS termination in front of mosquitto', () => {
  let broker: Broker;
  let port: number;
  let admin: number;
  let lb: LbProcess;
  beforeAll(async () => {
    broker = await startMosquitto();
    ({ port, admin, lb } = await startTlsLb({ server: { name: 'm1', port: broker.port }, tls: `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}`, timeout: '1s' }));
  });
  afterAll(async () => {
    await stopAllLbs();
    await broker?.stop();
  });

  it('serves MQTT.js over TLS (server certificate for 127.0.0.1 verified by the client) with QoS 1 round trips', async () => {
    const c = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, { ca: pki.read(pki.caCert), servername: 'localhost', clientId: 'tls-client', reconnectPeriod: 0, connectTimeout: 5000 });
    try {
      const got = new Promise<string>((resolve) => c.on('message', (_t, p) => resolve(p.toString())));
      await c.subscribeAsync('edge/tls', { qos: 1 });
      await c.publishAsync('edge/tls', 'over tls', { qos: 1 });
      expect(await got).toBe('over tls');
    } finally {
      await c.endAsync();
    }
  });

  it('speaks TLS 1.2 and 1.3 only, with AEAD ciphers; TLS 1.1 and CBC suites are refused', async () => {
    const ca = pki.read(pki.caCert);
    const v13 = await tlsExchange(port, { ca }, connectPacket({ clientId: 'v13' }), 2000, 4);
    expect(v13.protocol).toBe('TLSv1.3');
    expect(parsePackets(v13.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    const v12 = await tlsExchange(port, { ca, maxVersion: 'TLSv1.2' }, connectPacket({ clientId: 'v12' }), 2000, 4);
    expect(v12.protocol).toBe('TLSv1.2');
    expect(parsePackets(v12.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    const v11 = await tlsExchange(port, { ca, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }, connectPacket({ clientId: 'v11' }));
    expect(v11.secure).toBe(false);
    expect(v11.data.length).toBe(0);
    const cbc = await tlsExchange(port, { ca, maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA' }, connectPacket({ clientId: 'cbc' }));
    expect(cbc.secure).toBe(false);
    expect(cbc.data.length).toBe(0);
  });

  // Each renegotiation costs the LB a key operation; Node only reports its own limit as an 'error' and keeps the
  // socket open. Refused at the first attempt, before and after the CONNECT; other sessions carry on.
  it('closes a TLS 1.2 client that asks to renegotiate, before or after its CONNECT; other sessions unaffected', async () => {
    const ca = pki.read(pki.caCert);
    const bystander = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, { ca, servername: 'localhost', clientId: 'bystander', reconnectPeriod: 0, connectTimeout: 5000 });
    const handshakeFailures = () => metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/);
    try {
      for (const afterConnect of [false, true]) {
        const failuresBefore = await handshakeFailures();
        const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, maxVersion: 'TLSv1.2' });
        s.on('error', () => {});
        await new Promise<void>((resolve, reject) => {
          s.once('secureConnect', resolve);
          s.once('error', reject);
        });
        const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
        if (afterConnect) {
          const connack = new Promise<Buffer>((resolve) => s.once('data', resolve));
          s.write(connectPacket({ clientId: 'reneg' }));
          expect(parsePackets(await connack)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
        }
        s.renegotiate({}, () => {});
        let timer: NodeJS.Timeout | undefined;
        const outcome = await Promise.race([closed.then(() => 'closed'), new Promise<string>((r) => (timer = setTimeout(() => r('still open'), 3000)))]);
        clearTimeout(timer);
        s.destroy();
        expect(outcome, afterConnect ? 'after CONNECT' : 'before CONNECT').toBe('closed');
        // Before its CONNECT, a TLS failure as any other (a TLS audit: neither counted nor logged); after, a client error.
        await sleep(100);
        expect(await handshakeFailures(), afterConnect ? 'after CONNECT' : 'before CONNECT').toBe((Number.isNaN(failuresBefore) ? 0 : failuresBefore) + (afterConnect ? 0 : 1));
      }
      await bystander.publishAsync('edge/tls', 'still here', { qos: 1 });
    } finally {
      await bystander.endAsync();
    }
  });

  it('closes a plaintext CONNECT on the TLS port without an answer, counted tls_handshake', async () => {
    const before = await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/);
    const r = await exchange(port, [connectPacket({ clientId: 'plain' })], { waitMs: 2000 });
    expect(r.closed).toBe(true);
    expect(r.data.length).toBe(0);
    await sleep(100);
    expect(await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/)).toBe((Number.isNaN(before) ? 0 : before) + 1);
  });

  it('a TCP connect-and-close without a byte (a health check, a port scan) counts as no rejection, as on a plain listener', async () => {
    const rejected = () => metric(admin, /mqtt_lb_connections_total\{listener="edge",outcome="rejected"\} (\d+)/);
    const before = await rejected();
    for (let i = 0; i < 5; i++) {
      const s = await connectRaw(port);
      await new Promise<void>((resolve) => {
        s.once('close', () => resolve());
        s.end();
      });
    }
    await sleep(200);
    expect(await rejected()).toBe(before);
  });

  it('counts the handshake inside clientConnectTimeout: silent or stalled handshakes are closed at the deadline', async () => {
    const mark = lb.logs.length;
    // TCP connected, nothing sent.
    const silent = await exchange(port, [], { waitMs: 4000 });
    expect(silent.closed).toBe(true);
    expect(silent.elapsedMs).toBeGreaterThanOrEqual(900);
    expect(silent.elapsedMs).toBeLessThan(2500);
    // The first 5 bytes of a ClientHello record, then nothing.
    const stalled = await exchange(port, [Buffer.from('1603010200', 'hex')], { waitMs: 4000 });
    expect(stalled.closed).toBe(true);
    expect(stalled.elapsedMs).toBeLessThan(2500);
    // A TLS client that completes the handshake but sends its CONNECT late: the deadline still counts from accept.
    const slowConnect = await new Promise<{ closed: boolean; ms: number }>((resolve) => {
      const start = Date.now();
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pki.read(pki.caCert) });
      const t = setTimeout(() => {
        s.destroy();
        resolve({ closed: false, ms: Date.now() - start });
      }, 4000);
      s.on('error', () => {});
      s.on('close', () => {
        clearTimeout(t);
        resolve({ closed: true, ms: Date.now() - start });
      });
    });
    expect(slowConnect.closed).toBe(true);
    expect(slowConnect.ms).toBeLessThan(2500);
    await sleep(100);
    expect(await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="timeout"\} (\d+)/)).toBeGreaterThanOrEqual(3);
    // Said as the timeouts they are, with what was still awaited; an audit saw them logged as `TLS handshake failed`
    // ECONNRESET (the close was ours).
    const lines = lb.logs.slice(mark);
    const timeouts = lines.filter((l) => l.msg === 'connect rejected' && l.reason === 'timeout' && l.awaiting === 'TLS handshake');
    expect(timeouts).toHaveLength(2);
    // With the client's port: the address alone does not tell one connection of a host from another.
    for (const l of timeouts) expect(l.port).toBeGreaterThan(0);
    expect(lines.filter((l) => l.msg === 'TLS handshake failed')).toEqual([]);
  });

  it('a TCP connect-and-close with no byte (a load balancer\'s TCP check) is no failed handshake, in the log either', async () => {
    const mark = lb.logs.length;
    for (let i = 0; i < 3; i++) {
      const s = await connectRaw(port);
      s.destroy();
    }
    await sleep(300);
    expect(lb.logs.slice(mark).filter((l) => l.msg === 'TLS handshake failed' || l.msg === 'connect rejected')).toEqual([]);
  });
});

describe('mutual TLS with certAsUsername and PROXY v2 TLVs', () => {
  let broker: ProxyAwareBroker;
  let port: number;
  let admin: number;
  let device: CertFiles;
  let rogue: CertFiles;
  let lb: LbProcess;
  beforeAll(async () => {
    device = pki.issueClient('device-42');
    rogue = pki.issueRogueClient('device-42');
    broker = await startProxyAwareBroker();
    ({ port, admin, lb } = await startTlsLb({
      server: { name: 'fake', port: broker.port },
      tls: `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}\n      ca: ${pki.caCert}\n      requestCert: true\n      certAsUsername: true`,
      pool: '    sendProxyProtocol: v2\n',
    }));
  });
  afterAll(async () => {
    await stopAllLbs();
    await broker?.close();
  });

  it('a verified client certificate: the broker sees its CN as username (password kept) and SNI + CN in the v2 header', async () => {
    const ca = pki.read(pki.caCert);
    const auth = { ca, cert: pki.read(device.cert), key: pki.read(device.key) };
    const before = broker.connections.length;
    const r1 = await tlsExchange(port, auth, connectPacket({ clientId: 'dev-a', username: 'i-am-admin', password: 'secret' }), 2000, 4);
    expect(parsePackets(r1.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    // MQTT 5, without any username in the CONNECT: the flag is set and the CN added.
    const r2 = await tlsExchange(port, auth, connectPacket({ clientId: 'dev-b', protocolVersion: 5 }), 2000, 5);
    expect(parsePackets(r2.data, 5)[0]).toMatchObject({ cmd: 'connack', reasonCode: 0 });
    await broker.waitForConnections(before + 2);
    const [a, b] = broker.connections.slice(before);
    const pa = parsePackets(a!.connect)[0] as mqttPacket.IConnectPacket;
    expect(pa.clientId).toBe('dev-a');
    expect(pa.username).toBe('device-42');
    expect(pa.password?.toString()).toBe('secret');
    // The re-encoded packet is a valid CONNECT of the right length (mqtt-packet consumed it whole).
    expect(a!.connect.length).toBe(connectPacket({ clientId: 'dev-a', username: 'device-42', password: 'secret' }).length);
    const pb = parsePackets(b!.connect, 5)[0] as mqttPacket.IConnectPacket;
    expect(pb.clientId).toBe('dev-b');
    expect(pb.username).toBe('device-42');
    expect(pb.protocolVersion).toBe(5);
    for (const c of [a!, b!]) {
      expect(c.header).toMatchObject({ kind: 'ok', local: false });
      if (c.header.kind !== 'ok') throw new Error('no header');
      expect(c.header.addresses).toMatchObject({ family: 'tcp4', srcAddress: '127.0.0.1', dstAddress: '127.0.0.1', dstPort: port });
      expect(c.header.tlvs).toMatchObject({ authority: 'localhost', sslCn: 'device-42', verified: true, sslVersion: 'TLSv1.3' });
    }
  });

  it('refuses a client without a certificate and one whose certificate another CA signed; nothing reaches the broker', async () => {
    const ca = pki.read(pki.caCert);
    const before = broker.connections.length;
    const rejectedBefore = await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/);
    const none = await tlsExchange(port, { ca }, connectPacket({ clientId: 'anon', username: 'device-42' }));
    expect(none.data.length).toBe(0);
    expect(none.closed).toBe(true);
    const bad = await tlsExchange(port, { ca, cert: pki.read(rogue.cert), key: pki.read(rogue.key) }, connectPacket({ clientId: 'rogue' }));
    expect(bad.data.length).toBe(0);
    expect(bad.closed).toBe(true);
    // The same over TLS 1.2, where the server refuses the certificate inside the handshake.
    const bad12 = await tlsExchange(port, { ca, cert: pki.read(rogue.cert), key: pki.read(rogue.key), maxVersion: 'TLSv1.2' }, connectPacket({ clientId: 'rogue' }));
    expect(bad12.secure).toBe(false);
    expect(bad12.closed).toBe(true);
    await sleep(300);
    expect(broker.connections.length).toBe(before);
    const rejectedAfter = await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/);
    expect(rejectedAfter - (Number.isNaN(rejectedBefore) ? 0 : rejectedBefore)).toBe(3);
    // The debug line of each failed handshake names the client, also once the refusal has closed its socket.
    const failed = lb.logs.filter((l) => l.msg === 'TLS handshake failed');
    expect(failed.length).toBeGreaterThan(0);
    for (const l of failed) {
      expect(l.client).toBe('127.0.0.1');
      expect(l.port).toBeGreaterThan(0);
    }
  });

  it('a resumed TLS 1.2 session: the v2 SSL TLV says its certificate came with the session (CERT_SESS), not on this connection (CERT_CONN)', async () => {
    const ca = pki.read(pki.caCert);
    const auth = { ca, cert: pki.read(device.cert), key: pki.read(device.key), maxVersion: 'TLSv1.2' as const };
    const before = broker.connections.length;
    const full = await tlsExchange(port, auth, connectPacket({ clientId: 'dev-full' }), 2000, 4);
    expect(parsePackets(full.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    expect(full.session).not.toBeNull();
    const resumed = await tlsExchange(port, { ...auth, session: full.session! }, connectPacket({ clientId: 'dev-resumed' }), 2000, 4);
    expect(resumed.reused).toBe(true);
    expect(parsePackets(resumed.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    await broker.waitForConnections(before + 2);
    const [a, b] = broker.connections.slice(before);
    for (const c of [a!, b!]) if (c.header.kind !== 'ok') throw new Error('no header');
    // PP2_CLIENT_SSL 0x01 | PP2_CLIENT_CERT_CONN 0x02 | PP2_CLIENT_CERT_SESS 0x04 (PROXY protocol §2.2.6)
    expect(a!.header.kind === 'ok' && a!.header.tlvs).toMatchObject({ sslClient: 0x07, verified: true, sslCn: 'device-42' });
    expect(b!.header.kind === 'ok' && b!.header.tlvs).toMatchObject({ sslClient: 0x05, verified: true, sslCn: 'device-42' });
    // The resumed session's certificate still names the client.
    expect((parsePackets(b!.connect)[0] as mqttPacket.IConnectPacket).username).toBe('device-42');
  });

  it('a client certificate too large for a TLS 1.3 session ticket: the handshake the client saw succeed fails, counted and logged as a failed handshake', async () => {
    // ~4,000 names make a certificate of ~70 KB, more than a session ticket holds: OpenSSL fails writing the ticket,
    // after the server's side of a TLS 1.3 handshake is done.
    const names = Array.from({ length: 4000 }, (_, i) => `DNS:h${i}.device.example`).join(',');
    const big = pki.issueClient('device-big', `subjectAltName=${names}\n`);
    const ca = pki.read(pki.caCert);
    const before = broker.connections.length;
    const rejectedBefore = await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/);
    const linesBefore = lb.logs.length;
    const r = await tlsExchange(port, { ca, cert: pki.read(big.cert), key: pki.read(big.key), maxVersion: 'TLSv1.3' }, connectPacket({ clientId: 'big-cert' }), 3000);
    expect(r.secure).toBe(true);
    expect(r.data.length).toBe(0);
    expect(r.closed).toBe(true);
    await sleep(300);
    expect(broker.connections.length).toBe(before);
    const rejectedAfter = await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/);
    expect(rejectedAfter - (Number.isNaN(rejectedBefore) ? 0 : rejectedBefore)).toBe(1);
    const failed = lb.logs.slice(linesBefore).filter((l) => l.msg === 'TLS handshake failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ client: '127.0.0.1', code: 'ERR_SSL_INTERNAL_ERROR' });
    expect(failed[0]!.port).toBeGreaterThan(0);
  });

  it('a CONNECT whose username grows past maxConnectBytes is closed, not forwarded (the length is checked again)', async () => {
    // maxConnectBytes default 262144: a CONNECT just under it, whose rewrite (longer username) goes over.
    const ca = pki.read(pki.caCert);
    const auth = { ca, cert: pki.read(device.cert), key: pki.read(device.key) };
    const before = broker.connections.length;
    const password = 'x'.repeat(65_000);
    const props = { userProperties: { pad: ['p'.repeat(60_000), 'q'.repeat(60_000), 'r'.repeat(60_000)] } };
    let pkt = connectPacket({ clientId: 'big', username: 'u', password, protocolVersion: 5, properties: props });
    const room = 262_144 - pkt.length - 2;
    expect(room).toBeGreaterThan(0);
    pkt = connectPacket({ clientId: 'big' + 'i'.repeat(room), username: 'u', password, protocolVersion: 5, properties: props });
    expect(pkt.length).toBeLessThanOrEqual(262_144);
    const r = await tlsExchange(port, auth, pkt, 3000);
    expect(r.data.length).toBe(0);
    expect(r.closed).toBe(true);
    await sleep(200);
    expect(broker.connections.length).toBe(before);
  });
});

/**
 * Runs `test` with a mosquitto and a server certificate ('server-one') of the LB's own, at `<name>.crt`/`.key`, so
 * re-issuing it disturbs no other test; both are removed afterwards, also on failure.
 */
async function withOwnCertificate(name: string, test: (broker: Broker, certPath: string, keyPath: string) => Promise<void>): Promise<void> {
  const broker = await startMosquitto();
  const certPath = `${pki.dir}/${name}.crt`;
  const keyPath = `${pki.dir}/${name}.key`;
  pki.issueServer('server-one', certPath, keyPath);
  try {
    await test(broker, certPath, keyPath);
  } finally {
    rmSync(certPath, { force: true });
    rmSync(keyPath, { force: true });
    await broker.stop();
  }
}

// HAProxy's `verify optional`, mosquitto's `require_certificate false` with a `cafile` (a client audit found no way to
// say it).
describe('requestCert: optional', () => {
  let broker: ProxyAwareBroker;
  let port: number;
  let admin: number;
  beforeAll(async () => {
    broker = await startProxyAwareBroker();
    ({ port, admin } = await startTlsLb({
      server: { name: 'fake', port: broker.port },
      tls: `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}\n      ca: ${pki.caCert}\n      requestCert: optional`,
      pool: '    sendProxyProtocol: v2\n',
    }));
  });
  afterAll(async () => {
    await stopAllLbs();
    await broker?.close();
  });

  it('a client without a certificate and one with a verified certificate pass (the v2 header says which); one that does not verify is refused', async () => {
    const ca = pki.read(pki.caCert);
    const device = pki.issueClient('device-7');
    const rogue = pki.issueRogueClient('device-7');
    const before = broker.connections.length;
    const none = await tlsExchange(port, { ca }, connectPacket({ clientId: 'anon', username: 'u' }), 2000, 4);
    expect(parsePackets(none.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    const good = await tlsExchange(port, { ca, cert: pki.read(device.cert), key: pki.read(device.key) }, connectPacket({ clientId: 'dev-7', username: 'u' }), 2000, 4);
    expect(parsePackets(good.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    await broker.waitForConnections(before + 2);
    const [a, b] = broker.connections.slice(before);
    // The username is the client's own: certAsUsername needs `requestCert: true`.
    expect((parsePackets(a!.connect)[0] as mqttPacket.IConnectPacket).username).toBe('u');
    expect((parsePackets(b!.connect)[0] as mqttPacket.IConnectPacket).username).toBe('u');
    if (a!.header.kind !== 'ok' || b!.header.kind !== 'ok') throw new Error('no header');
    expect(a!.header.tlvs).toMatchObject({ verified: false });
    expect(a!.header.tlvs.sslCn).toBeUndefined();
    expect(b!.header.tlvs).toMatchObject({ sslCn: 'device-7', verified: true });

    const rejectedBefore = await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/);
    const bad = await tlsExchange(port, { ca, cert: pki.read(rogue.cert), key: pki.read(rogue.key) }, connectPacket({ clientId: 'rogue' }));
    expect(bad.data.length).toBe(0);
    expect(bad.closed).toBe(true);
    const bad12 = await tlsExchange(port, { ca, cert: pki.read(rogue.cert), key: pki.read(rogue.key), maxVersion: 'TLSv1.2' }, connectPacket({ clientId: 'rogue' }));
    expect(bad12.data.length).toBe(0);
    expect(bad12.closed).toBe(true);
    await sleep(300);
    expect(broker.connections.length).toBe(before + 2);
    const rejectedAfter = await metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="tls_handshake"\} (\d+)/);
    expect(rejectedAfter - (Number.isNaN(rejectedBefore) ? 0 : rejectedBefore)).toBe(2);
  });
});

describe('certificates reloaded on SIGHUP', () => {
  it('new connections get the new certificate, established TLS sessions carry on; a broken key keeps the old one', async () => {
    await withOwnCertificate('reload', async (broker, certPath, keyPath) => {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(
        tlsLbYaml({ port, admin, server: { name: 'm1', port: broker.port }, tls: `      cert: ${certPath}\n      key: ${keyPath}` }),
        { waitReady: `http://127.0.0.1:${admin}/readyz` },
      );
      const ca = pki.read(pki.caCert);
      const first = await tlsExchange(port, { ca }, null, 300);
      expect(first.serverCn).toBe('server-one');

      const opts = { ca, servername: 'localhost', reconnectPeriod: 0, connectTimeout: 5000 };
      const old = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, { ...opts, clientId: 'old-session' });
      let oldClosed = false;
      old.on('close', () => (oldClosed = true));
      const received: string[] = [];
      old.on('message', (_t, p) => received.push(p.toString()));
      await old.subscribeAsync('edge/reload', { qos: 1 });

      pki.issueServer('server-two', certPath, keyPath);
      lb.reload();
      await lb.waitForLog((l) => l.msg === 'config reloaded');
      const second = await tlsExchange(port, { ca }, null, 300);
      expect(second.serverCn).toBe('server-two');

      // A broken key on the next reload: the running certificate stays in service.
      writeFileSync(keyPath, 'not a key\n');
      lb.reload();
      await lb.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('config reload') && l.msg !== 'config reloaded');
      const third = await tlsExchange(port, { ca }, null, 300);
      expect(third.serverCn).toBe('server-two');

      const fresh = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, { ...opts, clientId: 'new-session' });
      await fresh.publishAsync('edge/reload', 'after reload', { qos: 1 });
      await old.publishAsync('edge/reload', 'old still talks', { qos: 1 });
      const until = Date.now() + 5000;
      while (received.length < 2 && Date.now() < until) await sleep(20);
      expect(received.sort()).toEqual(['after reload', 'old still talks']);
      expect(oldClosed).toBe(false);
      await fresh.endAsync();
      await old.endAsync();
      expect(await lb.stop()).toBe(0);
    });
  });
});

describe('a restarted worker (workers: 2)', () => {
  it('serves the certificate of the running config, not the files as they are now on disk', async () => {
    await withOwnCertificate('restart', async (broker, certPath, keyPath) => {
      const [port, admin] = [await freePort(), await freePort()];
      const yaml = tlsLbYaml({ port, admin, server: { name: 'm1', port: broker.port }, tls: `      cert: ${certPath}\n      key: ${keyPath}` }) + 'workers: 2\n';
      // Round robin: each worker takes every other connection, so both are asked below.
      const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz`, env: { NODE_CLUSTER_SCHED_POLICY: 'rr' } });
      const ca = pki.read(pki.caCert);
      pki.issueServer('server-two', certPath, keyPath);
      lb.reload();
      await lb.waitForLog((l) => l.msg === 'config reloaded');
      // The files change with no reload: a broken certificate now, a good third one later. Neither runs.
      writeFileSync(certPath, 'not a certificate\n');
      const [victim] = execFileSync('pgrep', ['-P', String(lb.proc.pid)], { encoding: 'utf8' }).trim().split('\n').map(Number);
      process.kill(victim!, 'SIGKILL');
      await lb.waitForLog((l) => l.msg === 'worker restarted' || l.msg === 'worker restart failed', 15_000);
      expect(lb.logs.map((l) => l.msg)).not.toContain('worker restart failed');
      pki.issueServer('server-three', certPath, keyPath);
      const seen: Array<string | null> = [];
      for (let i = 0; i < 12; i++) seen.push((await tlsExchange(port, { ca }, null, 300)).serverCn);
      expect(seen).toEqual(Array(12).fill('server-two'));
      expect(await lb.stop()).toBe(0);
    });
  });
});

describe('clientConnectTimeout changed by a reload', () => {
  it.each([
    { name: 'one process', extra: '' },
    { name: 'workers: 2', extra: 'workers: 2\n' },
  ])('a raised timeout applies to TLS handshakes after the reload, not the old one ($name)', async ({ extra }) => {
    const broker = await startMosquitto();
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const yamlWith = (timeout: string): string =>
        tlsLbYaml({ port, admin, server: { name: 'm1', port: broker.port }, tls: `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}`, timeout }) + extra;
      const lb = await startLb(yamlWith('1s'), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      lb.writeConfig(yamlWith('3s'));
      lb.reload();
      await lb.waitForLog((l) => l.msg === 'config reloaded');
      // The first 5 bytes of a ClientHello record, then nothing: closed by the new deadline, 3 s from accept.
      // (Before the fix the TLS server kept the old value + 1 s, its backstop: 2 s, counted tls_handshake.)
      const stalled = await Promise.all([0, 1, 2, 3].map(() => exchange(port, [Buffer.from('1603010200', 'hex')], { waitMs: 8000 })));
      for (const s of stalled) {
        expect(s.closed).toBe(true);
        expect(s.elapsedMs).toBeGreaterThanOrEqual(2800);
        expect(s.elapsedMs).toBeLessThan(6000);
      }
      // With workers the primary's counters follow the workers' reports: look for a bounded while.
      const timeouts = (): Promise<number> => metric(admin, /mqtt_lb_connect_rejected_total\{listener="edge",reason="timeout"\} (\d+)/);
      const until = Date.now() + 5000;
      while ((await timeouts()) !== 4 && Date.now() < until) await sleep(100);
      expect(await timeouts()).toBe(4);
      expect(await lb.stop()).toBe(0);
    } finally {
      await broker.stop();
    }
  });
});

describe('a broker that resets a TLS client session', () => {
  // The TLS client side is a tls.TLSSocket, whose handle is not a TCP handle: net.Socket#resetAndDestroy()
  // throws ERR_INVALID_HANDLE_TYPE on it, so passing a broker's reset on must not call it there.
  it('the client is closed, the LB keeps running and serving, and each session counts as failed', async () => {
    const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
    const CONNECT = connectPacket({ clientId: 'tls-reset' });
    // Answers the CONNECT, then resets the connection.
    const resetting = net.createServer((s) => {
      s.on('error', () => {});
      let got = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got < CONNECT.length) return;
        s.write(CONNACK);
        setTimeout(() => s.resetAndDestroy(), 100);
      });
    });
    await new Promise<void>((r) => resetting.listen(0, '127.0.0.1', () => r()));
    try {
      const brokerPort = (resetting.address() as net.AddressInfo).port;
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(tlsLbYaml({ port, admin, server: { name: 'r1', port: brokerPort }, tls: `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}` }), {
        waitReady: `http://127.0.0.1:${admin}/readyz`,
      });
      const ca = pki.read(pki.caCert);
      for (let i = 0; i < 3; i++) {
        const out = await tlsExchange(port, { ca }, CONNECT, 5000);
        expect(out.data.subarray(0, 4), `session ${i}: the CONNACK came through`).toEqual(CONNACK);
        expect(out.closed, `session ${i}: closed after the broker's reset`).toBe(true);
      }
      // Still running and serving.
      expect(await Promise.race([lb.exited.then(() => 'exited'), sleep(300).then(() => 'running')])).toBe('running');
      expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
      expect(await metric(admin, /^mqtt_lb_connections_total\{listener="edge",outcome="failed"\} (\d+)/m)).toBe(3);
    } finally {
      await stopAllLbs();
      await new Promise<void>((r) => resetting.close(() => r()));
    }
  });
});
