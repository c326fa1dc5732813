/**
 * A throwaway L2 network of namespaces for the failover benchmark, built the way test/helpers/netns.ts builds
 * the tests' one (plain ESM: bench scripts cannot import the TypeScript helpers):
 *
 *   ns "br"  : bridge br0 (multicast snooping off, so keepalived's multicast adverts flood), one veth port per host
 *   ns lb1, lb2, client, broker : eth0 (the other end of the veth), 10.77.0.0/24, inside the namespaces only
 *
 * Nothing is created in the root namespace. Every name carries a random suffix. One topology at a time runs on
 * the machine: the lock file is the netns tests' own, so the benchmark and `npm test`'s netns suites never starve
 * each other's heartbeats. teardown() kills every process it started (process groups, then whatever is left in
 * the namespaces) and deletes the namespaces; an 'exit' hook repeats that synchronously if it never ran. Every
 * wait is bounded.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROLES = ['lb1', 'lb2', 'client', 'broker'];
const HOST_OCTET = { lb1: 11, lb2: 12, client: 100, broker: 50 };
export const SUBNET = '10.77.0';
export const PREFIX = 24;
export const IFACE = 'eth0';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function run(cmd, args, timeoutMs = 10_000) {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

export async function runOk(cmd, args, timeoutMs = 10_000) {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Polls `cond` until it holds; throws after `timeoutMs` naming `what`. */
export async function waitFor(what, cond, timeoutMs, stepMs = 20) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > until) throw new Error(`timeout (${timeoutMs} ms) waiting for: ${what}`);
    await sleep(stepMs);
  }
}

/** A process started inside a namespace, in its own process group (so its children die with it). */
export class NsProcess {
  constructor(ns, cmd, args, env) {
    this.ns = ns;
    this.name = `${cmd.split('/').at(-1)}@${ns}`;
    this.lines = [];
    // Arrival time of each stdout line, and every stderr line with its arrival time: HAProxy's and keepalived's
    // console logs carry no millisecond stamps of their own.
    this.lineTimes = [];
    this.errLines = [];
    this.stderrTail = '';
    this.waiters = new Set();
    this.hasExited = false;
    this.child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let buf = '';
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.lines.push(line);
        this.lineTimes.push(Date.now());
        for (const w of [...this.waiters]) if (w.pred(line)) w.done(line);
      }
    });
    this.child.stderr.setEncoding('utf8');
    let errBuf = '';
    this.child.stderr.on('data', (d) => {
      this.stderrTail = (this.stderrTail + d).slice(-64 * 1024);
      errBuf += d;
      let i;
      while ((i = errBuf.indexOf('\n')) >= 0) {
        if (this.errLines.length < 20_000) this.errLines.push({ t: Date.now(), line: errBuf.slice(0, i) });
        errBuf = errBuf.slice(i + 1);
      }
    });
    this.child.stdin.on('error', () => {});
    this.child.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.hasExited = true;
        resolve({ code, signal });
      });
    });
  }

  get pid() {
    return this.child.pid ?? -1;
  }

  get alive() {
    return !this.hasExited;
  }

  write(line) {
    if (this.alive) this.child.stdin.write(`${line}\n`);
  }

  /** The first line (seen or future) matching `pred`; rejects after `timeoutMs` or when the process exits. */
  waitForLine(pred, timeoutMs, from = 0) {
    for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i])) return Promise.resolve(this.lines[i]);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        done: (l) => {
          clearTimeout(timer);
          this.waiters.delete(w);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timeout (${timeoutMs} ms) waiting for a line from ${this.name}; stderr:\n${this.stderrTail.slice(-1500)}`));
      }, timeoutMs);
      this.waiters.add(w);
      void this.exited.then(() => {
        if (!this.waiters.has(w)) return;
        clearTimeout(timer);
        this.waiters.delete(w);
        reject(new Error(`${this.name} exited while waiting for a line; stderr:\n${this.stderrTail.slice(-1500)}`));
      });
    });
  }

  /** A signal to the whole process group. */
  signal(sig) {
    if (!this.alive || this.pid < 0) return;
    try {
      process.kill(-this.pid, sig);
    } catch {
      /* already gone */
    }
  }

  /** SIGTERM the group, SIGKILL after `graceMs`; bounded. */
  async stop(graceMs = 1500) {
    if (!this.alive) return;
    this.signal('SIGTERM');
    const t = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await Promise.race([this.exited, sleep(graceMs + 2000)]);
    clearTimeout(t);
    this.signal('SIGKILL');
  }
}

const live = new Set();
process.once('exit', () => {
  for (const t of live) t.teardownSync();
});

// The netns tests' lock (test/helpers/netns.ts): one topology at a time on this machine.
const LOCK_FILE = join(tmpdir(), 'mqtt-lb-netns-tests.lock');
const LOCK_WAIT_MS = 300_000;

function lockOwnerAlive() {
  let pid;
  try {
    pid = Number(readFileSync(LOCK_FILE, 'utf8').trim());
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

async function acquireMachineLock(log) {
  const until = Date.now() + LOCK_WAIT_MS;
  let told = false;
  for (;;) {
    try {
      const fd = openSync(LOCK_FILE, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
    }
    if (!lockOwnerAlive()) {
      rmSync(LOCK_FILE, { force: true }); // left by a killed run
      continue;
    }
    if (!told) {
      log(`waiting for ${LOCK_FILE} (a netns test run holds it), at most ${LOCK_WAIT_MS / 1000} s`);
      told = true;
    }
    if (Date.now() > until) throw new Error(`another netns run still holds ${LOCK_FILE} after ${LOCK_WAIT_MS} ms`);
    await sleep(200);
  }
}

function releaseMachineLock() {
  try {
    if (Number(readFileSync(LOCK_FILE, 'utf8').trim()) === process.pid) rmSync(LOCK_FILE, { force: true });
  } catch {
    /* already gone */
  }
}

export class Topology {
  constructor(extraBrokerHosts) {
    this.id = randomBytes(3).toString('hex');
    this.bridgeNs = `mqlbfo-br-${this.id}`;
    this.ns = {};
    this.addr = {};
    for (const r of ROLES) {
      this.ns[r] = `mqlbfo-${r}-${this.id}`;
      this.addr[r] = `${SUBNET}.${HOST_OCTET[r]}`;
    }
    this.extraBrokerHosts = extraBrokerHosts;
    this.procs = new Set();
    this.torn = false;
  }

  /** An address of the subnet (host part 1..254). */
  address(host) {
    return `${SUBNET}.${host}`;
  }

  /** `brokerHosts`: host parts of extra addresses on the broker namespace (one per broker). */
  static async create(brokerHosts, log = () => {}) {
    await acquireMachineLock(log);
    const t = new Topology(brokerHosts);
    live.add(t);
    try {
      await t.build();
    } catch (err) {
      await t.teardown();
      throw err;
    }
    return t;
  }

  allNs() {
    return [this.bridgeNs, ...ROLES.map((r) => this.ns[r])];
  }

  async build() {
    for (const n of this.allNs()) {
      await runOk('ip', ['netns', 'add', n]);
      await runOk('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    }
    const br = this.bridgeNs;
    await runOk('ip', ['-n', br, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0', 'stp_state', '0']);
    await runOk('ip', ['-n', br, 'link', 'set', 'br0', 'up']);
    for (const r of ROLES) {
      // Created in the bridge namespace, the peer end moved straight into the host's.
      await runOk('ip', ['-n', br, 'link', 'add', `p-${r}`, 'type', 'veth', 'peer', 'name', IFACE, 'netns', this.ns[r]]);
      await runOk('ip', ['-n', br, 'link', 'set', `p-${r}`, 'master', 'br0', 'up']);
      await runOk('ip', ['-n', this.ns[r], 'addr', 'add', `${this.addr[r]}/${PREFIX}`, 'dev', IFACE]);
      await runOk('ip', ['-n', this.ns[r], 'link', 'set', IFACE, 'up']);
    }
    for (const h of this.extraBrokerHosts) await runOk('ip', ['-n', this.ns.broker, 'addr', 'add', `${this.address(h)}/${PREFIX}`, 'dev', IFACE]);
  }

  exec(role, cmd, args, timeoutMs = 10_000) {
    return run('ip', ['netns', 'exec', this.ns[role], cmd, ...args], timeoutMs);
  }

  execOk(role, cmd, args, timeoutMs = 10_000) {
    return runOk('ip', ['netns', 'exec', this.ns[role], cmd, ...args], timeoutMs);
  }

  /** `ip ARGS` run inside `role`'s namespace. */
  ip(role, args, timeoutMs = 10_000) {
    return runOk('ip', ['-n', this.ns[role], ...args], timeoutMs);
  }

  spawn(role, cmd, args, env) {
    if (this.torn) throw new Error('topology already torn down');
    const p = new NsProcess(this.ns[role], cmd, args, env);
    this.procs.add(p);
    void p.exited.then(() => this.procs.delete(p));
    return p;
  }

  async mac(role) {
    const links = JSON.parse(await this.ip(role, ['-j', 'link', 'show', 'dev', IFACE]));
    return links[0].address;
  }

  /** IPv4 addresses on the host's eth0 as "a.b.c.d/p". */
  async addresses(role) {
    const links = JSON.parse(await this.ip(role, ['-j', 'addr', 'show', 'dev', IFACE]));
    return (links[0]?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
  }

  /** The client's neighbour entry for `ip`: { lladdr, state } or null. */
  async neighbour(role, ip) {
    const entries = JSON.parse(await this.ip(role, ['-j', 'neigh', 'show', 'to', ip, 'dev', IFACE]));
    return entries[0] ?? null;
  }

  /** Kills every process started here, then anything left in the namespaces, deletes them. Idempotent. */
  async teardown() {
    if (this.torn) return;
    this.torn = true;
    await Promise.all([...this.procs].map((p) => p.stop(1000)));
    for (const n of this.allNs()) {
      const pids = await run('ip', ['netns', 'pids', n], 5000);
      for (const pid of pids.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    for (const n of this.allNs()) await run('ip', ['netns', 'del', n], 10_000);
    live.delete(this);
    releaseMachineLock();
  }

  /** Last resort, from the 'exit' hook (synchronous). */
  teardownSync() {
    for (const p of this.procs) p.signal('SIGKILL');
    for (const n of this.allNs()) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', n], { timeout: 5000 }).toString();
        for (const pid of pids.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      } catch {
        /* best effort */
      }
      try {
        execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore', timeout: 5000 });
      } catch {
        /* best effort */
      }
    }
    live.delete(this);
    releaseMachineLock();
  }
}

/** Address add/delete events from `ip -ts monitor address` (IPv4). */
export class AddressMonitor {
  constructor(topo, role) {
    this.proc = topo.spawn(role, 'ip', ['-ts', 'monitor', 'address']);
  }

  events() {
    const out = [];
    for (const l of this.proc.lines) {
      // [2026-11-22T00:22:36.744731] Deleted 3: eth0    inet 10.9.9.10/24 scope global secondary eth0
      const m = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\d*\]\s+(Deleted\s+)?\d+:\s+\S+\s+inet\s+(\S+)/.exec(l);
      // No offset in the stamp: Date.parse reads it as local time, as `ip` printed it.
      if (m !== null) out.push({ t: Date.parse(m[1]), deleted: m[2] !== undefined, cidr: m[3] });
    }
    return out;
  }

  first(cidr, deleted, after = 0) {
    return this.events().find((e) => e.cidr === cidr && e.deleted === deleted && e.t >= after);
  }

  stop() {
    return this.proc.stop(500);
  }
}

/** Neighbour (ARP) changes from `ip -ts monitor neigh`: when the client's entry for the VIP moved. */
export class NeighMonitor {
  constructor(topo, role) {
    this.proc = topo.spawn(role, 'ip', ['-ts', 'monitor', 'neigh']);
  }

  /** [{t, ip, lladdr, state}] */
  events() {
    const out = [];
    for (const l of this.proc.lines) {
      // [2026-12-06T03:30:00.123456] 10.77.0.200 dev eth0 lladdr 02:..:.. REACHABLE
      const m = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\d*\]\s+(?:Deleted\s+)?(\S+)\s+dev\s+\S+(?:\s+lladdr\s+(\S+))?\s*(.*)$/.exec(l);
      if (m !== null) out.push({ t: Date.parse(m[1]), ip: m[2], lladdr: m[3] ?? null, state: m[4].trim() });
    }
    return out;
  }

  stop() {
    return this.proc.stop(500);
  }
}
