#!/usr/bin/env node
/**
 * MQTT-level client probe for the netns tests with the REAL mqtt-lb: every `intervalMs`, a NEW TCP connection
 * to host:port carrying an MQTT 3.1.1 CONNECT (clean session); the probe succeeds when a CONNACK arrives
 * within `timeoutMs` (abandoned after that, so a SYN towards a stale MAC never waits for the kernel's 1 s
 * retransmit). The answer is the CONNACK return code: "rc0" accepted, "rc3" server unavailable, ...
 * A probe that reached a broker sends DISCONNECT before closing [MQTT-3.14.4-1], so the broker drops the
 * session quietly.
 *
 *   node mqtt-vip-prober.mjs HOST PORT [intervalMs=5] [timeoutMs=50] [clientId=vip-probe]
 *
 * Same line protocol as vip-prober.mjs: stdout {"ev":"change",t,ok,who} whenever the answer changes;
 * stdin "report" → {"ev":"report",attempts,oks,maxGapMs,maxGapEndedAt,whoCounts,lastWho} (counters reset);
 * "quit" exits. maxGapMs = the longest time between two consecutive successful probes: the outage.
 */
import net from 'node:net';
import { runProber } from './prober-loop.mjs';

const [host, portS, intervalS, timeoutS, clientIdArg] = process.argv.slice(2);
const port = Number(portS);
const intervalMs = Number(intervalS ?? 5);
const timeoutMs = Number(timeoutS ?? 50);
const clientId = clientIdArg ?? 'vip-probe';

/** CONNECT, MQTT 3.1.1: protocol name "MQTT", level 4, flags 0x02 (clean session), keepalive 10 s. */
function connectPacket(id) {
  const idBytes = Buffer.from(id, 'utf8');
  const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x0a]);
  const payload = Buffer.concat([Buffer.from([idBytes.length >> 8, idBytes.length & 0xff]), idBytes]);
  const remaining = variable.length + payload.length; // < 128: one length byte
  return Buffer.concat([Buffer.from([0x10, remaining]), variable, payload]);
}
const CONNECT = connectPacket(clientId);
const DISCONNECT = Buffer.from([0xe0, 0x00]);


function probe() {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (who) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (who === 'rc0') sock.end(DISCONNECT);
      else sock.destroy();
      sock.on('error', () => {});
      setTimeout(() => sock.destroy(), 200).unref();
      resolve(who);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    sock.on('connect', () => sock.write(CONNECT));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 4) return;
      // CONNACK: 0x20, remaining length 2, flags, return code [MQTT-3.2.2-3]
      finish(buf[0] === 0x20 && buf[1] === 0x02 ? `rc${buf[3]}` : 'bad');
    });
    sock.on('error', () => finish(null));
    sock.on('end', () => finish(null));
  });
}

runProber(probe, intervalMs);
