#!/usr/bin/env node
/**
 * A soak: mqtt-lb (the installed launcher and its flags) in front of one mosquitto for `--minutes`, under steady
 * connection churn (rounds of `--clients` clients from the C generator: CONNECT, held until all are in, then
 * DISCONNECT and close; the client IDs repeat every four rounds, 3.1.1 and 5.0 in turn) and a steady message stream
 * (2,000 msg/s QoS 0, 64 B, new publisher and subscriber sessions every 20 s). Every `--sample-s` seconds it reads
 * the balancer's RSS, open descriptors and its /metrics (V8 heap in use, external memory, sessions), and two heap
 * snapshots (after the warm-up and at the end, with no session open: each is taken after a full collection) say
 * what the live heap gained. Prints the samples, the slopes after the warm-up in MiB an hour and the snapshot
 * difference by constructor; writes JSON to bench/results/soak-*.json. bench/README.md "Soak" says how to read it.
 *
 *   node bench/soak.mjs [--minutes 30] [--warmup-minutes 5] [--clients 2000] [--sample-s 30]
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO, LoadGen, buildConnGen, delay, installCleanupHooks, openFds, rssKiB, startConnGen, startMosquitto, startMqttLb } from './lib/procs.mjs';
import { slope } from './lib/stats.mjs';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    'warmup-minutes': { type: 'string', default: '5' },
    clients: { type: 'string', default: '2000' },
    'sample-s': { type: 'string', default: '30' },
  },
});
const MINUTES = Number(values.minutes);
const WARMUP_MINUTES = Number(values['warmup-minutes']);
const CLIENTS = Number(values.clients);
const SAMPLE_MS = Number(values['sample-s']) * 1000;
const SNAPSHOT_TIMEOUT_MS = 120_000;
const MIB = 1024 * 1024;

installCleanupHooks();
const diagDir = mkdtempSync(join(tmpdir(), 'mqtt-lb-soak-'));
process.on('exit', () => rmSync(diagDir, { recursive: true, force: true }));

/** The balancer's /metrics as name{labels} -> value, summed over label sets per name. */
async function metrics(lb) {
  const res = await fetch(`http://${lb.host}:${lb.adminPort}/metrics`);
  const text = await res.text();
  const sums = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? (\S+)/.exec(line);
    if (m === null) continue;
    sums.set(m[1], (sums.get(m[1]) ?? 0) + Number(m[2]));
  }
  return sums;
}

/** Asks the balancer for a heap snapshot (--heapsnapshot-signal: a full collection first) and waits for the file. */
async function heapSnapshot(lb) {
  const before = new Set(readdirSync(diagDir));
  process.kill(lb.pid, 'SIGUSR2');
  const until = Date.now() + SNAPSHOT_TIMEOUT_MS;
  let lastSize = -1;
  while (Date.now() < until) {
    await delay(500);
    const fresh = readdirSync(diagDir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (fresh === undefined) continue;
    const size = statSync(join(diagDir, fresh)).size;
    if (size > 0 && size === lastSize) return summarizeSnapshot(join(diagDir, fresh));
    lastSize = size;
  }
  throw new Error(`no heap snapshot within ${SNAPSHOT_TIMEOUT_MS} ms`);
}

/** Self sizes and counts of a V8 heap snapshot's nodes, by type and constructor name. */
function summarizeSnapshot(file) {
  const snap = JSON.parse(readFileSync(file, 'utf8'));
  rmSync(file, { force: true });
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const [typeAt, nameAt, sizeAt] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  const byKey = new Map();
  let total = 0;
  let count = 0;
  for (let i = 0; i < snap.nodes.length; i += fields.length) {
    const type = types[snap.nodes[i + typeAt]];
    const name = type === 'object' || type === 'closure' || type === 'native' ? snap.strings[snap.nodes[i + nameAt]] : '';
    const key = `${type}${name === '' ? '' : ` ${name}`}`;
    const size = snap.nodes[i + sizeAt];
    const e = byKey.get(key) ?? { count: 0, bytes: 0 };
    e.count++;
    e.bytes += size;
    byKey.set(key, e);
    total += size;
    count++;
  }
  return { totalBytes: total, nodes: count, byKey };
}

function snapshotDiff(a, b, top = 12) {
  const keys = new Set([...a.byKey.keys(), ...b.byKey.keys()]);
  const rows = [];
  for (const k of keys) {
    const x = a.byKey.get(k) ?? { count: 0, bytes: 0 };
    const y = b.byKey.get(k) ?? { count: 0, bytes: 0 };
    if (x.bytes !== y.bytes || x.count !== y.count) rows.push({ key: k, countDelta: y.count - x.count, bytesDelta: y.bytes - x.bytes });
  }
  rows.sort((p, q) => Math.abs(q.bytesDelta) - Math.abs(p.bytesDelta));
  return rows.slice(0, top);
}

async function churn(lb, bin, gen, stopAt, counters) {
  for (let round = 0; Date.now() < stopAt; round++) {
    const args = { host: lb.host, port: lb.port, count: CLIENTS, concurrency: 50, idPrefix: `soak${round % 4}-`, level: round % 2 === 0 ? 4 : 5 };
    if (bin !== null) {
      const run = startConnGen(bin, args);
      const r = await run.result;
      counters.connected += r.connected ?? 0;
      counters.failed += r.failed ?? 0;
      await delay(1000);
      await run.release();
    } else {
      const r = await gen.call('connect', { ...args, hold: true });
      counters.connected += r.connected;
      counters.failed += r.failed;
      await delay(1000);
      await gen.call('release');
    }
    counters.rounds++;
    await delay(500);
    await gate.pass();
  }
}

async function messages(lb, gen, stopAt, counters) {
  for (let n = 0; Date.now() + 21_000 < stopAt; n++) {
    const r = await gen.call('latency', { host: lb.host, port: lb.port, rate: 2000, publishers: 4, payloadSize: 64, warmupMs: 0, durationMs: 20_000, idPrefix: `soaklat${n % 8}` });
    counters.messages += r.sent - r.lost;
    counters.lost += r.lost;
    counters.latencyRounds++;
    await gate.pass();
  }
}

/**
 * Lets the sampler stop the load between rounds: a heap snapshot is taken with no session open, so that the two
 * snapshots compare like with like (sessions held at one and not the other would hide what stays).
 */
class Gate {
  constructor(parties) {
    this.parties = parties;
    this.waiting = 0;
    this.closedBy = null;
    this.onAllWaiting = null;
    this.reopen = null;
  }

  /** Called by a load loop between rounds: waits while the gate is closed. */
  async pass() {
    if (this.closedBy === null) return;
    this.waiting++;
    if (this.waiting === this.parties) this.onAllWaiting?.();
    await this.closedBy;
    this.waiting--;
  }

  /** Resolves once every load loop waits at the gate (or has ended: `done()`). */
  close() {
    this.closedBy = new Promise((r) => (this.reopen = r));
    return new Promise((r) => {
      this.onAllWaiting = r;
      if (this.waiting === this.parties) r();
    });
  }

  /** A load loop has ended: it no longer takes part. */
  done() {
    this.parties--;
    if (this.closedBy !== null && this.waiting === this.parties) this.onAllWaiting?.();
  }

  open() {
    const reopen = this.reopen;
    this.closedBy = null;
    this.onAllWaiting = null;
    reopen?.();
  }
}
const gate = new Gate(2);

async function sample(lb, t0) {
  const m = await metrics(lb);
  return {
    minute: (Date.now() - t0) / 60_000,
    rssMiB: rssKiB(lb.pid) / 1024,
    heapUsedMiB: (m.get('nodejs_heap_size_used_bytes') ?? NaN) / MIB,
    externalMiB: (m.get('nodejs_external_memory_bytes') ?? NaN) / MIB,
    inUseMiB: (m.get('mqtt_lb_memory_in_use_bytes') ?? NaN) / MIB,
    sessions: m.get('mqtt_lb_connections_active') ?? NaN,
    fds: openFds(lb.pid),
  };
}

/** Waits (bounded) until the balancer holds no session: the last clients' closes have been seen. */
async function quiet(lb) {
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    if ((await metrics(lb)).get('mqtt_lb_connections_active') === 0) return;
    await delay(250);
  }
  process.stdout.write('        (sessions still open after 30 s)\n');
}

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');

async function main() {
  const broker = await startMosquitto();
  const lb = await startMqttLb([broker], { nodeArgs: ['--max-semi-space-size=8', '--single-threaded-gc', '--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${diagDir}`], maxConnections: 9000 });
  const bin = buildConnGen();
  const churnGen = bin === null ? new LoadGen(0) : null;
  const msgGen = new LoadGen(1);
  const t0 = Date.now();
  const stopAt = t0 + MINUTES * 60_000;
  const counters = { rounds: 0, connected: 0, failed: 0, messages: 0, lost: 0, latencyRounds: 0 };
  const samples = [];
  let warmSnapshot = null;
  let snapshotAt = Infinity;
  let stopped = false;
  process.stdout.write(`soak: ${MINUTES} min, warm-up ${WARMUP_MINUTES} min, ${CLIENTS} clients a round, ${bin === null ? 'Node' : 'C'} generator\n`);
  process.stdout.write('minute   rss MiB  heap MiB  ext MiB  in-use MiB  sessions  fds  rounds\n');
  const sampler = (async () => {
    while (!stopped) {
      const s = await sample(lb, t0);
      s.rounds = counters.rounds;
      samples.push(s);
      process.stdout.write(`${fmt(s.minute).padStart(6)}  ${fmt(s.rssMiB).padStart(8)}  ${fmt(s.heapUsedMiB).padStart(8)}  ${fmt(s.externalMiB).padStart(7)}  ${fmt(s.inUseMiB).padStart(10)}  ${String(s.sessions).padStart(8)}  ${String(s.fds).padStart(4)}  ${counters.rounds}\n`);
      if (warmSnapshot === null && s.minute >= WARMUP_MINUTES) {
        // The load paused between rounds, every session closed: then the snapshot, whose own memory (it is built in
        // the balancer's process) raises the RSS once; the slopes are fitted to the samples after it.
        await gate.close();
        await quiet(lb);
        warmSnapshot = await heapSnapshot(lb);
        snapshotAt = (Date.now() - t0) / 60_000;
        gate.open();
        process.stdout.write(`        heap snapshot after the warm-up: ${fmt(warmSnapshot.totalBytes / MIB, 2)} MiB live, ${warmSnapshot.nodes} objects\n`);
      }
      const wait = Date.now() + SAMPLE_MS;
      while (!stopped && Date.now() < wait) await delay(250);
    }
  })();
  const ended = (p) => p.finally(() => gate.done());
  await Promise.all([ended(churn(lb, bin, churnGen, stopAt, counters)), ended(messages(lb, msgGen, stopAt, counters))]);
  stopped = true;
  await sampler;
  await quiet(lb);
  const end = await sample(lb, t0);
  const endSnapshot = await heapSnapshot(lb);
  const after = samples.filter((s) => s.minute > snapshotAt);
  const perHour = (key) => {
    const k = slope(after.map((s) => s.minute), after.map((s) => s[key]));
    return k === null ? null : k * 60;
  };
  const slopes = { rssMiBPerHour: perHour('rssMiB'), heapUsedMiBPerHour: perHour('heapUsedMiB'), externalMiBPerHour: perHour('externalMiB'), fdsPerHour: perHour('fds') };
  const diff = warmSnapshot === null ? [] : snapshotDiff(warmSnapshot, endSnapshot);
  process.stdout.write(`\nafter ${fmt(end.minute)} min: ${counters.rounds} churn rounds (${counters.connected} connected, ${counters.failed} failed), ${counters.messages} messages (${counters.lost} lost); ${end.sessions} sessions and ${end.fds} descriptors open at the end\n`);
  process.stdout.write(`slopes after the warm-up: RSS ${fmt(slopes.rssMiBPerHour, 2)} MiB/h, V8 heap in use ${fmt(slopes.heapUsedMiBPerHour, 2)} MiB/h, external ${fmt(slopes.externalMiBPerHour, 2)} MiB/h, descriptors ${fmt(slopes.fdsPerHour, 1)}/h\n`);
  if (warmSnapshot !== null) {
    process.stdout.write(`live heap (snapshots, after a full collection): ${fmt(warmSnapshot.totalBytes / MIB, 2)} -> ${fmt(endSnapshot.totalBytes / MIB, 2)} MiB, ${warmSnapshot.nodes} -> ${endSnapshot.nodes} objects\n`);
    for (const r of diff) process.stdout.write(`  ${String(r.bytesDelta).padStart(10)} B  ${String(r.countDelta).padStart(7)}  ${r.key}\n`);
  }
  const resultsDir = join(REPO, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const live = (s) => (s === null ? null : { totalBytes: s.totalBytes, nodes: s.nodes });
  writeFileSync(file, JSON.stringify({ minutes: MINUTES, warmupMinutes: WARMUP_MINUTES, clients: CLIENTS, counters, samples, end, slopes, snapshots: { warm: live(warmSnapshot), end: live(endSnapshot) }, snapshotDiff: diff }, null, 2));
  process.stdout.write(`wrote ${file}\n`);
  await msgGen.stop();
  await churnGen?.stop();
  await lb.stop();
  await broker.stop();
}

main().catch((err) => {
  process.stderr.write(`soak: ${err.stack ?? err}\n`);
  process.exit(1);
});
