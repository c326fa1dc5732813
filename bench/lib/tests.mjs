/**
 * The measurements. Each takes the run context and one target ({ name, host, port, pid }) and returns a flat
 * record of numbers. The target is where clients connect: the broker itself ("direct") or a balancer in
 * front of the same broker. "proxy" CPU below means the target process (the broker itself for direct).
 */
import { cpuMs, rssKiB, openFds, waitFdsAtMost, delay, startConnGen } from './procs.mjs';
import { cpuWindow } from './system.mjs';
import { slope } from './stats.mjs';

/** Splits n into k nearly equal integer parts. */
export function split(n, k) {
  return Array.from({ length: k }, (_, i) => Math.floor(n / k) + (i < n % k ? 1 : 0));
}

function safeCpu(pid) {
  try {
    return cpuMs(pid);
  } catch {
    return NaN;
  }
}

function benchPids(ctx, target) {
  const pids = new Set([ctx.broker.pid, target.pid, ...ctx.gens.map((g) => g.pid)]);
  return [...pids];
}

/** Waits until the target and the broker hold no more descriptors than before the test (sockets closed). */
async function settle(ctx, target, fdsBefore) {
  const okTarget = await waitFdsAtMost(target.pid, fdsBefore.target + 2);
  const okBroker = await waitFdsAtMost(ctx.broker.pid, fdsBefore.broker + 2);
  if (!okTarget || !okBroker) ctx.warn(`${target.name}: sockets still open 15 s after a test (target ${openFds(target.pid)}, broker ${openFds(ctx.broker.pid)})`);
}

function fdsNow(ctx, target) {
  return { target: openFds(target.pid), broker: openFds(ctx.broker.pid) };
}

// ── connection setup rate ──────────────────────────────────────────────────────────────────────────────────

/**
 * `ctx.connGen`: the compiled C generator (procs.mjs buildConnGen), one process per load generator slot;
 * without it the Node generators. Either way the clients are held until all are connected, then released
 * (DISCONNECT, close) outside the timed part.
 */
export async function connectionRate(ctx, target, trial) {
  const o = ctx.opts;
  const fds = fdsNow(ctx, target);
  const counts = split(o.connClients, ctx.gens.length);
  const win = cpuWindow(benchPids(ctx, target));
  const cpu0 = safeCpu(target.pid);
  const broker0 = safeCpu(ctx.broker.pid);
  const idPrefix = (i) => `cr${trial}-${target.name}-${i}`;
  let results;
  let timedCpuMs;
  let brokerTimedCpuMs;
  if (ctx.connGen) {
    const gens = counts.map((count, i) => startConnGen(ctx.connGen, { host: target.host, port: target.port, count, concurrency: o.connConcurrency, idPrefix: idPrefix(i), level: o.mqttLevel }));
    try {
      results = (await Promise.all(gens.map((g) => g.result))).map((r) => ({ ...r, loadgenCpuMs: r.cpuMs }));
      timedCpuMs = safeCpu(target.pid) - cpu0;
      brokerTimedCpuMs = safeCpu(ctx.broker.pid) - broker0;
    } finally {
      await Promise.all(gens.map((g) => g.release()));
    }
  } else {
    results = await Promise.all(
      ctx.gens.map((g, i) => g.call('connect', { host: target.host, port: target.port, count: counts[i], concurrency: o.connConcurrency, idPrefix: idPrefix(i), hold: false, level: o.mqttLevel })),
    );
  }
  await settle(ctx, target, fds);
  const cpu = win.end(ctx.connGen ? results.reduce((a, r) => a + r.loadgenCpuMs, 0) : 0);
  const proxyCpuMs = safeCpu(target.pid) - cpu0;
  const connected = results.reduce((a, r) => a + r.connected, 0);
  const failed = results.reduce((a, r) => a + r.failed, 0);
  if (failed > 0) ctx.warn(`${target.name}: ${failed} connections failed: ${JSON.stringify(results.map((r) => r.errors))}`);
  const elapsedMs = Math.max(...results.map((r) => r.elapsedMs));
  const perConn = (ms) => (connected > 0 && Number.isFinite(ms) ? (ms * 1000) / connected : null);
  return {
    connPerSec: connected / (elapsedMs / 1000),
    connected,
    failed,
    generator: ctx.connGen ? 'c' : 'node',
    connectP50Ms: Math.max(...results.map((r) => r.connectP50Ms ?? NaN)),
    connectP99Ms: Math.max(...results.map((r) => r.connectP99Ms ?? NaN)),
    // Includes the teardown (DISCONNECT, close) after the timed part.
    targetCpuUsPerConn: perConn(proxyCpuMs),
    // Only while connections were being set up (C generator: the teardown comes after the reading).
    targetSetupCpuUsPerConn: ctx.connGen ? perConn(timedCpuMs) : null,
    brokerSetupCpuUsPerConn: ctx.connGen ? perConn(brokerTimedCpuMs) : null,
    loadgenCpuUsPerConn: perConn(results.reduce((a, r) => a + (r.loadgenCpuMs ?? NaN), 0)),
    foreignCores: cpu.foreignCores,
  };
}

// ── windowed QoS 0 message rate ─────────────────────────────────────────────────────────────────────────────

export async function messageRate(ctx, target, trial, spec) {
  const o = ctx.opts;
  const fds = fdsNow(ctx, target);
  const tag = `t${spec.payloadSize}-${trial}-${target.name}`;
  await Promise.all(
    ctx.gens.map((g, i) =>
      g.call('tpSetup', { host: target.host, port: target.port, pairs: spec.pairs, payloadSize: spec.payloadSize, window: spec.window, batch: spec.batch, idPrefix: `${tag}-${i}`, level: o.mqttLevel }),
    ),
  );
  let stops;
  let m0;
  let m1;
  let cpu;
  let t0;
  let t1;
  let b0;
  let b1;
  try {
    await Promise.all(ctx.gens.map((g) => g.call('tpStart')));
    await delay(o.tpWarmupMs);
    const win = cpuWindow(benchPids(ctx, target));
    m0 = await Promise.all(ctx.gens.map((g) => g.call('tpMark')));
    t0 = safeCpu(target.pid);
    b0 = safeCpu(ctx.broker.pid);
    await delay(o.tpMeasureMs);
    m1 = await Promise.all(ctx.gens.map((g) => g.call('tpMark')));
    t1 = safeCpu(target.pid);
    b1 = safeCpu(ctx.broker.pid);
    cpu = win.end();
  } finally {
    stops = await Promise.all(ctx.gens.map((g) => g.call('tpStop')));
  }
  await settle(ctx, target, fds);
  let rate = 0;
  let messages = 0;
  let genCpuMs = 0;
  let seconds = 0;
  for (let i = 0; i < ctx.gens.length; i++) {
    const n = m1[i].received - m0[i].received;
    const s = (m1[i].t - m0[i].t) / 1000;
    rate += n / s;
    messages += n;
    seconds = Math.max(seconds, s);
    genCpuMs += m1[i].cpuMs - m0[i].cpuMs;
  }
  const lost = stops.reduce((a, s) => a + s.lost, 0);
  if (lost > 0) ctx.warn(`${target.name}: ${lost} messages not delivered within 5 s after the ${spec.payloadSize} B run`);
  if (stops.some((s) => s.closedEarly)) ctx.warn(`${target.name}: a connection closed during the ${spec.payloadSize} B run`);
  return {
    msgPerSec: rate,
    mbPerSec: (rate * spec.payloadSize) / 1e6,
    messages,
    lost,
    targetCpuUsPerMsg: messages > 0 ? ((t1 - t0) * 1000) / messages : null,
    targetCores: (t1 - t0) / 1000 / seconds,
    brokerCpuUsPerMsg: messages > 0 ? ((b1 - b0) * 1000) / messages : null,
    brokerCores: (b1 - b0) / 1000 / seconds,
    loadgenCpuUsPerMsg: messages > 0 ? (genCpuMs * 1000) / messages : null,
    loadgenCores: genCpuMs / 1000 / seconds,
    foreignCores: cpu.foreignCores,
  };
}

// ── latency at a fixed rate ────────────────────────────────────────────────────────────────────────────────

export async function latency(ctx, target, trial) {
  const o = ctx.opts;
  const fds = fdsNow(ctx, target);
  const win = cpuWindow(benchPids(ctx, target));
  const c0 = safeCpu(target.pid);
  // One generator process: sender and receiver share a clock (performance.now in the payload).
  const r = await ctx.gens[0].call('latency', {
    host: target.host,
    port: target.port,
    rate: o.latRate,
    publishers: o.latPublishers,
    payloadSize: 64,
    warmupMs: o.latWarmupMs,
    durationMs: o.latMeasureMs,
    idPrefix: `l${trial}-${target.name}`,
    level: o.mqttLevel,
  });
  const c1 = safeCpu(target.pid);
  const cpu = win.end();
  await settle(ctx, target, fds);
  if (r.lost > 0) ctx.warn(`${target.name}: ${r.lost} latency probes not delivered`);
  if (r.sendRate < o.latRate * 0.97) ctx.warn(`${target.name}: latency sender reached only ${Math.round(r.sendRate)} msg/s`);
  return {
    p50Ms: r.p50Ms,
    p90Ms: r.p90Ms,
    p99Ms: r.p99Ms,
    p999Ms: r.p999Ms,
    maxMs: r.maxMs,
    samples: r.samples,
    sendRate: r.sendRate,
    lost: r.lost,
    maxTimerGapMs: r.maxTickGapMs,
    targetCpuUsPerMsg: r.sent > 0 ? ((c1 - c0) * 1000) / r.sent : null,
    foreignCores: cpu.foreignCores,
  };
}

// ── memory per held connection ─────────────────────────────────────────────────────────────────────────────

async function sampleRss(pid) {
  // A few samples over a short settle; the median damps a GC in flight.
  const v = [];
  for (let i = 0; i < 5; i++) {
    await delay(200);
    v.push(rssKiB(pid));
  }
  v.sort((a, b) => a - b);
  return v[2];
}

/**
 * Fresh broker and fresh target (so earlier tests' heap growth cannot hide or inflate the cost), a small
 * warm-up, the idle RSS, then connections held in steps up to `rssConnections`, RSS after each step.
 * Per connection = (RSS at N - idle RSS) / N; the slope across the steps (idle excluded) is reported beside it.
 */
export async function heldMemory(ctx, target, trial) {
  const o = ctx.opts;
  const warm = split(o.rssWarmup, ctx.gens.length);
  await Promise.all(ctx.gens.map((g, i) => g.call('connect', { host: target.host, port: target.port, count: warm[i], concurrency: 20, idPrefix: `mw${trial}-${i}`, hold: false, level: o.mqttLevel })));
  await delay(o.rssSettleMs);
  const idle = await sampleRss(target.pid);
  const xs = [0];
  const ys = [idle];
  let held = 0;
  let failed = 0;
  const stepSize = Math.ceil(o.rssConnections / o.rssSteps);
  try {
    for (let s = 0; s < o.rssSteps; s++) {
      const n = Math.min(stepSize, o.rssConnections - held);
      const counts = split(n, ctx.gens.length);
      const res = await Promise.all(
        ctx.gens.map((g, i) => g.call('connect', { host: target.host, port: target.port, count: counts[i], concurrency: o.connConcurrency, idPrefix: `m${trial}-${s}-${i}`, hold: true, level: o.mqttLevel })),
      );
      held += res.reduce((a, r) => a + r.connected, 0);
      failed += res.reduce((a, r) => a + r.failed, 0);
      await delay(o.rssSettleMs);
      xs.push(held);
      ys.push(await sampleRss(target.pid));
    }
  } finally {
    const rel = await Promise.all(ctx.gens.map((g) => g.call('release')));
    const lost = rel.reduce((a, r) => a + r.lostWhileHeld, 0);
    if (lost > 0) ctx.warn(`${target.name}: ${lost} held connections were closed by the other side`);
  }
  if (failed > 0) ctx.warn(`${target.name}: ${failed} of the held connections failed to connect`);
  const atN = ys[ys.length - 1];
  return {
    kibPerConn: held > 0 ? (atN - idle) / held : null,
    // Marginal cost between the first and the last step (the idle point excluded: the first connections
    // also pay for one-time growth such as the young generation of a JavaScript heap).
    slopeKibPerConn: xs.length > 2 ? slope(xs.slice(1), ys.slice(1)) : null,
    idleRssKiB: idle,
    rssAtNKiB: atN,
    held,
    failed,
    steps: xs.map((x, i) => [x, ys[i]]),
  };
}
