#!/usr/bin/env node
/**
 * Failover and health, side by side: a pair of mqtt-lb hosts against a pair of HAProxy + keepalived hosts, on
 * the same throwaway L2 network of namespaces (bench/lib/netns.mjs), trials interleaved target by target.
 *
 *   lb1 (priority 150), lb2 (100): eth0 + the VIP 10.77.0.200/24 on the master
 *   client: the prober and the MQTT clients (bench/failover-client.mjs)
 *   broker: three separate, unbridged mosquitto brokers b1..b3 on 10.77.0.51..53:1883, each holding a retained
 *           `whoami` = its own name, so a client learns which broker it reached
 *
 * Scenarios: master host loss (link down, LB processes SIGKILLed), stickiness across that failover, a broker
 * that accepts TCP but does not answer MQTT (SIGSTOP), no broker up. Root needed. `--help` for the options.
 * Results: bench/results/failover-<timestamp>.json and a table on stdout.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AddressMonitor, NeighMonitor, PREFIX, Topology, sleep, waitFor } from './lib/netns.mjs';
import { median } from './lib/stats.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..');
const LAUNCHER = join(REPO, 'bin/mqtt-lb');
const CLIENT = join(HERE, 'failover-client.mjs');
const SNIFFER = join(HERE, 'advert-sniffer.py');
const ADVERT_PORT = 18831; // mqtt-lb's failover.port default
const MOSQUITTO = '/usr/sbin/mosquitto';
const VIP_HOST = 200;
const BROKERS = [
  { name: 'b1', host: 51 },
  { name: 'b2', host: 52 },
  { name: 'b3', host: 53 },
];
const MQTT_PORT = 1883;
const STOPPED_BROKER = 'b2';

// ── options ──────────────────────────────────────────────────────────────────────────────────────────────────

const HELP = `usage: node bench/failover.mjs [options]   (root; npm run bench:failover builds first)
  --trials N          trials per target of the host-loss scenarios at 1 s adverts (default 4; at 100 ms one fewer)
  --health-trials N   trials per target of the SIGSTOP and no-broker scenarios (default 2 and 1)
  --adverts LIST      advert intervals in ms for the host-loss scenarios (default 1000,100: 100 ms with
                      keepalived's vrrp_version 3, fewer targets and trials)
  --clients K         client IDs of the stickiness check (default 200)
  --scenarios LIST    linkdown,kill,sigstop,nobroker (default all)
  --targets LIST      only these of mqtt-lb,haproxy-stick,haproxy-hash,haproxy-mqttcheck (default each scenario's)
  --out FILE          JSON output (default bench/results/failover-<timestamp>.json)`;

function parseArgs(argv) {
  const o = { trials: 4, healthTrials: 2, nobrokerTrials: 1, adverts: [1000, 100], clients: 200, scenarios: ['linkdown', 'kill', 'sigstop', 'nobroker'], targets: null, out: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--help' || a === '-h') {
      console.log(HELP);
      process.exit(0);
    } else if (a === '--trials') o.trials = Number(v());
    else if (a === '--health-trials') o.healthTrials = o.nobrokerTrials = Number(v());
    else if (a === '--adverts') o.adverts = v().split(',').map(Number);
    else if (a === '--clients') o.clients = Number(v());
    else if (a === '--scenarios') o.scenarios = v().split(',');
    else if (a === '--targets') o.targets = v().split(',');
    else if (a === '--out') o.out = v();
    else throw new Error(`unknown option ${a}\n${HELP}`);
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const t0Run = Date.now();
const log = (msg) => process.stderr.write(`[${((Date.now() - t0Run) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);

// ── cleanup: every namespace, process and temp file, on any exit ────────────────────────────────────────────

let topo = null;
let workDir = null;
let cleaning = null;

async function cleanup() {
  if (cleaning !== null) return cleaning;
  cleaning = (async () => {
    if (topo !== null) await topo.teardown();
    if (workDir !== null) rmSync(workDir, { recursive: true, force: true });
  })();
  return cleaning;
}

process.on('exit', () => {
  if (workDir !== null) rmSync(workDir, { recursive: true, force: true }); // the topology has its own exit hook
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`);
    const hardStop = setTimeout(() => process.exit(130), 15_000); // bounded even if teardown hangs
    void cleanup().finally(() => {
      clearTimeout(hardStop);
      process.exit(130);
    });
  });
}

// ── targets: how each LB pair is configured ──────────────────────────────────────────────────────────────────

const vipAddr = () => topo.address(VIP_HOST);
const vipCidr = () => `${vipAddr()}/${PREFIX}`;
const brokerAddr = (b) => topo.address(b.host);

/** CONNECT 3.1.1 (clean session, keepalive 30 s, the given client ID), in hex: HAProxy's tcp-check send-binary. */
function connectHex(clientId) {
  const id = Buffer.from(clientId);
  const body = Buffer.concat([Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 30, id.length >> 8, id.length & 0xff]), id]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]).toString('hex');
}

function mqttLbYaml(role, advertMs) {
  const peer = role === 'lb1' ? topo.addr.lb2 : topo.addr.lb1;
  const servers = BROKERS.map((b) => `      - { name: ${b.name}, address: ${brokerAddr(b)}:${MQTT_PORT} }`).join('\n');
  // Defaults everywhere (health mqtt 2s/1s/rise 2/fall 3, garp 5 x 200ms + 5s, preempt), except what
  // two namespaces on one machine need: distinct probe client IDs (they share a hostname).
  return `listeners:
  - name: mqtt
    bind: 0.0.0.0:${MQTT_PORT}
    pool: brokers
pools:
  brokers:
    balance: client-id-hash
    servers:
${servers}
    health:
      type: mqtt
      mqtt: { clientId: "${role}-{server}" }
admin:
  bind: 127.0.0.1:9883
failover:
  interface: eth0
  transport: unicast
  peers: [${peer}]
  authKeyFile: ${join(workDir, 'failover.key')}
  advertInterval: ${advertMs}ms
  routerId: 51
  priority: ${role === 'lb1' ? 150 : 100}
  vips: [${vipCidr()}]
`;
}

/**
 * HAProxy as EMQX's guide has it: the frontend waits for a whole valid MQTT packet (inspect-delay +
 * mqtt_is_valid), the backend pins client IDs (a stick table, or a consistent hash of the client ID), plain
 * `check` (TCP connect, inter 2s rise 2 fall 3: the same cadence as mqtt-lb's default). `mqttcheck` is the best
 * HAProxy 2.6 can do for MQTT health by hand: a CONNECT sent with tcp-check and the CONNACK "accepted" expected.
 */
function haproxyCfg(role, variant) {
  const clientIdSample = 'req.payload(0,0),mqtt_field_value(connect,client_identifier)';
  // `balance hash <that sample>` directly parses but places clients round robin on HAProxy 2.6.12 (the same ID
  // reached different brokers through one host); through a variable set by the frontend it hashes.
  const placement =
    variant === 'stick'
      ? ['  stick-table type string len 64 size 100k expire 30m', `  stick on ${clientIdSample}`]
      : ['  balance hash var(sess.client_id)', '  hash-type consistent'];
  const frontendExtra = variant === 'stick' ? [] : [`  tcp-request content set-var(sess.client_id) ${clientIdSample}`];
  const health =
    variant === 'mqttcheck'
      ? ['  option tcp-check', '  timeout check 1s', '  tcp-check connect', `  tcp-check send-binary ${connectHex(`${role}-hc`)}`, '  tcp-check expect binary 20020000']
      : [];
  return [
    'global',
    '  log stdout format raw local0 info',
    'defaults',
    '  log global',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    'frontend mqtt',
    `  bind 0.0.0.0:${MQTT_PORT}`,
    '  tcp-request inspect-delay 10s',
    '  tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }',
    ...frontendExtra,
    '  default_backend brokers',
    'backend brokers',
    ...placement,
    ...health,
    ...BROKERS.map((b) => `  server ${b.name} ${brokerAddr(b)}:${MQTT_PORT} check`),
    '',
  ].join('\n');
}

/** keepalived as the common guides write it; sub-second adverts need VRRP v3 (which has no authentication). */
function keepalivedConf(role, advertMs) {
  const v3 = advertMs < 1000;
  return [
    'global_defs {',
    `  router_id ${role}`,
    ...(v3 ? ['  vrrp_version 3'] : []),
    '}',
    'vrrp_instance VI_MQTT {',
    `  state ${role === 'lb1' ? 'MASTER' : 'BACKUP'}`,
    '  interface eth0',
    '  virtual_router_id 51',
    `  priority ${role === 'lb1' ? 150 : 100}`,
    `  advert_int ${advertMs / 1000}`,
    ...(v3 ? [] : ['  authentication {', '    auth_type PASS', '    auth_pass mqttlb1', '  }']),
    '  virtual_ipaddress {',
    `    ${vipCidr()} dev eth0`,
    '  }',
    '}',
    '',
  ].join('\n');
}

const TARGETS = {
  'mqtt-lb': { kind: 'mqtt-lb', desc: 'mqtt-lb pair (client-id-hash, MQTT health check)' },
  'haproxy-stick': { kind: 'haproxy', variant: 'stick', desc: 'keepalived + HAProxy, client-ID stick table, plain check' },
  'haproxy-hash': { kind: 'haproxy', variant: 'hash', desc: 'keepalived + HAProxy, balance hash on the client ID (through a variable) + hash-type consistent, plain check' },
  'haproxy-mqttcheck': { kind: 'haproxy', variant: 'mqttcheck', desc: 'keepalived + HAProxy, balance hash client ID, tcp-check MQTT CONNECT/CONNACK' },
};

// ── processes ────────────────────────────────────────────────────────────────────────────────────────────────

const brokers = new Map(); // name -> { ...broker, proc }

async function clientOp(op, role = 'client', timeoutMs = 30_000) {
  const p = topo.spawn(role, process.execPath, [CLIENT, JSON.stringify(op)]);
  const timer = setTimeout(() => p.signal('SIGKILL'), timeoutMs);
  const { code } = await p.exited;
  clearTimeout(timer);
  const lines = p.lines.map((l) => JSON.parse(l));
  if (code !== 0 || lines.at(-1)?.ev !== 'done') throw new Error(`client op ${op.op} failed (exit ${code}): ${p.lines.join('\n')}\n${p.stderrTail}`);
  return lines;
}

async function startBroker(b) {
  const conf = join(workDir, `mosquitto-${b.name}.conf`);
  writeFileSync(conf, [`listener ${MQTT_PORT} ${brokerAddr(b)}`, 'allow_anonymous true', 'persistence false', 'log_dest stderr', 'log_type error', 'log_type warning', 'log_type information', 'user root', ''].join('\n'));
  const proc = topo.spawn('broker', MOSQUITTO, ['-c', conf]);
  await waitFor(`mosquitto ${b.name} running`, () => proc.stderrTail.includes(' running') || !proc.alive, 10_000);
  if (!proc.alive) throw new Error(`mosquitto ${b.name} exited at start: ${proc.stderrTail}`);
  await clientOp({ op: 'retain', host: brokerAddr(b), port: MQTT_PORT, topic: 'whoami', payload: b.name });
  brokers.set(b.name, { ...b, proc });
}

/** Every broker running and answering (a stopped or killed one is replaced). */
async function ensureBrokers() {
  for (const b of BROKERS) {
    const cur = brokers.get(b.name);
    if (cur !== undefined && cur.proc.alive && !cur.stopped) continue;
    if (cur !== undefined) {
      cur.proc.signal('SIGKILL');
      cur.proc.signal('SIGCONT');
      await Promise.race([cur.proc.exited, sleep(3000)]);
    }
    await startBroker(b);
  }
}

/** One LB pair: the processes on lb1 and lb2. */
class Pair {
  constructor(targetName, advertMs) {
    this.name = targetName;
    this.target = TARGETS[targetName];
    this.advertMs = advertMs;
    this.procs = { lb1: [], lb2: [] };
  }

  async start() {
    await Promise.all([this.startHost('lb1'), this.startHost('lb2')]);
  }

  /** Starts the LB processes of one host (again, after a kill: the killed ones stay in the list, dead). */
  async startHost(role) {
    const dir = join(workDir, `${this.name}-${role}`);
    mkdirSync(dir, { recursive: true });
    if (this.target.kind === 'mqtt-lb') {
      const file = join(dir, 'lb.yaml');
      writeFileSync(file, mqttLbYaml(role, this.advertMs));
      const lb = topo.spawn(role, LAUNCHER, ['--config', file]);
      this.procs[role].push(lb);
      await lb.waitForLine((l) => l.includes('"mqtt-lb started"'), 20_000).catch((err) => {
        throw new Error(`${role}: mqtt-lb did not start: ${err.message}\n${lb.lines.slice(-20).join('\n')}`);
      });
    } else {
      const hcfg = join(dir, 'haproxy.cfg');
      writeFileSync(hcfg, haproxyCfg(role, this.target.variant));
      this.procs[role].push(topo.spawn(role, 'haproxy', ['-db', '-f', hcfg]));
      const kconf = join(dir, 'keepalived.conf');
      writeFileSync(kconf, keepalivedConf(role, this.advertMs));
      // -n: no fork (the process stays ours to kill), -P: VRRP only, pid files of its own so that the two
      // instances on this machine never see each other as already running.
      const pid = (n) => join(dir, `${n}.pid`);
      for (const n of ['keepalived', 'vrrp', 'checkers']) rmSync(pid(n), { force: true });
      this.procs[role].push(topo.spawn(role, 'keepalived', ['-n', '-l', '-D', '-G', '-P', '-f', kconf, '-p', pid('keepalived'), '-r', pid('vrrp'), '-c', pid('checkers')]));
    }
  }

  /** lb1 master: the VIP on lb1 only, a CONNECT through it answered, the client's ARP entry lb1's MAC. */
  async waitReady(macs) {
    const bound = 25_000 + 5 * this.advertMs;
    await waitFor(
      `${this.name}: VIP on lb1 only`,
      async () => {
        for (const role of ['lb1', 'lb2']) for (const p of this.procs[role]) if (!p.alive) throw new Error(`${this.name} ${role}: ${p.name} exited: ${p.stderrTail.slice(-1500)} ${p.lines.slice(-10).join('\n')}`);
        return (await topo.addresses('lb1')).includes(vipCidr()) && !(await topo.addresses('lb2')).includes(vipCidr());
      },
      bound,
      50,
    );
    await waitFor(
      `${this.name}: CONNACK through the VIP`,
      async () => {
        const [r] = await clientOp({ op: 'stream', host: vipAddr(), port: MQTT_PORT, prefix: 'fo-ready-', count: 1, everyMs: 0, timeoutMs: 500 });
        return r.clients[0].r === 'rc0';
      },
      15_000,
      100,
    );
    await waitFor(`${this.name}: client's ARP entry for the VIP on lb1`, async () => (await topo.neighbour('client', vipAddr()))?.lladdr === macs.lb1, 5000, 50);
  }

  /** SIGKILL of every LB process on `role` (keepalived's VRRP child is in the same process group). */
  killHost(role) {
    for (const p of this.procs[role]) p.signal('SIGKILL');
  }

  /** Warn/error lines of mqtt-lb (pino levels >= 40), for the record. */
  warnings() {
    const out = [];
    if (this.target.kind !== 'mqtt-lb') return out;
    for (const role of ['lb1', 'lb2']) {
      for (const l of this.procs[role].flatMap((p) => p.lines)) {
        try {
          const j = JSON.parse(l);
          if (j.level >= 40) {
            const { level, time, msg, pid, hostname, ...rest } = j;
            out.push({ role, level, time, msg, ...rest });
          }
        } catch {
          /* not JSON */
        }
      }
    }
    return out;
  }

  /** The host's log since `since` (mqtt-lb JSON lines, HAProxy's and keepalived's console lines stamped on arrival), at most 300 lines. */
  logSince(role, since) {
    const out = [];
    for (const p of this.procs[role]) {
      p.lines.forEach((line, i) => {
        if (p.lineTimes[i] >= since) out.push({ t: p.lineTimes[i] - since, from: p.name.split('@')[0], line: line.slice(0, 400) });
      });
      for (const e of p.errLines) if (e.t >= since) out.push({ t: e.t - since, from: p.name.split('@')[0], line: e.line.slice(0, 400) });
    }
    return out.sort((a, b) => a.t - b.t).filter((e) => !e.line.startsWith('Connect from')).slice(0, 300);
  }

  /** Ends both hosts (SIGKILL: fast; what it leaves is cleaned by hand) and restores the network. */
  async stop() {
    const all = [...this.procs.lb1, ...this.procs.lb2];
    for (const p of all) p.signal('SIGKILL');
    await Promise.race([Promise.all(all.map((p) => p.exited)), sleep(5000)]);
    for (const role of ['lb1', 'lb2']) {
      await topo.ip(role, ['link', 'set', 'eth0', 'up']);
      if ((await topo.addresses(role)).includes(vipCidr())) await topo.ip(role, ['addr', 'del', vipCidr(), 'dev', 'eth0']);
    }
    await topo.ip('client', ['neigh', 'flush', 'dev', 'eth0']);
  }
}

// ── scenarios ────────────────────────────────────────────────────────────────────────────────────────────────

/** The brokers K client IDs reached through the VIP. */
async function whoamiMap(prefix) {
  const [r] = await clientOp({ op: 'whoami', host: vipAddr(), port: MQTT_PORT, prefix, count: opts.clients, concurrency: 20, timeoutMs: 3000 }, 'client', 60_000);
  return r.map;
}

function sameBroker(before, after) {
  let same = 0;
  let compared = 0;
  for (const [id, b] of Object.entries(before)) {
    if (b.startsWith('!') || after[id] === undefined || after[id].startsWith('!')) continue;
    compared++;
    if (after[id] === b) same++;
  }
  return { same, compared, failedBefore: Object.values(before).filter((b) => b.startsWith('!')).length, failedAfter: Object.values(after).filter((b) => b.startsWith('!')).length };
}

function spreadOf(map) {
  const counts = {};
  for (const b of Object.values(map)) counts[b] = (counts[b] ?? 0) + 1;
  return counts;
}

/**
 * Service back: the first probe started after the fault that got CONNACK 0 and was followed by two more
 * (so a last answer from the old master racing the fault does not count); the time is its CONNACK's.
 */
function restoredAt(probes, faultAt) {
  const after = probes.filter((p) => p.t0 >= faultAt).sort((a, b) => a.t0 - b.t0);
  for (let i = 0; i + 2 < after.length; i++) {
    if (after[i].r === 'rc0' && after[i + 1].r === 'rc0' && after[i + 2].r === 'rc0') return { at: after[i].t1, failedAfter: after.slice(i).filter((p) => p.r !== 'rc0').length, probesAfter: after.length - i };
  }
  return null;
}

async function hostLossTrial(targetName, advertMs, fault, trial, macs) {
  const pair = new Pair(targetName, advertMs);
  const rec = { scenario: fault, target: targetName, advertMs, trial };
  const monitors = [];
  let prober = null;
  try {
    // From the start, so that it has heard several adverts (their period) by the fault.
    const sniffer = topo.spawn('lb2', '/usr/bin/python3', ['-u', SNIFFER, 'eth0', String(ADVERT_PORT)]);
    monitors.push(sniffer);
    await ensureBrokers();
    await pair.start();
    await pair.waitReady(macs);
    const prefix = `fo-${fault}-${trial}-`;
    const before = await whoamiMap(prefix);
    rec.spreadBefore = spreadOf(before);

    const addrLb1 = new AddressMonitor(topo, 'lb1');
    const addrLb2 = new AddressMonitor(topo, 'lb2');
    const neigh = new NeighMonitor(topo, 'client');
    monitors.push(addrLb1, addrLb2, neigh);
    prober = topo.spawn('client', process.execPath, [CLIENT, JSON.stringify({ op: 'probe', host: vipAddr(), port: MQTT_PORT, intervalMs: 20, timeoutMs: 150, maxMs: 120_000 })]);
    await waitFor('prober answered', () => prober.lines.filter((l) => l.includes('"rc0"')).length >= 5, 5000, 20);
    await sleep(300 + Math.random() * advertMs); // no phase lock between the fault and the advert timers

    const faultAt = Date.now();
    if (fault === 'linkdown') await topo.ip('lb1', ['link', 'set', 'eth0', 'down']);
    else pair.killHost('lb1');
    rec.faultCmdMs = Date.now() - faultAt;

    const probes = () => prober.lines.map((l) => JSON.parse(l)).filter((p) => p.t0 !== undefined);
    const bound = 10 * advertMs + 10_000;
    await waitFor(`${targetName}: service back after ${fault}`, () => restoredAt(probes(), faultAt) !== null, bound, 20).catch(() => {});
    const vipOnLb2 = addrLb2.first(vipCidr(), false, faultAt - 5);
    rec.vipOnBackupMs = vipOnLb2 === undefined ? null : vipOnLb2.t - faultAt;
    // The master's adverts as the backup heard them: the last one before the takeover starts its down timer.
    const adverts = sniffer.lines.map((l) => l.split(' ')).filter((f) => f[1] === topo.addr.lb1).map((f) => Number(f[0]));
    const lastAdvert = adverts.filter((t) => vipOnLb2 === undefined || t < vipOnLb2.t).at(-1);
    rec.takeoverAfterLastAdvertMs = vipOnLb2 === undefined || lastAdvert === undefined ? null : vipOnLb2.t - lastAdvert;
    rec.lastAdvertBeforeFaultMs = lastAdvert === undefined ? null : faultAt - lastAdvert;
    const gaps = adverts.filter((t) => t < faultAt).slice(1).map((t, i) => t - adverts[i]);
    rec.advertPeriodMs = median(gaps);
    rec.advertsHeardBeforeFault = adverts.filter((t) => t < faultAt).length;
    const vipOffLb1 = addrLb1.first(vipCidr(), true, faultAt - 5);
    rec.vipOffMasterMs = vipOffLb1 === undefined ? null : vipOffLb1.t - faultAt;

    const after = await whoamiMap(prefix);
    await sleep(500);
    const entry = await topo.neighbour('client', vipAddr());
    rec.arpEntryAtEnd = entry === null ? null : entry.lladdr === macs.lb2 ? 'lb2' : entry.lladdr === macs.lb1 ? 'lb1' : entry.lladdr;
    rec.vipHoldersAtEnd = [];
    for (const role of ['lb1', 'lb2']) if ((await topo.addresses(role)).includes(vipCidr())) rec.vipHoldersAtEnd.push(role);

    // Failback: lb1 back (link up, or its LB processes started again); it preempts. Timed until the VIP is on
    // lb1 only and the client's ARP entry is lb1's; the prober says what new clients met meanwhile.
    const failbackAt = Date.now();
    if (fault === 'linkdown') await topo.ip('lb1', ['link', 'set', 'eth0', 'up']);
    else await pair.startHost('lb1');
    rec.failbackRestartMs = Date.now() - failbackAt;
    try {
      await waitFor(
        'failback: VIP on lb1 only, client ARP on lb1',
        async () => (await topo.addresses('lb1')).includes(vipCidr()) && !(await topo.addresses('lb2')).includes(vipCidr()) && (await topo.neighbour('client', vipAddr()))?.lladdr === macs.lb1,
        15_000 + 10 * advertMs,
        20,
      );
      rec.failbackDoneMs = Date.now() - failbackAt;
    } catch {
      rec.failbackDoneMs = null;
    }
    await sleep(1000);
    prober.write('quit');
    await Promise.race([prober.exited, sleep(3000)]);
    const fb = probes().filter((p) => p.t0 >= failbackAt).sort((a, b) => a.t0 - b.t0);
    rec.failbackProbeFailures = fb.filter((p) => p.r !== 'rc0').length;
    rec.failbackProbes = fb.length;
    rec.failbackFailedProbes = fb.filter((p) => p.r !== 'rc0').map((p) => ({ t0: p.t0 - failbackAt, t1: p.t1 - failbackAt, r: p.r }));
    rec.failbackFailureKinds = {};
    for (const p of fb) if (p.r !== 'rc0') rec.failbackFailureKinds[p.r] = (rec.failbackFailureKinds[p.r] ?? 0) + 1;
    const fbOk = fb.filter((p) => p.r === 'rc0').map((p) => p.t1);
    rec.failbackMaxGapMs = fbOk.length < 2 ? null : Math.max(...fbOk.slice(1).map((t, i) => t - fbOk[i]));
    const vipBack = addrLb1.first(vipCidr(), false, failbackAt);
    rec.failbackVipOnLb1Ms = vipBack === undefined ? null : vipBack.t - failbackAt;
    const vipGone = addrLb2.first(vipCidr(), true, failbackAt);
    rec.failbackVipOffLb2Ms = vipGone === undefined ? null : vipGone.t - failbackAt;
    const arpBack = neigh.events().find((e) => e.ip === vipAddr() && e.lladdr === macs.lb1 && e.t >= failbackAt);
    rec.failbackArpToLb1Ms = arpBack === undefined ? null : arpBack.t - failbackAt;
    // Positive: the old master had dropped the VIP while the client still sent to its MAC (new SYNs are lost).
    rec.failbackArpAfterVipOffLb2Ms = arpBack === undefined || vipGone === undefined ? null : arpBack.t - vipGone.t;
    rec.lb1LogFailback = pair.logSince('lb1', failbackAt).slice(0, 60);

    const restored = restoredAt(probes().filter((p) => p.t0 < failbackAt), faultAt);
    rec.connackMs = restored === null ? null : restored.at - faultAt;
    rec.probeFailuresAfterRestore = restored === null ? null : restored.failedAfter;
    rec.probesAfterRestore = restored === null ? null : restored.probesAfter;
    const firstArp = neigh.events().find((e) => e.ip === vipAddr() && e.lladdr === macs.lb2 && e.t >= faultAt - 5);
    rec.arpToBackupMs = firstArp === undefined ? null : firstArp.t - faultAt;
    rec.stickiness = sameBroker(before, after);
    rec.spreadAfter = spreadOf(after);
    rec.lbWarnings = pair.warnings();
    rec.lb2Log = pair.logSince('lb2', faultAt);
  } catch (err) {
    rec.error = err.message.slice(0, 3000);
    log(`  error: ${rec.error.split('\n')[0]}`);
  } finally {
    if (prober !== null) await prober.stop(500);
    for (const m of monitors) await m.stop(500);
    await pair.stop();
  }
  return rec;
}

/** When each LB host marked the stopped broker down (ms after the SIGSTOP), from its own log. */
function markedDownMs(pair, stoppedAt) {
  const out = {};
  for (const role of ['lb1', 'lb2']) {
    if (pair.target.kind === 'mqtt-lb') {
      const p = pair.procs[role][0];
      for (const l of p.lines) {
        if (!l.includes('server state changed') || !l.includes(`"server":"${STOPPED_BROKER}"`)) continue;
        const j = JSON.parse(l);
        const at = typeof j.time === 'number' ? j.time : Date.parse(j.time);
        if (j.to === 'down' && at >= stoppedAt) {
          out[role] = at - stoppedAt;
          break;
        }
      }
    } else {
      const p = pair.procs[role][0];
      const all = [...p.lines.map((line, i) => ({ t: p.lineTimes[i], line })), ...p.errLines];
      const down = all.filter((e) => e.t >= stoppedAt && e.line.includes(`brokers/${STOPPED_BROKER} is DOWN`)).sort((a, b) => a.t - b.t)[0];
      if (down !== undefined) out[role] = down.t - stoppedAt;
    }
  }
  return out;
}

async function sigstopTrial(targetName, trial, macs) {
  const pair = new Pair(targetName, 1000);
  const rec = { scenario: 'sigstop', target: targetName, trial };
  try {
    await ensureBrokers();
    await pair.start();
    await pair.waitReady(macs);
    const b = brokers.get(STOPPED_BROKER);
    const stoppedAt = Date.now();
    b.proc.signal('SIGSTOP');
    b.stopped = true;
    const count = 100;
    const everyMs = 100;
    const [r] = await clientOp({ op: 'stream', host: vipAddr(), port: MQTT_PORT, prefix: `fo-stop-${targetName}-${trial}-`, count, everyMs, timeoutMs: 3000 }, 'client', 40_000);
    const clients = r.clients.map((c) => ({ ...c, at: c.t0 - stoppedAt }));
    const failed = clients.filter((c) => c.r !== 'rc0');
    rec.clients = count;
    rec.ok = count - failed.length;
    rec.okFraction = rec.ok / count;
    rec.results = {};
    for (const c of clients) rec.results[c.r] = (rec.results[c.r] ?? 0) + 1;
    rec.lastFailedStartMs = failed.length === 0 ? null : Math.max(...failed.map((c) => c.at));
    rec.windowMs = clients.at(-1).at;
    // Still failing in the last second of the window: the LB had not stopped sending clients there.
    rec.stillFailingAtEnd = failed.some((c) => c.at > rec.windowMs - 1000);
    rec.failedStartsMs = failed.map((c) => c.at);
    rec.markedDownMs = markedDownMs(pair, stoppedAt);
    rec.lb1Log = pair.logSince('lb1', stoppedAt);
    rec.lbWarnings = pair.warnings();
  } catch (err) {
    rec.error = err.message.slice(0, 3000);
    log(`  error: ${rec.error.split('\n')[0]}`);
  } finally {
    await pair.stop();
  }
  return rec;
}

const describeRaw = (r) => {
  const bytes = r.bytes === '' ? 'no bytes' : `bytes ${r.bytes}`;
  return `${bytes}, then ${r.end} at ${r.ms} ms`;
};

async function nobrokerTrial(targetName, trial, macs) {
  const pair = new Pair(targetName, 1000);
  const rec = { scenario: 'nobroker', target: targetName, trial, probes: [] };
  try {
    await ensureBrokers();
    await pair.start();
    await pair.waitReady(macs);
    const killedAt = Date.now();
    for (const b of brokers.values()) {
      b.proc.signal('SIGKILL');
      b.stopped = true;
    }
    // Right after the kill (health checks have not noticed: every dial is refused), then once the health checks
    // have marked every broker down (fall 3 x inter 2 s on both sides).
    for (const phase of ['immediately', 'after health down']) {
      if (phase !== 'immediately') await sleep(Math.max(0, killedAt + 9000 - Date.now()));
      for (const version of [4, 5]) {
        const [r] = await clientOp({ op: 'raw', host: vipAddr(), port: MQTT_PORT, version, clientId: `fo-none-${version}`, timeoutMs: 5000 });
        rec.probes.push({ phase, sinceKillMs: Date.now() - killedAt - r.ms, version, end: r.end, ms: r.ms, bytes: r.bytes, firstByteMs: r.firstByteMs, seen: describeRaw(r) });
      }
    }
    rec.lbWarnings = pair.warnings().filter((w) => w.level >= 50);
    rec.lb1Log = pair.logSince('lb1', killedAt);
  } catch (err) {
    rec.error = err.message.slice(0, 3000);
    log(`  error: ${rec.error.split('\n')[0]}`);
  } finally {
    await pair.stop();
  }
  return rec;
}

// ── report ───────────────────────────────────────────────────────────────────────────────────────────────────

const fmt = (v, unit = '') => (v === null || v === undefined ? '-' : `${Math.round(v)}${unit}`);

function summarize(records) {
  const groups = new Map();
  for (const r of records) {
    const key = `${r.scenario}|${r.advertMs ?? ''}|${r.target}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(r);
  }
  const summary = [];
  for (const [key, rs] of groups) {
    const [scenario, advertMs, target] = key.split('|');
    const ok = rs.filter((r) => r.error === undefined);
    const s = { scenario, advertMs: advertMs === '' ? null : Number(advertMs), target, trials: rs.length, errors: rs.length - ok.length };
    const pick = (f) => ok.map(f).filter((v) => v !== null && v !== undefined);
    if (scenario === 'linkdown' || scenario === 'kill') {
      for (const f of ['takeoverAfterLastAdvertMs', 'vipOnBackupMs', 'arpToBackupMs', 'connackMs', 'vipOffMasterMs', 'advertPeriodMs']) {
        s[f] = { median: median(pick((r) => r[f])), values: ok.map((r) => r[f]) };
      }
      s.sameBroker = { median: median(pick((r) => r.stickiness?.same)), values: ok.map((r) => r.stickiness?.same), of: opts.clients };
      s.arpEntryAtEnd = ok.map((r) => r.arpEntryAtEnd);
      s.vipHoldersAtEnd = ok.map((r) => r.vipHoldersAtEnd.join('+'));
      s.probeFailuresAfterRestore = ok.map((r) => r.probeFailuresAfterRestore);
      for (const f of ['failbackDoneMs', 'failbackArpAfterVipOffLb2Ms', 'failbackMaxGapMs', 'failbackProbeFailures']) s[f] = { median: median(pick((r) => r[f])), values: ok.map((r) => r[f]) };
    } else if (scenario === 'sigstop') {
      s.okFraction = { median: median(pick((r) => r.okFraction)), values: ok.map((r) => r.okFraction) };
      s.lastFailedStartMs = { median: median(pick((r) => r.lastFailedStartMs)), values: ok.map((r) => r.lastFailedStartMs) };
      s.stillFailingAtEnd = ok.map((r) => r.stillFailingAtEnd);
      s.markedDownMs = ok.map((r) => r.markedDownMs);
    } else if (scenario === 'nobroker') {
      s.seen = ok.flatMap((r) => r.probes.map((p) => ({ phase: p.phase, version: p.version, seen: p.seen })));
    }
    summary.push(s);
  }
  return summary;
}

function printTables(summary) {
  const lines = [];
  const hl = summary.filter((s) => s.scenario === 'linkdown' || s.scenario === 'kill');
  if (hl.length > 0) {
    lines.push('', 'Master host loss (ms from the fault; median, then per trial)');
    lines.push(['fault', 'advert', 'target', 'VIP on backup after last advert', 'VIP on backup', 'client ARP -> backup', 'first CONNACK', 'same broker', 'ARP at end', 'VIP at end'].join(' | '));
    for (const s of hl) {
      const cell = (m) => `${fmt(m.median)} (${m.values.map((v) => fmt(v)).join(', ')})`;
      lines.push([s.scenario, `${s.advertMs} ms`, s.target, cell(s.takeoverAfterLastAdvertMs), cell(s.vipOnBackupMs), cell(s.arpToBackupMs), cell(s.connackMs), `${fmt(s.sameBroker.median)}/${s.sameBroker.of} (${s.sameBroker.values.map((v) => fmt(v)).join(', ')})`, s.arpEntryAtEnd.join(','), s.vipHoldersAtEnd.join(',')].join(' | ') + (s.errors ? ` | ${s.errors} trial(s) failed` : ''));
    }
  }
  if (hl.length > 0) {
    lines.push('', 'Failback (lb1 back: link up / LB processes started again; ms from that; median, then per trial)');
    lines.push(['fault', 'advert', 'target', 'VIP on lb1 only + client ARP on lb1', 'client ARP on lb1 after lb2 dropped the VIP', 'longest gap between CONNACKs', 'failed probes (every 20 ms)'].join(' | '));
    for (const s of hl) {
      const cell = (m) => `${fmt(m.median)} (${m.values.map((v) => fmt(v)).join(', ')})`;
      lines.push([s.scenario, `${s.advertMs} ms`, s.target, cell(s.failbackDoneMs), cell(s.failbackArpAfterVipOffLb2Ms), cell(s.failbackMaxGapMs), cell(s.failbackProbeFailures)].join(' | '));
    }
  }
  const st = summary.filter((s) => s.scenario === 'sigstop');
  if (st.length > 0) {
    lines.push('', `Broker ${STOPPED_BROKER} SIGSTOPped (100 new clients over 10 s, 3 s CONNACK timeout)`);
    lines.push(['target', 'clients with CONNACK', 'last failed client started at (ms)', 'still failing at the end', 'marked down (ms, lb1)'].join(' | '));
    for (const s of st) {
      lines.push([s.target, `${fmt(s.okFraction.median * 100)} % (${s.okFraction.values.map((v) => fmt(v * 100)).join(', ')})`, `${fmt(s.lastFailedStartMs.median)} (${s.lastFailedStartMs.values.map((v) => fmt(v)).join(', ')})`, s.stillFailingAtEnd.join(','), s.markedDownMs.map((m) => fmt(m.lb1)).join(',')].join(' | ') + (s.errors ? ` | ${s.errors} trial(s) failed` : ''));
    }
  }
  const nb = summary.filter((s) => s.scenario === 'nobroker');
  if (nb.length > 0) {
    lines.push('', 'No broker up (all SIGKILLed): what a client saw');
    for (const s of nb) for (const p of s.seen) lines.push(`${s.target} | ${p.phase} | MQTT ${p.version === 4 ? '3.1.1' : '5.0'} | ${p.seen}`);
  }
  console.log(lines.join('\n'));
}

// ── main ─────────────────────────────────────────────────────────────────────────────────────────────────────

function versions() {
  const v = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 }).toString().split('\n')[0].trim();
    } catch (err) {
      return String(err.stderr ?? err.message).split('\n')[0].trim();
    }
  };
  let commit = null;
  try {
    commit = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { timeout: 5000 }).toString().trim();
  } catch {
    /* not a checkout */
  }
  return { node: process.version, commit, haproxy: v('haproxy', ['-v']), keepalived: v('keepalived', ['--version']), mosquitto: v(MOSQUITTO, ['-h']) };
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  if (!existsSync(join(REPO, 'dist/src/cli.js'))) throw new Error('dist/ missing: run `npm run build` (npm run bench:failover builds first)');
  for (const tool of ['keepalived', 'haproxy', 'arping', 'ip']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`${tool} not found (apt-get install keepalived haproxy iputils-arping iproute2)`);
    }
  }
  workDir = mkdtempSync(join(tmpdir(), 'mqtt-lb-bench-failover-'));
  const key = execFileSync(LAUNCHER, ['keygen'], { timeout: 10_000 }).toString();
  writeFileSync(join(workDir, 'failover.key'), key, { mode: 0o600 });
  chmodSync(join(workDir, 'failover.key'), 0o600);

  log('building the namespaces');
  topo = await Topology.create(BROKERS.map((b) => b.host), log);
  const macs = { lb1: await topo.mac('lb1'), lb2: await topo.mac('lb2') };
  await ensureBrokers();

  const records = [];
  const runOne = async (what, fn) => {
    if (opts.targets !== null && !opts.targets.some((t) => what.includes(` ${t},`))) return;
    log(what);
    const r = await fn();
    records.push(r);
    const brief = Object.fromEntries(Object.entries(r).filter(([k]) => ['takeoverAfterLastAdvertMs', 'vipOnBackupMs', 'arpToBackupMs', 'connackMs', 'okFraction', 'lastFailedStartMs', 'stillFailingAtEnd'].includes(k)));
    if (r.stickiness) brief.same = r.stickiness.same;
    if (r.failbackDoneMs !== undefined) Object.assign(brief, { failbackDoneMs: r.failbackDoneMs, failbackMaxGapMs: r.failbackMaxGapMs, failbackProbeFailures: r.failbackProbeFailures });
    if (r.probes) brief.seen = r.probes.map((p) => `${p.phase}/v${p.version}: ${p.seen}`);
    log(`  ${JSON.stringify(brief)}`);
  };

  for (const advertMs of opts.adverts) {
    // At 100 ms the stick-table variant adds nothing the 1 s run did not show (failover timing is keepalived's).
    const faults = opts.scenarios.filter((s) => s === 'linkdown' || s === 'kill');
    const trials = advertMs >= 1000 ? opts.trials : Math.max(1, opts.trials - 1);
    for (let trial = 1; trial <= trials; trial++) {
      for (const fault of faults) {
        const targets = advertMs >= 1000 && fault === 'linkdown' ? ['mqtt-lb', 'haproxy-stick', 'haproxy-hash'] : advertMs >= 1000 ? ['mqtt-lb', 'haproxy-stick'] : ['mqtt-lb', 'haproxy-hash'];
        for (const t of targets) await runOne(`${fault} advert ${advertMs} ms, ${t}, trial ${trial}`, () => hostLossTrial(t, advertMs, fault, trial, macs));
      }
    }
  }
  if (opts.scenarios.includes('sigstop')) {
    for (let trial = 1; trial <= opts.healthTrials; trial++) {
      for (const t of ['mqtt-lb', 'haproxy-hash', 'haproxy-mqttcheck']) await runOne(`sigstop ${t}, trial ${trial}`, () => sigstopTrial(t, trial, macs));
    }
  }
  if (opts.scenarios.includes('nobroker')) {
    for (let trial = 1; trial <= opts.nobrokerTrials; trial++) {
      for (const t of ['mqtt-lb', 'haproxy-hash']) await runOne(`nobroker ${t}, trial ${trial}`, () => nobrokerTrial(t, trial, macs));
    }
  }

  const summary = summarize(records);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outFile = opts.out ?? join(REPO, 'bench/results', `failover-${stamp}.json`);
  mkdirSync(dirname(outFile), { recursive: true });
  const meta = { started: new Date(t0Run).toISOString(), durationS: Math.round((Date.now() - t0Run) / 1000), options: opts, versions: versions(), targets: TARGETS, macs };
  const configs = {
    'mqtt-lb lb1 (advert 1s)': mqttLbYaml('lb1', 1000),
    'haproxy-stick lb1': haproxyCfg('lb1', 'stick'),
    'haproxy-hash lb1': haproxyCfg('lb1', 'hash'),
    'haproxy-mqttcheck lb1': haproxyCfg('lb1', 'mqttcheck'),
    'keepalived lb1 (advert 1s)': keepalivedConf('lb1', 1000),
    'keepalived lb1 (advert 100ms)': keepalivedConf('lb1', 100),
  };
  writeFileSync(outFile, `${JSON.stringify({ meta, configs, summary, records }, null, 2)}\n`);
  printTables(summary);
  console.log(`\nresults: ${outFile.startsWith(REPO) ? outFile.slice(REPO.length + 1) : outFile} (${meta.durationS} s)`);
}

try {
  await main();
} catch (err) {
  log(`failed: ${err.stack ?? err}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
