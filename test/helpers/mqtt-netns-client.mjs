#!/usr/bin/env node
/**
 * MQTT client for the netns tests, run INSIDE a namespace (`ip netns exec NS node mqtt-netns-client.mjs '<json>'`):
 * the test process sits in the root namespace and cannot reach the namespaces' addresses. MQTT 3.1.1 over
 * raw sockets (packets built and parsed by mqtt-packet), so every CONNACK flag is visible.
 *
 *   {"op":"tag","brokers":[{name,host,port}]}
 *        publishes a retained `lbtest/whoami` = name on each broker directly (QoS 1, waits for PUBACK)
 *   {"op":"sessions","host","port","clientIds":[...],"clean":false}
 *        per client ID: CONNECT, SUBSCRIBE lbtest/whoami, read the retained tag, DISCONNECT; prints
 *        {"ev":"session",clientId,rc,sessionPresent,broker}
 *   {"op":"connack","host","port","clientId"}
 *        prints {"ev":"connack",hex} with the raw CONNACK bytes
 *   {"op":"hold","host","port","clientIds":[...]}
 *        keeps one persistent session per ID open (PINGREQ every 500 ms; no PINGRESP within 1.5 s = dead); when a
 *        connection ends, reconnects every 20 ms until it succeeds; prints {"ev":"held"|"closed"|"reconnected",
 *        clientId,t,broker,sessionPresent,attempts}; stdin "quit" disconnects and exits. "pingMs": 0 sends no
 *        PINGREQ (the close is then seen only from the LB's FIN or reset).
 * Every op ends with {"ev":"done"} (or {"ev":"error",message} and exit 1); every wait is bounded.
 */
import net from 'node:net';
import { createInterface } from 'node:readline';
import mqttPacket from 'mqtt-packet';

const o = JSON.parse(process.argv[2]);
const out = (x) => process.stdout.write(`${JSON.stringify(x)}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const WHOAMI = 'lbtest/whoami';
// A bound on each wait, not a measurement: 2 s was too tight for a freshly started node process on a loaded
// 2-core machine (a CONNACK wait timed out while the LB answered the long-running prober within milliseconds).
const STEP_TIMEOUT_MS = o.timeoutMs ?? 5000;

/** One MQTT connection: packets queued as they arrive, awaited one predicate at a time. */
class Conn {
  constructor(host, port) {
    this.sock = net.connect({ host, port });
    this.sock.setNoDelay(true);
    this.packets = [];
    this.waiter = null;
    this.closed = false;
    this.raw = Buffer.alloc(0);
    this.parser = mqttPacket.parser({ protocolVersion: 4 });
    this.parser.on('packet', (p) => {
      this.packets.push(p);
      this.poke();
    });
    this.parser.on('error', () => this.sock.destroy());
    this.sock.on('data', (d) => {
      if (this.raw.length < 64) this.raw = Buffer.concat([this.raw, d]).subarray(0, 64);
      this.parser.parse(d);
    });
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.closed = true;
      this.poke();
    });
  }

  poke() {
    if (this.waiter !== null) this.waiter();
  }

  send(packet) {
    if (!this.closed) this.sock.write(mqttPacket.generate(packet));
  }

  /** The first queued or future packet matching `pred`; rejects on close or after `ms`. */
  next(pred, ms = STEP_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`timeout after ${ms} ms`));
      }, ms);
      const check = () => {
        const i = this.packets.findIndex(pred);
        if (i >= 0) {
          clearTimeout(timer);
          this.waiter = null;
          resolve(this.packets.splice(i, 1)[0]);
        } else if (this.closed) {
          clearTimeout(timer);
          this.waiter = null;
          reject(new Error('connection closed'));
        }
      };
      this.waiter = check;
      check();
    });
  }

  destroy() {
    this.sock.destroy();
  }
}

/** CONNECT → CONNACK; with `whoami`, SUBSCRIBE to the tag and read the retained message. */
async function session(host, port, clientId, { clean, keepalive = 10, whoami = true, ms = STEP_TIMEOUT_MS }) {
  const c = new Conn(host, port);
  try {
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean, clientId, keepalive });
    const connack = await c.next((p) => p.cmd === 'connack', ms);
    // [MQTT-3.2.2-2]/[MQTT-3.2.2-3]: session present is 1 only when a session for this client ID was resumed.
    const r = { conn: c, rc: connack.returnCode, sessionPresent: connack.sessionPresent === true, broker: null };
    if (connack.returnCode !== 0 || !whoami) return r;
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: WHOAMI, qos: 0 }] });
    // [MQTT-3.3.1-6]: a new subscription receives the retained message for its topic.
    const pub = await c.next((p) => p.cmd === 'publish' && p.topic === WHOAMI, ms);
    r.broker = pub.payload.toString();
    return r;
  } catch (err) {
    c.destroy();
    throw err;
  }
}

async function tag() {
  for (const b of o.brokers) {
    const c = new Conn(b.host, b.port);
    try {
      c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `tagger-${b.name}`, keepalive: 10 });
      const ack = await c.next((p) => p.cmd === 'connack');
      if (ack.returnCode !== 0) throw new Error(`broker ${b.name}: CONNACK rc ${ack.returnCode}`);
      c.send({ cmd: 'publish', topic: WHOAMI, payload: Buffer.from(b.name), qos: 1, messageId: 1, retain: true });
      await c.next((p) => p.cmd === 'puback');
      c.send({ cmd: 'disconnect' });
      out({ ev: 'tagged', name: b.name });
    } finally {
      c.sock.end();
    }
  }
}

async function sessions() {
  for (const clientId of o.clientIds) {
    const r = await session(o.host, o.port, clientId, { clean: o.clean ?? false });
    out({ ev: 'session', clientId, rc: r.rc, sessionPresent: r.sessionPresent, broker: r.broker });
    r.conn.send({ cmd: 'disconnect' });
    r.conn.sock.end();
  }
}

async function connack() {
  const c = new Conn(o.host, o.port);
  try {
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: o.clientId, keepalive: 10 });
    await c.next((p) => p.cmd === 'connack');
    out({ ev: 'connack', hex: c.raw.subarray(0, 4).toString('hex') });
  } finally {
    c.destroy();
  }
}

async function hold() {
  let quitting = false;
  const held = new Map();
  const RECONNECT_DEADLINE_MS = o.reconnectDeadlineMs ?? 15_000;

  const watch = (clientId, conn) => {
    let lastPong = Date.now();
    // pingMs 0: a quiet client (no PINGREQ, so no packet of its own can meet another host's reset).
    const ping = o.pingMs === 0 ? undefined : setInterval(() => {
      if (conn.closed) return;
      // Keepalive: no PINGRESP within 1.5 s means the path is dead (a FIN that never arrived).
      if (Date.now() - lastPong > 1500) conn.destroy();
      else conn.send({ cmd: 'pingreq' });
    }, o.pingMs ?? 500);
    conn.parser.on('packet', (p) => {
      if (p.cmd === 'pingresp') lastPong = Date.now();
    });
    conn.sock.once('close', () => {
      clearInterval(ping);
      if (quitting) return;
      out({ ev: 'closed', clientId, t: Date.now() });
      void reconnect(clientId);
    });
  };

  const reconnect = async (clientId) => {
    const until = Date.now() + RECONNECT_DEADLINE_MS;
    for (let attempts = 1; Date.now() < until && !quitting; attempts++) {
      try {
        const r = await session(o.host, o.port, clientId, { clean: false, keepalive: 2, ms: 300 });
        if (r.rc !== 0) throw new Error(`rc ${r.rc}`);
        held.set(clientId, r.conn);
        out({ ev: 'reconnected', clientId, t: Date.now(), broker: r.broker, sessionPresent: r.sessionPresent, attempts });
        watch(clientId, r.conn);
        return;
      } catch {
        await sleep(20);
      }
    }
    out({ ev: 'gave_up', clientId, t: Date.now() });
  };

  for (const clientId of o.clientIds) {
    const r = await session(o.host, o.port, clientId, { clean: false, keepalive: 2 });
    if (r.rc !== 0) throw new Error(`${clientId}: CONNACK rc ${r.rc}`);
    held.set(clientId, r.conn);
    out({ ev: 'held', clientId, t: Date.now(), broker: r.broker, sessionPresent: r.sessionPresent });
    watch(clientId, r.conn);
  }
  out({ ev: 'holding' });
  await new Promise((resolve) => {
    const quit = () => {
      quitting = true;
      for (const c of held.values()) {
        c.send({ cmd: 'disconnect' });
        c.sock.end();
      }
      setTimeout(resolve, 100);
    };
    createInterface({ input: process.stdin }).on('line', (l) => {
      if (l.trim() === 'quit') quit();
    });
    process.stdin.on('end', quit);
  });
}

const ops = { tag, sessions, connack, hold };
try {
  if (ops[o.op] === undefined) throw new Error(`unknown op ${o.op}`);
  await ops[o.op]();
  out({ ev: 'done' });
  process.exit(0);
} catch (err) {
  out({ ev: 'error', message: err.message });
  process.exit(1);
}
