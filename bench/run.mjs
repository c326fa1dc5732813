#!/usr/bin/env node
/**
 * npm run bench [-- --quick] : mqtt-lb against HAProxy and the broker itself, same machine, same broker,
 * interleaved trials. See bench/README.md for what is measured and how to read the output.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { installCleanupHooks, startMosquitto, startMqttLb, startHaproxy, haproxyAvailable, LoadGen, REPO, delay, buildConnGen, setServerHost } from './lib/procs.mjs';
import { connectionRate, messageRate, latency, heldMemory } from './lib/tests.mjs';
import { summarize, printTable } from './lib/report.mjs';
import { loadAverage } from './lib/system.mjs';

const PRESETS = {
  quick: {
    trials: 3,
    connClients: 2000,
    tpWarmupMs: 400,
    tpMeasureMs: 1500,
    latWarmupMs: 500,
    latMeasureMs: 2000,
    rssTrials: 1,
    rssConnections: 8000,
    rssSteps: 2,
  },
  full: {
    trials: 5,
    connClients: 4000,
    tpWarmupMs: 700,
    tpMeasureMs: 3000,
    latWarmupMs: 1000,
    latMeasureMs: 4000,
    rssTrials: 3,
    rssConnections: 8000,
    rssSteps: 4,
  },
};

const COMMON = {
  procs: 2, // load generator processes
  connConcurrency: 50, // connects in flight per generator process
  // Windowed QoS 0: per generator process `pairs` publisher/subscriber pairs, each publisher keeps at most
  // `window` messages in flight (sent, not yet received by its subscriber) and writes `batch` per write.
  tp64: { payloadSize: 64, pairs: 4, window: 512, batch: 16 },
  tp16k: { payloadSize: 16384, pairs: 2, window: 32, batch: 2 },
  latRate: 10_000,
  latPublishers: 4,
  rssWarmup: 200,
  rssSettleMs: 1000,
  mqttLevel: 4, // the clients' MQTT protocol level (--mqtt)
};

const TESTS = ['connRate', 'msgRate64', 'msgRate16k', 'latency', 'heldMemory'];

/**
 * mqtt-lb targets: `mqtt-lb` (workers: 1, as shipped), `mqtt-lb-wN` (workers: N, NODE_CLUSTER_SCHED_POLICY=rr:
 * node:cluster's round robin in the primary) and `mqtt-lb-wN-kernel` (workers: N, NODE_CLUSTER_SCHED_POLICY=none,
 * mqtt-lb's default with workers: the kernel spreads connections over the workers' shared listening socket).
 * Process accounting (CPU, RSS, fds) covers the primary and its workers.
 */
const LB_TARGET = /^mqtt-lb(?:-w(\d+)(-kernel)?|-(defaults))?$/;

function isLbTarget(name) {
  return LB_TARGET.test(name);
}

function lbStartOptions(base, name) {
  const v = lbVariant(name);
  return { ...base, ...v, env: { ...base.env, ...v.env } };
}

function lbVariant(name) {
  const m = LB_TARGET.exec(name);
  const workers = m?.[1] === undefined ? 1 : Number(m[1]);
  const env = m?.[1] === undefined ? {} : { NODE_CLUSTER_SCHED_POLICY: m[2] === undefined ? 'rr' : 'none' };
  return { workers, name, env, minimal: m?.[3] !== undefined };
}

const USAGE = `usage: node bench/run.mjs [--quick] [--trials N] [--targets direct,mqtt-lb,haproxy,mqtt-lb-w2,mqtt-lb-w2-kernel,mqtt-lb-defaults]
                         [--tests ${TESTS.join(',')}] [--procs N] [--connections N] [--out FILE]
                         [--lb-node-args "--max-semi-space-size=2"] [--lb-env KEY=VALUE]... [--lb-cli path/to/cli.js]
                         [--conn-gen c|node] [--server-host NAME] [--mqtt 3.1.1|5]
  --quick        ~1.5 min: 3 trials, shorter windows, one memory trial
  (default)      full run, ~5.5 min: 5 trials, 8,000 held connections
  --lb-node-args node flags for the mqtt-lb process, replacing the launcher's (default: bin/mqtt-lb's own)
  --lb-env       environment for the mqtt-lb process only, e.g. GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456
  --lb-cli       another build's cli.js to measure, started with plain node (default: bin/mqtt-lb of this checkout)
  --targets      mqtt-lb-defaults: mqtt-lb with a config that names only a listener, a pool and its servers
                 (MQTT health checks, log level info, default caps and warm-up)
  --conn-gen     connection-rate clients: c (bench/conngen.c, built with the system's cc; the default when one
                 exists) or node (bench/loadgen.mjs)
  --server-host  how mqtt-lb's and HAProxy's configs name the brokers (default 127.0.0.1; e.g. localhost)
  --mqtt         the clients' protocol: 3.1.1 (default) or 5 (MQTT 5.0, empty property lists), every test
`;

function parseArgs(argv) {
  const o = { mode: 'full', targets: null, tests: TESTS, out: null, overrides: {}, lbNodeArgs: null, lbEnv: {}, lbCli: null, connGen: 'c', serverHost: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--quick':
        o.mode = 'quick';
        break;
      case '--full':
        o.mode = 'full';
        break;
      case '--trials':
        o.overrides.trials = Number(next());
        break;
      case '--procs':
        o.overrides.procs = Number(next());
        break;
      case '--connections':
        o.overrides.rssConnections = Number(next());
        break;
      case '--targets':
        o.targets = next().split(',');
        break;
      case '--tests':
        o.tests = next().split(',');
        for (const t of o.tests) if (!TESTS.includes(t)) throw new Error(`unknown test ${t}`);
        break;
      case '--out':
        o.out = next();
        break;
      case '--lb-node-args':
        o.lbNodeArgs = next().split(/\s+/).filter(Boolean);
        break;
      case '--lb-env': {
        const kv = next();
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new Error('--lb-env needs KEY=VALUE');
        o.lbEnv[kv.slice(0, eq)] = kv.slice(eq + 1);
        break;
      }
      case '--lb-cli':
        o.lbCli = next();
        break;
      case '--server-host':
        o.serverHost = next();
        break;
      case '--mqtt': {
        const v = next();
        if (v !== '3.1.1' && v !== '4' && v !== '5') throw new Error('--mqtt is 3.1.1 or 5');
        o.overrides.mqttLevel = v === '5' ? 5 : 4;
        break;
      }
      case '--conn-gen':
        o.connGen = next();
        if (o.connGen !== 'c' && o.connGen !== 'node') throw new Error('--conn-gen is c or node');
        break;
      case '-h':
      case '--help':
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a}\n${USAGE}`);
    }
  }
  return o;
}

function versionOf(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0].trim();
  } catch (err) {
    return (err.stdout ?? '').split('\n')[0].trim() || null;
  }
}

const log = (s) => process.stderr.write(s + '\n');

function fmtResult(test, r) {
  switch (test) {
    case 'connRate':
      return `${Math.round(r.connPerSec)} conn/s (p50 ${r.connectP50Ms?.toFixed(2)} ms)`;
    case 'msgRate64':
    case 'msgRate16k':
      return `${Math.round(r.msgPerSec)} msg/s, target ${r.targetCores.toFixed(2)} cores, broker ${r.brokerCores.toFixed(2)}, loadgen ${r.loadgenCores.toFixed(2)}, others ${r.foreignCores.toFixed(2)}`;
    case 'latency':
      return `p50 ${r.p50Ms?.toFixed(3)} ms, p99 ${r.p99Ms?.toFixed(3)} ms`;
    case 'heldMemory':
      return `${r.kibPerConn?.toFixed(2)} KiB/conn (slope ${r.slopeKibPerConn?.toFixed(2)}), idle ${(r.idleRssKiB / 1024).toFixed(1)} MiB, ${r.held} held`;
    default:
      return JSON.stringify(r);
  }
}

/** The upper median of `f` over `rows`, finite values only; NaN when there are none. */
function upperMedian(rows, f) {
  const v = rows.map(f).filter(Number.isFinite).sort((a, b) => a - b);
  return v.length === 0 ? NaN : v[v.length >> 1];
}

/**
 * Is the load generator the bottleneck? Against the broker directly, with the same settings, the broker (one
 * thread) should be the saturated process: about one core busy while the generator still has room. If other
 * jobs took the machine, neither saturates and the check is inconclusive.
 */
function printGeneratorCheck(records) {
  const conn = records.filter((r) => r.test === 'connRate' && r.target === 'direct').map((r) => r.result);
  if (conn.length > 0) {
    const med = (f) => upperMedian(conn, f);
    // The broker's CPU is read only while connections are set up, which the C generator's hold makes possible.
    const broker = med((r) => r.brokerSetupCpuUsPerConn ?? NaN);
    const gen = med((r) => r.loadgenCpuUsPerConn);
    const kind = conn[0].generator === 'c' ? 'C generator' : 'Node generator';
    const verdict = Number.isFinite(broker) ? (gen < broker ? 'the generator costs less per connection than the broker' : 'the generator costs more per connection than the broker: it may be the limit') : '';
    process.stdout.write(
      `load generator check (connRate, direct, ${kind}): generator ${gen.toFixed(1)} µs/conn` +
        (Number.isFinite(broker) ? `, broker ${broker.toFixed(1)} µs/conn during setup: ${verdict}` : '') +
        '\n',
    );
  }
  for (const test of ['msgRate64', 'msgRate16k']) {
    const direct = records.filter((r) => r.test === test && r.target === 'direct').map((r) => r.result);
    if (direct.length === 0) continue;
    const med = (f) => upperMedian(direct, f);
    const brokerCores = med((r) => r.brokerCores);
    const genCores = med((r) => r.loadgenCores);
    const foreign = med((r) => r.foreignCores);
    let verdict;
    if (brokerCores >= 0.9) verdict = 'broker-bound: the generator is not the limit';
    else if (foreign > 0.2) verdict = 'inconclusive: other jobs used the machine';
    else verdict = 'broker below one core: the generator may be the limit';
    process.stdout.write(
      `load generator check (${test}, direct): broker ${brokerCores.toFixed(2)} cores (${med((r) => r.brokerCpuUsPerMsg).toFixed(1)} µs/msg), ` +
        `generator ${genCores.toFixed(2)} cores (${med((r) => r.loadgenCpuUsPerMsg).toFixed(1)} µs/msg): ${verdict}\n`,
    );
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const opts = { ...COMMON, ...PRESETS[args.mode], ...args.overrides };
  installCleanupHooks();
  if (args.serverHost !== null) setServerHost(args.serverHost);
  const hasHaproxy = haproxyAvailable();
  const targets = args.targets ?? ['direct', 'mqtt-lb', ...(hasHaproxy ? ['haproxy'] : [])];
  for (const t of targets) if (t !== 'direct' && t !== 'haproxy' && !isLbTarget(t)) throw new Error(`unknown target ${t}`);
  if (targets.includes('haproxy') && !hasHaproxy) throw new Error('haproxy is not installed');
  if (!hasHaproxy) log('bench: haproxy not installed: comparing mqtt-lb with the broker only');
  const heldPerProc = Math.ceil(opts.rssConnections / opts.procs);
  if (heldPerProc > 9000) log(`bench: warning: ${heldPerProc} held connections per load generator process is near the open-file limit; use --procs`);

  const warnings = [];
  const warn = (s) => {
    warnings.push(s);
    log(`bench: warning: ${s}`);
  };
  const started = new Date();
  const meta = {
    started: started.toISOString(),
    mode: args.mode,
    node: process.version,
    mosquitto: versionOf('/usr/sbin/mosquitto', ['-h']),
    haproxy: hasHaproxy ? versionOf('haproxy', ['-v']) : null,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? null,
    memGiB: Math.round(totalmem() / 2 ** 30),
    loadAverageStart: loadAverage(),
    opts,
    targets,
    tests: args.tests,
    serverHost: args.serverHost ?? '127.0.0.1',
  };
  log(`bench: ${args.mode} mode, MQTT ${opts.mqttLevel === 5 ? '5.0' : '3.1.1'} clients, targets ${targets.join(', ')}, ${opts.trials} trials, ${opts.procs} load generator processes; load average ${meta.loadAverageStart?.join(' ')}`);

  const lbOptions = { nodeArgs: args.lbNodeArgs, env: args.lbEnv, ...(args.lbCli !== null ? { cli: args.lbCli } : {}) };
  meta.lbNodeArgs = args.lbNodeArgs;
  meta.lbCli = args.lbCli;
  meta.lbEnv = args.lbEnv;
  const records = [];
  const gens = Array.from({ length: opts.procs }, (_, i) => new LoadGen(i));
  const connGen = args.tests.includes('connRate') && args.connGen === 'c' ? buildConnGen() : null;
  meta.connGenerator = connGen !== null ? 'c' : 'node';
  if (args.tests.includes('connRate')) log(`bench: connection rate clients: ${connGen !== null ? 'C generator (bench/conngen.c)' : 'Node generator (bench/loadgen.mjs)'}`);
  const steady = args.tests.filter((t) => t !== 'heldMemory');

  if (steady.length > 0) {
    const broker = await startMosquitto();
    const live = { direct: broker };
    for (const name of targets) if (isLbTarget(name)) live[name] = await startMqttLb([broker], lbStartOptions(lbOptions, name));
    if (targets.includes('haproxy')) live.haproxy = await startHaproxy([broker]);
    const ctx = { opts, gens, broker, warn, connGen };
    const run = {
      connRate: (t, trial) => connectionRate(ctx, t, trial),
      msgRate64: (t, trial) => messageRate(ctx, t, trial, opts.tp64),
      msgRate16k: (t, trial) => messageRate(ctx, t, trial, opts.tp16k),
      latency: (t, trial) => latency(ctx, t, trial),
    };
    // Warm-up (not recorded): JIT, pools and socket buffers of every process reach their working state.
    log('bench: warm-up');
    for (const name of targets) {
      const t = { ...live[name], name };
      await connectionRate({ ...ctx, opts: { ...opts, connClients: 500 } }, t, -1);
      await messageRate({ ...ctx, opts: { ...opts, tpWarmupMs: 200, tpMeasureMs: 500 } }, t, -1, opts.tp64);
    }
    for (let trial = 0; trial < opts.trials; trial++) {
      for (const test of steady) {
        // Rotate the order every trial: no target always runs first (or right after the heaviest one).
        const order = targets.map((_, i) => targets[(i + trial) % targets.length]);
        for (const name of order) {
          const t = { ...live[name], name };
          const result = await run[test](t, trial);
          records.push({ test, target: name, trial, result });
          log(`[${trial + 1}/${opts.trials}] ${test.padEnd(10)} ${name.padEnd(8)} ${fmtResult(test, result)}`);
        }
      }
    }
    for (const name of targets) if (name !== 'direct' && live[name] !== undefined) await live[name].stop();
    await broker.stop();
  }

  if (args.tests.includes('heldMemory')) {
    for (let trial = 0; trial < opts.rssTrials; trial++) {
      const order = targets.map((_, i) => targets[(i + trial) % targets.length]);
      for (const name of order) {
        // Fresh processes: RSS a process once grew and kept would hide (or inflate) the per-connection cost. For
        // the same reason without the warm-up at start (src/warm-up.ts), whose heap the held sessions would fill.
        const broker = await startMosquitto();
        let target = broker;
        try {
          if (isLbTarget(name)) target = await startMqttLb([broker], { ...lbStartOptions(lbOptions, name), warmUp: 0 });
          if (name === 'haproxy') target = await startHaproxy([broker]);
          const ctx = { opts, gens, broker, warn };
          const result = await heldMemory(ctx, { ...target, name }, trial);
          records.push({ test: 'heldMemory', target: name, trial, result });
          log(`[${trial + 1}/${opts.rssTrials}] heldMemory ${name.padEnd(8)} ${fmtResult('heldMemory', result)}`);
        } finally {
          if (target !== broker) await target.stop();
          await broker.stop();
        }
      }
    }
  }

  for (const g of gens) await g.stop();
  meta.loadAverageEnd = loadAverage();
  meta.finished = new Date().toISOString();
  meta.durationSeconds = (Date.now() - started.getTime()) / 1000;

  const summary = summarize(records, targets);
  process.stdout.write('\n');
  printTable(summary, targets);
  const foreign = records.map((r) => r.result.foreignCores).filter((x) => Number.isFinite(x));
  foreign.sort((a, b) => a - b);
  const foreignMedian = foreign.length > 0 ? foreign[foreign.length >> 1] : null;
  meta.foreignCoresMedian = foreignMedian;
  if (foreignMedian !== null) {
    process.stdout.write(`other processes used a median ${foreignMedian.toFixed(2)} of ${meta.cpus} cores during measurements`);
    process.stdout.write(foreignMedian > 0.1 ? ' (busy machine: expect more noise)\n' : '\n');
  }
  printGeneratorCheck(records);
  if (warnings.length > 0) process.stdout.write(`${warnings.length} warning(s), see the JSON\n`);

  const outDir = join(REPO, 'bench', 'results');
  const out = args.out ?? join(outDir, `${args.mode}-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  mkdirSync(outDir, { recursive: true });
  const json = JSON.stringify({ meta, summary, records, warnings }, null, 2);
  writeFileSync(out, json);
  writeFileSync(join(outDir, 'latest.json'), json);
  process.stdout.write(`results: ${out} (${meta.durationSeconds.toFixed(0)} s)\n`);
}

main().catch((err) => {
  log(`bench: ${err.stack ?? err.message}`);
  process.exit(1);
});
