#!/usr/bin/env node
/**
 * A reconnect storm through `limits.acceptRate` (bench/README.md, "Session 12"). `--clients` clients connect at
 * once through mqtt-lb (acceptRate 200/s, acceptQueue 1000, clientConnectTimeout 10s) to one mosquitto. Each one
 * that has no CONNACK after `--give-up-ms` closes its socket (FIN), as a device's connect timeout does, and tries
 * again after 1 to 3 s, at most 12 attempts. Prints how many connected, in how long, how many attempts and
 * refusals there were, and how many CONNECTs reached the broker (mqtt_lb_connections_total{outcome="proxied"}).
 *
 *   node bench/storm.mjs [--clients 2000] [--give-up-ms 2000] [--lb-cli path/to/cli.js]
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { HOST, installCleanupHooks, startMosquitto, startMqttLb } from './lib/procs.mjs';

const { values } = parseArgs({ options: { clients: { type: 'string', default: '2000' }, 'give-up-ms': { type: 'string', default: '2000' }, 'lb-cli': { type: 'string' } } });
const CLIENTS = Number(values.clients);
const GIVE_UP_MS = Number(values['give-up-ms']);
const ATTEMPTS = 12;

function connectPacket(clientId) {
  const str = (s) => {
    const b = Buffer.from(s);
    return Buffer.concat([Buffer.from([b.length >> 8, b.length & 255]), b]);
  };
  const body = Buffer.concat([str('MQTT'), Buffer.from([4, 0x02, 0, 60]), str(clientId)]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

/** One attempt: 'ok', 'refused' (a CONNACK with a code), 'gave-up' (our FIN), or 'closed' (by the LB). */
function attempt(port, clientId, held) {
  return new Promise((resolve) => {
    const s = net.connect(port, HOST);
    let settled = false;
    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const timer = setTimeout(() => {
      s.end();
      finish('gave-up');
    }, GIVE_UP_MS);
    s.on('error', () => finish('closed'));
    s.on('close', () => finish('closed'));
    s.on('data', (d) => {
      if (d[0] !== 0x20) return;
      if (d[3] === 0) {
        held.push(s);
        finish('ok');
      } else {
        s.destroy();
        finish('refused');
      }
    });
    s.write(connectPacket(clientId));
  });
}

installCleanupHooks();
const broker = await startMosquitto();
const lb = await startMqttLb([broker], { cli: values['lb-cli'] ?? null, limits: '  acceptRate: 200\n  acceptQueue: 1000\n  clientConnectTimeout: 10s\n' });
const held = [];
const counts = { connected: 0, gaveUpForGood: 0, attempts: 0, refusals: 0 };
const startedAt = performance.now();
await Promise.all(
  Array.from({ length: CLIENTS }, async (_, i) => {
    for (let a = 0; a < ATTEMPTS; a++) {
      counts.attempts++;
      const outcome = await attempt(lb.port, `storm-${i}`, held);
      if (outcome === 'ok') {
        counts.connected++;
        return;
      }
      if (outcome === 'refused') counts.refusals++;
      await new Promise((r) => setTimeout(r, 1000 + Math.random() * 2000));
    }
    counts.gaveUpForGood++;
  }),
);
const seconds = (performance.now() - startedAt) / 1000;
const metrics = await (await fetch(`http://${HOST}:${lb.adminPort}/metrics`)).text();
const proxied = Number(/^mqtt_lb_connections_total\{listener="bench",outcome="proxied"\} (\d+)/m.exec(metrics)?.[1] ?? NaN);
console.log(JSON.stringify({ clients: CLIENTS, giveUpMs: GIVE_UP_MS, ...counts, seconds: Number(seconds.toFixed(1)), connectsAtBroker: proxied }));
for (const s of held) s.destroy();
await lb.stop();
await broker.stop();
process.exit(0);
