#!/usr/bin/env node
/**
 * The first connections of a fresh process (bench/README.md, "Session 13"): what a restart or a failover meets.
 * Each round starts every target afresh against one mosquitto, waits until it is ready (for mqtt-lb: /readyz,
 * which is after its warm-up), and at once sets up `--connections` held connections with the C generator
 * (bench/conngen.c, 50 in flight), then releases them and stops the target. Targets, interleaved in each round:
 * mqtt-lb with its default warm-up, mqtt-lb with each `warmUp` of `--warm-ups`, and HAProxy when installed. Prints
 * the medians of connections per second and of the proxy's CPU per connection, and the ratios to HAProxy's.
 *
 *   node bench/cold-start.mjs [--rounds 5] [--connections 2000] [--settle-ms 300] [--warm-ups 0]
 */
import { parseArgs } from 'node:util';
import { HOST, buildConnGen, cpuMs, delay, haproxyAvailable, installCleanupHooks, startConnGen, startHaproxy, startMosquitto, startMqttLb } from './lib/procs.mjs';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '2000' },
    'settle-ms': { type: 'string', default: '300' },
    'warm-ups': { type: 'string', default: '0' },
  },
});
const ROUNDS = Number(values.rounds);
const CONNECTIONS = Number(values.connections);
const SETTLE_MS = Number(values['settle-ms']);

installCleanupHooks();
const bin = buildConnGen();
if (bin === null) {
  process.stderr.write('cold-start: needs a C compiler for bench/conngen.c\n');
  process.exit(2);
}

const targets = [
  { name: 'mqtt-lb', start: (broker) => startMqttLb([broker]) },
  ...values['warm-ups'].split(',').map((n) => ({ name: `mqtt-lb warmUp: ${Number(n)}`, start: (broker) => startMqttLb([broker], { warmUp: Number(n) }) })),
  ...(haproxyAvailable() ? [{ name: 'haproxy', start: (broker) => startHaproxy([broker]) }] : []),
];
const results = new Map(targets.map((t) => [t.name, []]));
const broker = await startMosquitto();
let run = 0;
for (let round = 0; round < ROUNDS; round++) {
  for (const t of targets) {
    const proxy = await t.start(broker);
    // Ready means ready; the pause only lets the readiness poll's own connection close.
    await delay(SETTLE_MS);
    const cpu0 = cpuMs(proxy.pid);
    const gen = startConnGen(bin, { host: HOST, port: proxy.port, count: CONNECTIONS, concurrency: 50, idPrefix: `cold${run++}` });
    const r = await gen.result;
    const cpu = cpuMs(proxy.pid) - cpu0;
    await gen.release();
    await proxy.stop();
    if (r.failed > 0) process.stderr.write(`cold-start: ${t.name}: ${r.failed} connections failed ${JSON.stringify(r.errors)}\n`);
    results.get(t.name).push({ rate: (r.connected / r.elapsedMs) * 1000, usPerConn: (cpu * 1000) / r.connected });
    process.stdout.write(`round ${round + 1} ${t.name}: ${Math.round((r.connected / r.elapsedMs) * 1000)} conn/s, ${((cpu * 1000) / r.connected).toFixed(0)} µs CPU/conn\n`);
    // TIME_WAIT from the last target's connections: let them age a little before the next one.
    await delay(1000);
  }
}
await broker.stop();

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ha = results.get('haproxy');
process.stdout.write(`\nfirst ${CONNECTIONS} held connections of a fresh process, medians of ${ROUNDS} rounds:\n`);
for (const [name, rs] of results) {
  const rate = median(rs.map((r) => r.rate));
  const us = median(rs.map((r) => r.usPerConn));
  const ratio = ha !== undefined && name !== 'haproxy' ? `  ${(rate / median(ha.map((r) => r.rate))).toFixed(2)}x HAProxy's rate` : '';
  process.stdout.write(`  ${name.padEnd(22)} ${String(Math.round(rate)).padStart(6)} conn/s  ${us.toFixed(0).padStart(4)} µs CPU/conn${ratio}\n`);
}
process.exit(0);
