/**
 * Load generator process (forked by run.mjs, driven over IPC). Raw net.Sockets and prebuilt packets: the send
 * path writes immutable Buffers, the receive path counts frames without copying. Several of these processes
 * run side by side so that the generator is never the bottleneck and no process holds more than ~8,000 sockets.
 *
 * Commands (message.cmd), each answered with { id, ok: true, ...result } or { id, ok: false, error }:
 *   connect   { host, port, count, concurrency, idPrefix, hold }  open `count` MQTT sessions, `concurrency` at a time
 *   release   {}                                                  DISCONNECT and close held sessions
 *   tpSetup   { host, port, pairs, payloadSize, window, batch, idPrefix }
 *   tpStart   {} / tpMark {} / tpStop {}                         windowed QoS 0 throughput
 *   latency   { host, port, rate, publishers, payloadSize, warmupMs, durationMs, idPrefix }
 *   exit      {}
 * Each command may carry `level` (4: MQTT 3.1.1, the default; 5: MQTT 5.0, empty property lists): the packets it sends.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { connectPacket, subscribePacket, publishPacket, propertiesLength, DISCONNECT, FrameCounter, PacketReader, PUBLISH_TYPE } from './lib/mqtt.mjs';

const CONNACK_TIMEOUT_MS = 15_000;
const CLOSE_TIMEOUT_MS = 10_000;
const DRAIN_TIMEOUT_MS = 5_000;

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** The MQTT protocol level of the packets sent: the running command's `level` (IPC handler below). */
let level = 4;

/**
 * Resolves with the socket once a CONNACK with return code 0 has arrived.
 * With `fastRead`, the socket reads into one buffer shared by the whole process (net `onread`): no Buffer
 * allocation and no stream machinery per read. Bytes after the CONNACK then go to `sock.onBytes(buf, start,
 * end)`, which must not keep a reference to `buf`.
 */
const SHARED_READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

function mqttConnect(host, port, clientId, { fastRead = false } = {}) {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    let settled = false;
    const onChunk = (buf, start, end) => {
      if (settled) {
        sock.onBytes(buf, start, end);
        return;
      }
      got = Buffer.concat([got, buf.subarray(start, end)]);
      // 20 02 flags rc, or at 5.0 20 03 flags rc 00 (its property list empty: nothing else asked for).
      if (got.length < 2 || got.length < 2 + got[1]) return;
      const connackLength = 2 + got[1];
      settled = true;
      clearTimeout(timer);
      sock.removeAllListeners('close');
      sock.removeAllListeners('error');
      if (got[0] !== 0x20 || got[3] !== 0) {
        sock.destroy();
        reject(new Error(`bad CONNACK ${got.subarray(0, 4).toString('hex')}`));
        return;
      }
      if (got.length > connackLength) sock.onBytes(got, connackLength, got.length);
      resolve(sock);
    };
    const options = { host, port, noDelay: true };
    if (fastRead) options.onread = { buffer: SHARED_READ_BUFFER, callback: (n, buf) => onChunk(buf, 0, n) };
    const sock = net.connect(options);
    // Anything after the CONNACK is unexpected until the caller installs its own handler.
    sock.onBytes = () => {};
    if (!fastRead) {
      sock.on('data', (chunk) => {
        if (settled) return;
        onChunk(chunk, 0, chunk.length);
        if (settled) sock.removeAllListeners('data');
      });
    }
    const timer = setTimeout(() => fail(new Error('CONNACK timeout')), CONNACK_TIMEOUT_MS);
    function fail(err) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    }
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('closed before CONNACK')));
    sock.on('connect', () => sock.write(connectPacket(clientId, level)));
  });
}

function closeGracefully(sock) {
  return new Promise((resolve) => {
    if (sock.destroyed) return resolve();
    const timer = setTimeout(() => {
      sock.destroy();
      resolve();
    }, CLOSE_TIMEOUT_MS);
    sock.on('error', () => {});
    sock.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    sock.resume();
    sock.end(DISCONNECT);
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

// ── connect / hold / release ────────────────────────────────────────────────────────────────────────────────

let held = [];
let heldLost = 0;

async function connectMany({ host, port, count, concurrency, idPrefix, hold }) {
  const latencies = new Float64Array(count);
  let next = 0;
  let ok = 0;
  let failed = 0;
  const errors = new Map();
  const opened = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  async function lane() {
    for (;;) {
      const i = next++;
      if (i >= count) return;
      const s0 = performance.now();
      try {
        const sock = await mqttConnect(host, port, `${idPrefix}-${i}`);
        latencies[ok++] = performance.now() - s0;
        opened.push(sock);
        sock.on('error', () => {});
        sock.on('close', () => {
          if (hold) heldLost++;
        });
      } catch (err) {
        failed++;
        errors.set(err.message, (errors.get(err.message) ?? 0) + 1);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const sorted = latencies.subarray(0, ok).sort();
  const result = {
    connected: ok,
    failed,
    errors: Object.fromEntries(errors),
    elapsedMs,
    connectP50Ms: percentile(sorted, 50),
    connectP99Ms: percentile(sorted, 99),
    loadgenCpuMs: (cpu.user + cpu.system) / 1000,
  };
  if (hold) {
    held.push(...opened);
  } else {
    await Promise.all(opened.map((s) => {
      s.removeAllListeners('close');
      return closeGracefully(s);
    }));
  }
  return result;
}

async function release() {
  const socks = held;
  held = [];
  for (const s of socks) s.removeAllListeners('close');
  const lost = heldLost;
  heldLost = 0;
  await Promise.all(socks.map(closeGracefully));
  return { closed: socks.length, lostWhileHeld: lost };
}

// ── windowed QoS 0 throughput ───────────────────────────────────────────────────────────────────────────────

let tp = null;

async function tpSetup({ host, port, pairs, payloadSize, window, batch, idPrefix }) {
  if (tp !== null) throw new Error('throughput run already set up');
  const state = { pairs: [], running: false, window, batch };
  tp = state;
  const opened = [];
  try {
    await setupPairs(state, opened, { host, port, pairs, payloadSize, batch, idPrefix });
  } catch (err) {
    for (const s of opened) s.destroy();
    tp = null;
    throw err;
  }
  return { pairs: state.pairs.length, packetBytes: state.pairs[0].batchBuf.length / batch };
}

async function setupPairs(state, opened, { host, port, pairs, payloadSize, batch, idPrefix }) {
  const payload = Buffer.alloc(payloadSize, 0x61);
  for (let i = 0; i < pairs; i++) {
    const topic = `bench/${idPrefix}/${i}`;
    const sub = await mqttConnect(host, port, `${idPrefix}-s${i}`, { fastRead: true });
    opened.push(sub);
    const pub = await mqttConnect(host, port, `${idPrefix}-p${i}`);
    opened.push(pub);
    const one = publishPacket(topic, payload, level);
    const batchBuf = Buffer.concat(Array.from({ length: batch }, () => one));
    const pair = { sub, pub, sent: 0, counter: new FrameCounter(), batchBuf, closedEarly: false };
    sub.onBytes = (buf, start, end) => {
      pair.counter.push(buf, start, end);
      if (state.running) pump(state, pair);
    };
    for (const s of [sub, pub]) {
      s.on('error', () => {});
      s.on('close', () => {
        pair.closedEarly = true;
      });
    }
    // Publishers never receive anything at QoS 0; keep reading so a stray packet cannot stall them.
    pub.on('data', () => {});
    sub.write(subscribePacket(1, topic, level));
    const deadline = Date.now() + CONNACK_TIMEOUT_MS;
    while (pair.counter.others < 1) {
      if (Date.now() > deadline || pair.closedEarly) throw new Error('no SUBACK');
      await delay(2);
    }
    state.pairs.push(pair);
  }
}

function pump(state, pair) {
  const limit = state.window - state.batch;
  while (pair.sent - pair.counter.publishes <= limit) {
    pair.pub.write(pair.batchBuf);
    pair.sent += state.batch;
  }
}

function tpStart() {
  tp.running = true;
  for (const p of tp.pairs) pump(tp, p);
  return {};
}

function tpMark() {
  let received = 0;
  let sent = 0;
  for (const p of tp.pairs) {
    received += p.counter.publishes;
    sent += p.sent;
  }
  const cpu = process.cpuUsage();
  return { t: performance.now(), received, sent, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function tpStop() {
  const state = tp;
  state.running = false;
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  const outstanding = () => state.pairs.reduce((a, p) => a + (p.sent - p.counter.publishes), 0);
  while (outstanding() > 0 && Date.now() < deadline) await delay(5);
  const lost = outstanding();
  const closedEarly = state.pairs.some((p) => p.closedEarly);
  await Promise.all(state.pairs.flatMap((p) => [p.sub, p.pub]).map((s) => {
    s.removeAllListeners('close');
    return closeGracefully(s);
  }));
  tp = null;
  return { lost, closedEarly };
}

// ── latency at a fixed rate ─────────────────────────────────────────────────────────────────────────────────

async function latency(args) {
  const opened = [];
  try {
    return await measureLatency(args, opened);
  } finally {
    for (const s of opened) s.destroy();
  }
}

async function measureLatency({ host, port, rate, publishers, payloadSize, warmupMs, durationMs, idPrefix }, opened) {
  const topicBase = `lat/${idPrefix}`;
  const sub = await mqttConnect(host, port, `${idPrefix}-ls`);
  opened.push(sub);
  const pubs = [];
  for (let i = 0; i < publishers; i++) {
    pubs.push(await mqttConnect(host, port, `${idPrefix}-lp${i}`));
    opened.push(pubs[i]);
  }
  for (const s of [sub, ...pubs]) s.on('error', () => {});
  for (const p of pubs) p.on('data', () => {});
  const samples = new Float64Array(Math.ceil((rate * (durationMs + warmupMs)) / 1000) + 1000);
  let nSamples = 0;
  let received = 0;
  let subacked = false;
  let measureFrom = Infinity;
  let measureTo = Infinity;
  const reader = new PacketReader((type, buf, off) => {
    if (type !== PUBLISH_TYPE) {
      subacked = true;
      return;
    }
    const now = performance.now();
    received++;
    const topicLen = buf.readUInt16BE(off);
    const ts = buf.readDoubleLE(off + 2 + topicLen + propertiesLength(level, buf, off + 2 + topicLen));
    if (ts >= measureFrom && ts < measureTo && nSamples < samples.length) samples[nSamples++] = now - ts;
  });
  sub.on('data', (chunk) => reader.push(chunk));
  sub.write(subscribePacket(1, `${topicBase}/+`, level));
  const deadline = Date.now() + CONNACK_TIMEOUT_MS;
  while (!subacked) {
    if (Date.now() > deadline) throw new Error('no SUBACK');
    await delay(2);
  }
  const templates = pubs.map((_, i) => publishPacket(`${topicBase}/${i}`, Buffer.alloc(Math.max(8, payloadSize), 0x62), level));
  const tsOffsets = templates.map((t, i) => t.length - Math.max(8, payloadSize));
  let sent = 0;
  const t0 = performance.now();
  measureFrom = t0 + warmupMs;
  measureTo = measureFrom + durationMs;
  let maxTickGapMs = 0;
  let lastTick = t0;
  const cpu0 = process.cpuUsage();
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now();
      if (now - lastTick > maxTickGapMs) maxTickGapMs = now - lastTick;
      lastTick = now;
      const due = Math.min(Math.floor(((now - t0) * rate) / 1000), Math.floor(((measureTo - t0) * rate) / 1000));
      while (sent < due) {
        const k = sent % pubs.length;
        const pkt = Buffer.allocUnsafe(templates[k].length);
        templates[k].copy(pkt);
        pkt.writeDoubleLE(performance.now(), tsOffsets[k]);
        pubs[k].write(pkt);
        sent++;
      }
      if (now >= measureTo) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  const sendSeconds = (performance.now() - t0) / 1000;
  const drainDeadline = Date.now() + DRAIN_TIMEOUT_MS;
  while (received < sent && Date.now() < drainDeadline) await delay(5);
  const cpu = process.cpuUsage(cpu0);
  await Promise.all([sub, ...pubs].map(closeGracefully));
  const sorted = samples.subarray(0, nSamples).sort();
  return {
    samples: nSamples,
    sent,
    lost: sent - received,
    sendRate: sent / sendSeconds,
    maxTickGapMs,
    p50Ms: percentile(sorted, 50),
    p90Ms: percentile(sorted, 90),
    p99Ms: percentile(sorted, 99),
    p999Ms: percentile(sorted, 99.9),
    maxMs: nSamples > 0 ? sorted[nSamples - 1] : null,
    loadgenCpuMs: (cpu.user + cpu.system) / 1000,
  };
}

// ── IPC ─────────────────────────────────────────────────────────────────────────────────────────────────────

const handlers = { connect: connectMany, release, tpSetup, tpStart, tpMark, tpStop, latency };

process.on('message', async (msg) => {
  if (msg.cmd === 'exit') {
    for (const s of held) s.destroy();
    process.exit(0);
  }
  const handler = handlers[msg.cmd];
  try {
    if (handler === undefined) throw new Error(`unknown command ${msg.cmd}`);
    if (msg.level !== undefined) level = msg.level;
    const result = await handler(msg);
    process.send({ id: msg.id, ok: true, ...result });
  } catch (err) {
    process.send({ id: msg.id, ok: false, error: err.message });
  }
});

// The parent going away (Ctrl-C, crash) must never leave us holding thousands of sockets.
process.on('disconnect', () => process.exit(0));
