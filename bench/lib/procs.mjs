/**
 * The processes a benchmark run owns: brokers, balancers and load generators. Every child is registered
 * here and killed on normal exit, on Ctrl-C/SIGTERM and on a crash, and every temp dir is removed.
 * Also the /proc readers used for measurements (RSS, CPU time, open descriptors).
 */
import { spawn, fork, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, readdirSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HOST = '127.0.0.1';
/**
 * How mqtt-lb's and HAProxy's configs name the brokers (`--server-host`): 127.0.0.1, or a host name such as
 * `localhost` to measure what resolving a name costs each of them.
 */
let serverHost = HOST;
export function setServerHost(name) {
  serverHost = name;
}
const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = join(HERE, '..', '..');
const MOSQUITTO = '/usr/sbin/mosquitto';
const READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 3_000;

const children = new Set();
const tempDirs = new Set();

export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

function killAllNow() {
  for (const c of children) {
    try {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

let hooksInstalled = false;
/** Ctrl-C, SIGTERM, uncaught errors and plain exit all end with every child killed and temp dirs removed. */
export function installCleanupHooks() {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping every child process\n`);
      killAllNow();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`bench: ${err.stack ?? err}\n`);
    killAllNow();
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    process.stderr.write(`bench: ${err?.stack ?? err}\n`);
    killAllNow();
    process.exit(1);
  });
}

function track(child, name) {
  children.add(child);
  child.benchName = name;
  child.once('exit', () => children.delete(child));
  return child;
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null;
}

async function stopChild(child, signal = 'SIGTERM') {
  if (exited(child)) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const timer = delay(STOP_GRACE_MS).then(() => 'timeout');
  if ((await Promise.race([gone, timer])) === 'timeout') {
    child.kill('SIGKILL');
    await gone;
  }
}

function makeTempDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

function removeTempDir(d) {
  rmSync(d, { recursive: true, force: true });
  tempDirs.delete(d);
}

export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, resolve);
  });
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Spawns a long-lived service, collects its output for error messages, waits until `ready()` is true. */
async function startService(name, cmd, args, ready, opts = {}) {
  const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd ?? REPO, env: { ...process.env, ...opts.env } }), name);
  let output = '';
  const collect = (c) => {
    if (output.length < 16384) output += c.toString('utf8');
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let spawnError = null;
  child.once('error', (err) => {
    spawnError = err;
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (spawnError !== null) throw new Error(`${name}: cannot start: ${spawnError.message}`);
    if (exited(child)) {
      const err = new Error(`${name} exited at start (code ${child.exitCode}): ${output}`);
      err.portTaken = /address already in use|EADDRINUSE|cannot bind/i.test(output);
      throw err;
    }
    if (await ready()) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${name} not ready within ${READY_TIMEOUT_MS} ms: ${output}`);
    }
    await delay(50);
  }
  return { child, pid: child.pid, output: () => output };
}

/**
 * Ports come from the kernel's ephemeral range, so between freePort() and the service's bind another
 * process's outgoing connection can take the port: start again on a fresh one.
 */
async function withFreshPortRetry(start) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (!err.portTaken || attempt >= 5) throw err;
    }
  }
}

// ── services ────────────────────────────────────────────────────────────────────────────────────────────────

export function startMosquitto() {
  return withFreshPortRetry(startMosquittoOnce);
}

async function startMosquittoOnce() {
  const port = await freePort();
  const dir = makeTempDir('mqtt-lb-bench-mosquitto-');
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} ${HOST}`,
      'allow_anonymous true',
      'max_connections -1',
      'persistence false',
      // Latency is measured through the broker too: no Nagle delay on its side (same for every target).
      'set_tcp_nodelay true',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'user root',
      '',
    ].join('\n'),
  );
  let svc;
  try {
    svc = await startService('mosquitto', MOSQUITTO, ['-c', conf], () => canConnect(port));
  } catch (err) {
    removeTempDir(dir);
    throw err;
  }
  return {
    kind: 'broker',
    name: 'mosquitto',
    host: HOST,
    port,
    pid: svc.pid,
    async stop() {
      await stopChild(svc.child);
      removeTempDir(dir);
    },
  };
}

export function mqttLbConfig({ port, adminPort, backends, maxConnections, workers = 1, limits = '', pool = '', warmUp = null, minimal = false }) {
  if (minimal) return minimalMqttLbConfig({ port, adminPort, backends });
  return [
    '# written by bench/run.mjs',
    'listeners:',
    '  - name: bench',
    `    bind: ${HOST}:${port}`,
    '    pool: brokers',
    `    maxConnections: ${maxConnections}`,
    'pools:',
    '  brokers:',
    '    balance: client-id-hash',
    ...(pool === '' ? [] : [pool.trimEnd()]),
    '    servers:',
    ...backends.flatMap((b, i) => [`      - name: b${i + 1}`, `        address: ${serverHost}:${b.port}`]),
    '    health:',
    '      type: tcp',
    '      interval: 2s',
    '      timeout: 1s',
    '      rise: 1',
    '      fall: 3',
    'limits:',
    `  maxConnections: ${maxConnections}`,
    ...(limits === '' ? [] : [limits.trimEnd()]),
    'admin:',
    `  bind: ${HOST}:${adminPort}`,
    'log:',
    '  level: warn',
    `workers: ${workers}`,
    ...(warmUp === null ? [] : [`warmUp: ${warmUp}`]),
    '',
  ].join('\n');
}

/**
 * The `mqtt-lb-defaults` target: only what a config must say (a listener, a pool, its servers) and the admin
 * port the run reads /readyz from; every other key at its default (MQTT health checks, log level info, the
 * default caps), as a first config or an outside harness would write it.
 */
function minimalMqttLbConfig({ port, adminPort, backends }) {
  return [
    '# written by bench/run.mjs (mqtt-lb-defaults)',
    'listeners:',
    '  - name: bench',
    `    bind: ${HOST}:${port}`,
    '    pool: brokers',
    'pools:',
    '  brokers:',
    '    servers:',
    ...backends.flatMap((b, i) => [`      - name: b${i + 1}`, `        address: ${serverHost}:${b.port}`]),
    'admin:',
    `  bind: ${HOST}:${adminPort}`,
    '',
  ].join('\n');
}

/**
 * mqtt-lb as operators run it: the installed command (bin/mqtt-lb, what `npx mqtt-lb` starts: it execs node
 * with the shipped runtime settings) with a config file. `nodeArgs` replace the launcher's node flags
 * (MQTT_LB_NODE_FLAGS); `cli` runs another build's cli.js with plain node instead. Ready = /readyz answers 200.
 */
export function startMqttLb(backends, options = {}) {
  return withFreshPortRetry(() => startMqttLbOnce(backends, options));
}

async function startMqttLbOnce(backends, { maxConnections = 9400, nodeArgs = null, env = {}, cli = null, workers = 1, name = 'mqtt-lb', limits = '', pool = '', warmUp = null, minimal = false } = {}) {
  const built = join(REPO, 'dist', 'src', 'cli.js');
  if (cli === null && !existsSync(built)) throw new Error(`${built} is missing: run \`npm run build\` (npm run bench does)`);
  if (cli !== null && !existsSync(cli)) throw new Error(`${cli} is missing`);
  const port = await freePort();
  const adminPort = await freePort();
  const dir = makeTempDir('mqtt-lb-bench-lb-');
  const file = join(dir, 'lb.yaml');
  writeFileSync(file, mqttLbConfig({ port, adminPort, backends, maxConnections, workers, limits, pool, warmUp, minimal }));
  const ready = async () => {
    try {
      const res = await fetch(`http://${HOST}:${adminPort}/readyz`);
      await res.arrayBuffer();
      return res.status === 200;
    } catch {
      return false;
    }
  };
  let svc;
  try {
    if (cli === null) {
      // The launcher finds `node` on PATH: make it this node.
      const launcherEnv = { PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, ...(nodeArgs !== null ? { MQTT_LB_NODE_FLAGS: nodeArgs.join(' ') } : {}), ...env };
      svc = await startService('mqtt-lb', join(REPO, 'bin', 'mqtt-lb'), ['--config', file], ready, { env: launcherEnv });
    } else {
      svc = await startService('mqtt-lb', process.execPath, [...(nodeArgs ?? []), cli, '--config', file], ready, { env });
    }
  } catch (err) {
    removeTempDir(dir);
    throw err;
  }
  return {
    kind: 'proxy',
    name,
    host: HOST,
    port,
    adminPort,
    pid: svc.pid,
    output: svc.output,
    async stop() {
      await stopChild(svc.child, 'SIGINT');
      removeTempDir(dir);
    },
  };
}

export function haproxyAvailable() {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * HAProxy configured the way the MQTT guides do it, hashing on the client identifier. On 2.6 the hash key must
 * go through a variable: `balance hash req.payload(...),mqtt_field_value(...)` evaluated in the backend
 * silently falls back to round robin.
 */
export function haproxyConfig({ port, backends, maxConnections }) {
  return [
    '# written by bench/run.mjs',
    'global',
    `  maxconn ${maxConnections}`,
    '  nbthread 1',
    '',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 10m',
    '  timeout server 10m',
    '',
    'frontend mqtt',
    `  bind ${HOST}:${port}`,
    `  maxconn ${maxConnections}`,
    '  tcp-request inspect-delay 10s',
    '  tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }',
    '  tcp-request content set-var(txn.cid) req.payload(0,0),mqtt_field_value(connect,client_identifier)',
    '  default_backend brokers',
    '',
    'backend brokers',
    '  balance hash var(txn.cid)',
    '  hash-type consistent',
    ...backends.map((b, i) => `  server b${i + 1} ${serverHost}:${b.port} check inter 2s`),
    '',
  ].join('\n');
}

export function startHaproxy(backends, options = {}) {
  return withFreshPortRetry(() => startHaproxyOnce(backends, options));
}

async function startHaproxyOnce(backends, { maxConnections = 9400 } = {}) {
  const port = await freePort();
  const dir = makeTempDir('mqtt-lb-bench-haproxy-');
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, haproxyConfig({ port, backends, maxConnections }));
  let svc;
  try {
    svc = await startService('haproxy', 'haproxy', ['-db', '-f', file], () => canConnect(port));
  } catch (err) {
    removeTempDir(dir);
    throw err;
  }
  return {
    kind: 'proxy',
    name: 'haproxy',
    host: HOST,
    port,
    pid: svc.pid,
    output: svc.output,
    async stop() {
      await stopChild(svc.child, 'SIGTERM');
      removeTempDir(dir);
    },
  };
}

// ── load generators ─────────────────────────────────────────────────────────────────────────────────────────

export class LoadGen {
  constructor(index) {
    this.index = index;
    this.nextId = 1;
    this.pending = new Map();
    this.child = track(fork(join(HERE, '..', 'loadgen.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), `loadgen-${index}`);
    this.child.on('message', (msg) => {
      const p = this.pending.get(msg.id);
      if (p === undefined) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg);
      else p.reject(new Error(`loadgen ${index}: ${msg.error}`));
    });
    this.child.on('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`loadgen ${index} exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  get pid() {
    return this.child.pid;
  }

  call(cmd, args = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ ...args, cmd, id });
    });
  }

  async stop() {
    if (exited(this.child)) return;
    this.child.send({ cmd: 'exit' });
    const gone = new Promise((r) => this.child.once('exit', r));
    if ((await Promise.race([gone, delay(STOP_GRACE_MS).then(() => 'timeout')])) === 'timeout') {
      this.child.kill('SIGKILL');
      await gone;
    }
  }
}

// ── C connection generator ──────────────────────────────────────────────────────────────────────────────────

const CONNGEN_RESULT_TIMEOUT_MS = 120_000;

/**
 * bench/conngen.c compiled with the system's C compiler into a temp dir (removed on exit), or null when there is
 * no compiler or the build fails (the connection test then uses the Node generator). Nothing binary is committed.
 */
export function buildConnGen() {
  const cc = ['cc', 'gcc', 'clang'].find((c) => {
    try {
      execFileSync(c, ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  });
  if (cc === undefined) return null;
  const dir = makeTempDir('mqtt-lb-bench-conngen-');
  const bin = join(dir, 'conngen');
  try {
    execFileSync(cc, ['-O2', '-Wall', '-o', bin, join(HERE, '..', 'conngen.c')], { stdio: ['ignore', 'ignore', 'pipe'] });
    return bin;
  } catch (err) {
    process.stderr.write(`bench: could not build bench/conngen.c with ${cc}, using the Node generator: ${err.stderr ?? err.message}\n`);
    removeTempDir(dir);
    return null;
  }
}

/**
 * One conngen process: `result` resolves with its JSON line once every connection has its CONNACK (or failed);
 * the connections stay open until `release()` (DISCONNECT, close, process exit).
 */
export function startConnGen(bin, { host, port, count, concurrency, idPrefix, level = 4 }) {
  const child = track(spawn(bin, [host, String(port), String(count), String(concurrency), idPrefix, String(level)], { stdio: ['pipe', 'pipe', 'pipe'] }), 'conngen');
  let out = '';
  let err = '';
  // A release racing the process's own exit must not crash the run with EPIPE.
  child.stdin.on('error', () => {});
  child.stderr.on('data', (c) => {
    if (err.length < 4096) err += c.toString('utf8');
  });
  const gone = new Promise((r) => child.once('exit', r));
  const result = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`conngen: no result within ${CONNGEN_RESULT_TIMEOUT_MS} ms`));
    }, CONNGEN_RESULT_TIMEOUT_MS);
    child.stdout.on('data', (c) => {
      out += c.toString('utf8');
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.slice(0, nl)));
      } catch (e) {
        reject(new Error(`conngen: bad output ${JSON.stringify(out.slice(0, 200))}: ${e.message}`));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`conngen exited (${code ?? signal}) before its result: ${err}`));
    });
  });
  return {
    result,
    async release() {
      if (!exited(child)) child.stdin.end('release\n');
      if ((await Promise.race([gone, delay(STOP_GRACE_MS * 3).then(() => 'timeout')])) === 'timeout') {
        child.kill('SIGKILL');
        await gone;
      }
    },
  };
}

// ── /proc readers ───────────────────────────────────────────────────────────────────────────────────────────

let clkTck = null;
function ticksPerSecond() {
  if (clkTck === null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/**
 * The process and its descendants (mqtt-lb with `workers` > 1 is a primary plus cluster workers); a single
 * process (mosquitto, HAProxy nbthread 1, mqtt-lb workers: 1) is just itself.
 */
export function processTree(pid) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    let tasks = [];
    try {
      tasks = readdirSync(`/proc/${out[i]}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        const c = readFileSync(`/proc/${out[i]}/task/${t}/children`, 'utf8').trim();
        if (c !== '') out.push(...c.split(/\s+/).map(Number));
      } catch {
        // the task ended meanwhile
      }
    }
  }
  return out;
}

function sumOverTree(pid, one) {
  let sum = 0;
  for (const p of processTree(pid)) {
    const v = one(p);
    if (Number.isFinite(v)) sum += v;
    else if (p === pid) return NaN;
  }
  return sum;
}

function rssOne(pid) {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? NaN : Number(m[1]);
  } catch {
    return NaN;
  }
}

/** Resident set size in KiB, of the process and its descendants. */
export function rssKiB(pid) {
  return sumOverTree(pid, rssOne);
}

function cpuOne(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / ticksPerSecond();
  } catch {
    return NaN;
  }
}

/** User + system CPU time (all threads, live and exited) of the process and its live descendants, in ms. */
export function cpuMs(pid) {
  return sumOverTree(pid, cpuOne);
}

function fdsOne(pid) {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

export function openFds(pid) {
  return sumOverTree(pid, fdsOne);
}

/** Waits (bounded) until a process holds at most `fds` descriptors again: the previous test's sockets are gone. */
export async function waitFdsAtMost(pid, fds, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (openFds(pid) > fds) {
    if (Date.now() > deadline) return false;
    await delay(50);
  }
  return true;
}
