#!/usr/bin/env node
/**
 * The MQTT clients of bench/failover.mjs, run inside the client (or broker) namespace:
 *
 *   node failover-client.mjs '{"op":"probe",...}'   every intervalMs a NEW connection + CONNECT 3.1.1; one JSON
 *                                                   line per probe {t0,t1,r} (r: rc0..rc5, timeout, reset, refused,
 *                                                   closed, bad); stops on stdin "quit" or after maxMs
 *   {"op":"whoami",...}   each client ID connects, subscribes to `whoami` and reads the retained value (the name
 *                         of the broker it reached): {ev:"whoami",map:{id:name|"!reason"}}
 *   {"op":"stream",...}   a new client (distinct ID) every everyMs for count clients, each waiting up to timeoutMs
 *                         for its CONNACK: {ev:"stream",clients:[{i,t0,t1,r}]}
 *   {"op":"raw",...}      one CONNECT (version 4 or 5) and everything that comes back: bytes (hex), how the
 *                         connection ended (fin, reset, timeout, refused) and when
 *   {"op":"retain",...}   publishes a retained message (to a broker directly)
 *
 * Every op ends with {ev:"done"}; every wait is bounded. Times are Date.now() (the bench's clock: same machine).
 */
import net from 'node:net';
import { createInterface } from 'node:readline';
import { packet, utf8Field as utf8 } from './lib/mqtt.mjs';

const op = JSON.parse(process.argv[2] ?? '{}');
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

/** CONNECT, clean session / clean start, keepalive 30 s; MQTT 5 with an empty property list. */
export function connectPacket(clientId, version = 4) {
  const head = Buffer.concat([utf8('MQTT'), Buffer.from([version, 0x02, 0x00, 0x1e])]);
  const props = version === 5 ? Buffer.from([0x00]) : Buffer.alloc(0);
  return packet(0x10, Buffer.concat([head, props, utf8(clientId)]));
}

const subscribePacket = (topic) => packet(0x82, Buffer.concat([Buffer.from([0x00, 0x01]), utf8(topic), Buffer.from([0x00])]));
const publishRetained = (topic, payload) => packet(0x31, Buffer.concat([utf8(topic), Buffer.from(payload, 'utf8')]));
const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** Splits a byte stream into MQTT packets: push(chunk) returns the complete ones {type, flags, body}. */
class PacketReader {
  constructor() {
    this.buf = Buffer.alloc(0);
  }

  push(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    const packets = [];
    for (;;) {
      let len = 0;
      let mult = 1;
      let i = 1;
      for (; ; i++) {
        if (i >= this.buf.length) return packets;
        len += (this.buf[i] & 0x7f) * mult;
        mult *= 128;
        if ((this.buf[i] & 0x80) === 0 || i > 4) break;
      }
      const start = i + 1;
      if (this.buf.length < start + len) return packets;
      packets.push({ type: this.buf[0] >> 4, flags: this.buf[0] & 0x0f, body: this.buf.subarray(start, start + len) });
      this.buf = this.buf.subarray(start + len);
    }
  }
}

/** The reason code of a CONNACK body (3.1.1: byte 1; 5.0: byte 1 too, properties after). */
const connackCode = (body) => (body.length >= 2 ? body[1] : -1);

/**
 * One client session: connects, sends CONNECT, then lets `onPacket(p, sock)` drive; resolves with what
 * `finish(result)` is given, or a failure reason (timeout, reset, refused, closed) after `timeoutMs`.
 */
function session(host, port, clientId, timeoutMs, onPacket, version = 4) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const sock = net.connect({ host, port });
    const reader = new PacketReader();
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (r.ok) sock.end(DISCONNECT);
      else sock.destroy();
      setTimeout(() => sock.destroy(), 300).unref();
      resolve({ t0, t1: Date.now(), ...r });
    };
    const timer = setTimeout(() => finish({ r: 'timeout' }), timeoutMs);
    sock.setNoDelay(true);
    sock.on('connect', () => sock.write(connectPacket(clientId, version)));
    sock.on('data', (d) => {
      for (const p of reader.push(d)) onPacket(p, sock, finish);
    });
    sock.on('error', (err) => finish({ r: err.code === 'ECONNRESET' ? 'reset' : err.code === 'ECONNREFUSED' ? 'refused' : `error:${err.code}` }));
    sock.on('end', () => finish({ r: 'closed' }));
    sock.on('close', () => finish({ r: 'closed' }));
  });
}

/** CONNECT → CONNACK only. */
function connectOnce(host, port, clientId, timeoutMs) {
  return session(host, port, clientId, timeoutMs, (p, _sock, finish) => {
    if (p.type === 2) finish({ ok: connackCode(p.body) === 0, r: `rc${connackCode(p.body)}` });
    else finish({ r: 'bad' });
  });
}

/** CONNECT, SUBSCRIBE whoami, the retained PUBLISH's payload = the broker's name. */
function whoami(host, port, clientId, timeoutMs) {
  return session(host, port, clientId, timeoutMs, (p, sock, finish) => {
    if (p.type === 2) {
      if (connackCode(p.body) !== 0) finish({ r: `rc${connackCode(p.body)}` });
      else sock.write(subscribePacket('whoami'));
    } else if (p.type === 3) {
      const topicLen = p.body.readUInt16BE(0);
      const qos = (p.flags >> 1) & 3;
      const payloadAt = 2 + topicLen + (qos > 0 ? 2 : 0);
      finish({ ok: true, r: 'ok', name: p.body.subarray(payloadAt).toString('utf8') });
    }
  });
}

/** Runs `count` tasks with at most `concurrency` at once. */
async function pool(count, concurrency, task) {
  const results = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await task(i);
      }
    }),
  );
  return results;
}

async function probeLoop() {
  const { host, port, intervalMs = 20, timeoutMs = 150, clientId = 'fo-prober', maxMs = 120_000 } = op;
  let running = true;
  createInterface({ input: process.stdin }).on('line', (l) => {
    if (l.trim() === 'quit') running = false;
  });
  process.stdin.on('end', () => (running = false));
  const until = Date.now() + maxMs;
  const inFlight = new Set();
  // A probe every intervalMs whether or not the last one answered: one stuck on a stale ARP entry must not
  // delay the next (each is abandoned at timeoutMs anyway).
  while (running && Date.now() < until) {
    const p = connectOnce(host, port, clientId, timeoutMs).then((r) => {
      inFlight.delete(p);
      out({ t0: r.t0, t1: r.t1, r: r.r });
    });
    inFlight.add(p);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  await Promise.all(inFlight);
}

async function main() {
  switch (op.op) {
    case 'probe':
      await probeLoop();
      break;
    case 'whoami': {
      const { host, port, prefix, count, concurrency = 20, timeoutMs = 3000 } = op;
      const results = await pool(count, concurrency, (i) => whoami(host, port, `${prefix}${i}`, timeoutMs));
      const map = {};
      results.forEach((r, i) => (map[`${prefix}${i}`] = r.ok ? r.name : `!${r.r}`));
      out({ ev: 'whoami', map });
      break;
    }
    case 'stream': {
      const { host, port, prefix, count, everyMs, timeoutMs = 3000 } = op;
      const started = [];
      for (let i = 0; i < count; i++) {
        started.push(connectOnce(host, port, `${prefix}${i}`, timeoutMs).then((r) => ({ i, t0: r.t0, t1: r.t1, r: r.r })));
        await new Promise((r) => setTimeout(r, everyMs));
      }
      out({ ev: 'stream', clients: await Promise.all(started) });
      break;
    }
    case 'raw': {
      const { host, port, version = 4, clientId = 'fo-raw', timeoutMs = 5000 } = op;
      const r = await new Promise((resolve) => {
        const t0 = Date.now();
        const chunks = [];
        let firstByteAt = null;
        let connectedAt = null;
        const sock = net.connect({ host, port });
        const finish = (end) => {
          clearTimeout(timer);
          sock.destroy();
          resolve({ end, ms: Date.now() - t0, connectMs: connectedAt === null ? null : connectedAt - t0, firstByteMs: firstByteAt === null ? null : firstByteAt - t0, bytes: Buffer.concat(chunks).toString('hex') });
        };
        const timer = setTimeout(() => finish('timeout'), timeoutMs);
        sock.on('connect', () => {
          connectedAt = Date.now();
          sock.write(connectPacket(clientId, version));
        });
        sock.on('data', (d) => {
          if (firstByteAt === null) firstByteAt = Date.now();
          chunks.push(d);
        });
        sock.on('end', () => finish('fin'));
        sock.on('error', (err) => finish(err.code === 'ECONNRESET' ? 'reset' : err.code === 'ECONNREFUSED' ? 'refused' : `error:${err.code}`));
      });
      out({ ev: 'raw', version, ...r });
      break;
    }
    case 'retain': {
      const { host, port, topic, payload } = op;
      const r = await session(host, port, `fo-retain-${payload}`, 3000, (p, sock, finish) => {
        if (p.type !== 2 || connackCode(p.body) !== 0) return finish({ r: 'refused' });
        sock.write(publishRetained(topic, payload));
        finish({ ok: true, r: 'ok' });
      });
      if (!r.ok) throw new Error(`retain on ${host}:${port}: ${r.r}`);
      break;
    }
    default:
      throw new Error(`unknown op ${op.op}`);
  }
  out({ ev: 'done' });
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
