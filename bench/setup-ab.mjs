/**
 * Connection setup, variant against variant: several mqtt-lb builds or flag sets (and HAProxy) in front of one
 * mosquitto, measured in alternating rounds (each round: the C generator sets up COUNT held connections, 50 at a
 * time, CPU per setup read from /proc while they are set up, then they are released), so that what the machine does
 * meanwhile falls on every variant alike. Prints each variant's medians and its per-round ratios to the first one.
 *
 *   VARIANTS='[{"name":"shipped"},{"name":"x","nodeArgs":["--max-semi-space-size=8","--single-threaded-gc","--flag"]},{"name":"haproxy"}]' \
 *     ROUNDS=16 COUNT=8000 node bench/setup-ab.mjs
 *
 * A variant: `name` ("haproxy" for HAProxy), and for mqtt-lb `nodeArgs` (replacing the launcher's flags), `cli` (another
 * build's dist/src/cli.js), `env` or `pool` (lines added to the pool, e.g. "    serverConnackTimeout: 10s"). COUNT held
 * connections cost two descriptors each: keep it under the open-file limit.
 */
import { installCleanupHooks, startMosquitto, startMqttLb, startHaproxy, buildConnGen, startConnGen, cpuMs, openFds, waitFdsAtMost, delay } from './lib/procs.mjs';
import { median } from './lib/stats.mjs';

installCleanupHooks();
const rounds = Number(process.env.ROUNDS ?? 10);
const count = Number(process.env.COUNT ?? 4000);
const variants = JSON.parse(process.env.VARIANTS ?? '[{"name":"shipped"},{"name":"haproxy"}]');
const gen = buildConnGen();
if (gen === null) throw new Error('bench/setup-ab.mjs needs a C compiler for bench/conngen.c');
const broker = await startMosquitto();
const targets = [];
for (const v of variants) {
  const t = v.name === 'haproxy' ? await startHaproxy([broker]) : await startMqttLb([broker], { nodeArgs: v.nodeArgs ?? null, cli: v.cli ?? null, env: v.env ?? {}, pool: v.pool ?? '', name: v.name });
  targets.push({ ...t, variant: v.name });
}
const results = new Map(targets.map((t) => [t.variant, { us: [], rate: [] }]));

async function round(t, r, record) {
  const idle = openFds(t.pid);
  const cpu0 = cpuMs(t.pid);
  const gens = [0, 1].map((i) => startConnGen(gen, { host: t.host, port: t.port, count: Math.floor(count / 2), concurrency: 25, idPrefix: `ab${r}-${t.variant}-${i}-` }));
  const out = await Promise.all(gens.map((g) => g.result));
  const cpu1 = cpuMs(t.pid);
  await Promise.all(gens.map((g) => g.release()));
  await waitFdsAtMost(t.pid, idle + 5);
  await delay(300);
  const connected = out.reduce((a, x) => a + x.connected, 0);
  const elapsedMs = Math.max(...out.map((x) => x.elapsedMs));
  if (record) {
    results.get(t.variant).us.push(((cpu1 - cpu0) * 1000) / connected);
    results.get(t.variant).rate.push(connected / (elapsedMs / 1000));
  }
}

// Two rounds each to warm up (JIT), not recorded; then alternating, the order reversed every other round.
for (const t of targets) for (const r of [-1, -2]) await round(t, r, false);
for (let r = 0; r < rounds; r++) {
  for (const t of r % 2 ? [...targets].reverse() : targets) await round(t, r, true);
  process.stderr.write(`round ${r}: ${targets.map((t) => `${t.variant} ${results.get(t.variant).us.at(-1).toFixed(1)} us ${results.get(t.variant).rate.at(-1).toFixed(0)}/s`).join(' | ')}\n`);
}
const base = results.get(targets[0].variant);
for (const t of targets) {
  const r = results.get(t.variant);
  const cpuRatio = median(r.us.map((u, i) => u / base.us[i]));
  const rateRatio = median(r.rate.map((u, i) => u / base.rate[i]));
  console.log(`${t.variant}: setup CPU ${median(r.us).toFixed(1)} us per connection, ${median(r.rate).toFixed(0)} conn/s; per round vs ${targets[0].variant}: CPU ${cpuRatio.toFixed(3)}x, rate ${rateRatio.toFixed(3)}x`);
}
for (const t of targets) await t.stop();
await broker.stop();
process.exit(0);
