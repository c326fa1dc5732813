/**
 * A throwaway L2 network of network namespaces for failover tests (vrrp-facts §8, keepalived's test/mk_if):
 *
 *   ns "br"  : bridge br0 (multicast snooping off), one veth port per host: p-lb1, p-lb2, p-client, p-broker
 *   ns lb1, lb2, client, broker : eth0 (the other end of the veth), 10.231.7.0/24 (inside the namespaces only)
 *
 * Every name carries a random suffix, so names never collide; still, one topology at a time runs on the machine
 * (a lock file, see acquireMachineLock). `teardown()` always kills every process
 * it started (process groups, then whatever is left in the namespaces) and deletes every namespace; waits are
 * bounded. A process 'exit' hook repeats the namespace deletion synchronously if teardown never ran.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Role = 'lb1' | 'lb2' | 'client' | 'broker';
export const ROLES: readonly Role[] = ['lb1', 'lb2', 'client', 'broker'];

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface NeighEntry {
  dst: string;
  lladdr?: string;
  state?: string[];
}

const HOST_OCTET: Record<Role, number> = { lb1: 11, lb2: 12, client: 100, broker: 50 };

/**
 * True when this process can create namespaces. Network namespaces need Linux, root and iproute2. A developer without
 * them skips the netns suites, told why; in CI (CI=true) a missing prerequisite is an error, so the failover tests can
 * never be skipped silently there.
 */
export function netnsAvailable(): boolean {
  let why: string | null = null;
  if (process.platform !== 'linux') why = 'not Linux';
  else if (process.getuid?.() !== 0) why = 'not root';
  else {
    try {
      execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 5000 });
    } catch {
      why = '`ip netns list` failed (iproute2 missing?)';
    }
  }
  if (why === null) return true;
  if (process.env['CI'] === 'true') throw new Error(`netns tests cannot run in CI: ${why}`);
  console.warn(`netns tests skipped: ${why} (they run, and must pass, in CI)`);
  return false;
}

function run(cmd: string, args: readonly string[], timeoutMs = 10_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function runOk(cmd: string, args: readonly string[], timeoutMs = 10_000): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every `stepMs` until it holds; throws after `timeoutMs` naming `what`. */
export async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number, stepMs = 20): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > until) throw new Error(`timeout (${timeoutMs} ms) waiting for: ${what}`);
    await sleep(stepMs);
  }
}

/** A process started inside a namespace, in its own process group. */
export class NsProcess {
  readonly child: ChildProcess;
  readonly ns: string;
  readonly lines: string[] = [];
  private stderrTail = '';
  private readonly waiters = new Set<{ pred: (l: string) => boolean; done: (l: string) => void }>();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private hasExited = false;

  constructor(ns: string, cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv) {
    this.ns = ns;
    this.child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
      detached: true, // own process group: teardown kills the whole group
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let buf = '';
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.lines.push(line);
        for (const w of [...this.waiters]) if (w.pred(line)) w.done(line);
      }
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      this.stderrTail = (this.stderrTail + d).slice(-64 * 1024);
    });
    this.child.stdin!.on('error', () => {}); // a dead child must not crash the test process
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.hasExited = true;
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return !this.hasExited;
  }

  get stderr(): string {
    return this.stderrTail;
  }

  write(line: string): void {
    if (this.alive) this.child.stdin!.write(`${line}\n`);
  }

  /** Resolves with the first line (already seen or future) matching `pred`; rejects after `timeoutMs`. */
  waitForLine(pred: (line: string) => boolean, timeoutMs: number, from = 0): Promise<string> {
    for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i]!)) return Promise.resolve(this.lines[i]!);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        done: (l: string) => {
          clearTimeout(timer);
          this.waiters.delete(w);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timeout (${timeoutMs} ms) waiting for a line in ${this.ns}; stderr tail:\n${this.stderrTail.slice(-2000)}`));
      }, timeoutMs);
      this.waiters.add(w);
      void this.exited.then(() => {
        if (!this.waiters.has(w)) return;
        clearTimeout(timer);
        this.waiters.delete(w);
        reject(new Error(`process in ${this.ns} exited while waiting for a line; stderr tail:\n${this.stderrTail.slice(-2000)}`));
      });
    });
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.alive || this.pid < 0) return;
    try {
      process.kill(-this.pid, sig);
    } catch {
      /* already gone */
    }
  }

  /**
   * A signal to the started process only, not its group (`ip netns exec` execs the command, so this is the
   * command's own pid): children it spawned (ip, arping) are left alone, as with `kill PID`.
   */
  signalProcess(sig: NodeJS.Signals): void {
    if (!this.alive || this.pid < 0) return;
    try {
      process.kill(this.pid, sig);
    } catch {
      /* already gone */
    }
  }

  /** SIGTERM the group, SIGKILL after `graceMs`; bounded. */
  async stop(graceMs = 2000): Promise<void> {
    if (!this.alive) return;
    this.signal('SIGTERM');
    const t = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await Promise.race([this.exited, sleep(graceMs + 2000)]);
    clearTimeout(t);
    this.signal('SIGKILL');
  }
}

const live = new Set<NetnsTopology>();
process.once('exit', () => {
  for (const t of live) t.teardownSync();
});

/**
 * One topology at a time on this machine (vitest runs test files in parallel): two suites each with two LB
 * hosts, brokers and 5 ms probers starve the heartbeat threads of a 2-core box, and both see spurious
 * takeovers at the same instant. A lock file holding the owner's pid; a dead owner's lock is taken over.
 */
const LOCK_FILE = join(tmpdir(), 'mqtt-lb-netns-tests.lock');
const LOCK_WAIT_MS = 200_000;
let lockDepth = 0;

/** The lock's owner, if its file holds one whole pid line; null while it cannot be read or is not whole. */
function lockOwner(): { pid: number; ino: number; ageMs: number } | null {
  try {
    const m = /^(\d+)\n$/.exec(readFileSync(LOCK_FILE, 'utf8'));
    const st = statSync(LOCK_FILE);
    return m === null ? { pid: 0, ino: st.ino, ageMs: Date.now() - st.mtimeMs } : { pid: Number(m[1]), ino: st.ino, ageMs: 0 };
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the lock file if it is still the stale one judged (the same inode): renamed aside first, so that of two
 * waiters judging it stale at once only one removes it, and a lock taken meanwhile by a third is put back.
 */
function removeStaleLock(staleIno: number): void {
  const aside = `${LOCK_FILE}.stale.${process.pid}`;
  try {
    renameSync(LOCK_FILE, aside);
  } catch {
    return; // gone already: another waiter removed it
  }
  try {
    if (statSync(aside).ino !== staleIno) linkSync(aside, LOCK_FILE); // a live lock: back where it was
  } catch {
    /* EEXIST: the lock is held again */
  }
  rmSync(aside, { force: true });
}

async function acquireMachineLock(): Promise<void> {
  if (lockDepth++ > 0) return; // this process already holds it
  const until = Date.now() + LOCK_WAIT_MS;
  // Created whole, then linked into place: a lock file is never seen empty (an empty one read as pid 0, "dead",
  // and a second file took the lock while the first held it).
  const mine = `${LOCK_FILE}.${process.pid}`;
  writeFileSync(mine, `${process.pid}\n`);
  try {
    for (;;) {
      try {
        linkSync(mine, LOCK_FILE);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          lockDepth--;
          throw err;
        }
      }
      const owner = lockOwner();
      // A dead owner's lock (a killed run), or one that never became whole (written by an older helper).
      if (owner !== null && (owner.pid > 0 ? !alive(owner.pid) : owner.ageMs > 5000)) {
        removeStaleLock(owner.ino);
        continue;
      }
      if (Date.now() > until) {
        lockDepth--;
        throw new Error(`another netns test run still holds ${LOCK_FILE} after ${LOCK_WAIT_MS} ms`);
      }
      await sleep(200);
    }
  } finally {
    rmSync(mine, { force: true });
  }
}

function releaseMachineLock(): void {
  if (lockDepth === 0 || --lockDepth > 0) return;
  try {
    if (lockOwner()?.pid === process.pid) rmSync(LOCK_FILE, { force: true });
  } catch {
    /* already gone */
  }
}

export class NetnsTopology {
  readonly id: string;
  readonly bridgeNs: string;
  readonly ns: Record<Role, string>;
  readonly addr: Record<Role, string>;
  readonly subnet = '10.231.7';
  readonly prefix = 24;
  readonly iface = 'eth0';
  private readonly procs = new Set<NsProcess>();
  private torn = false;

  private constructor() {
    this.id = randomBytes(3).toString('hex');
    this.bridgeNs = `mqlb-br-${this.id}`;
    this.ns = { lb1: `mqlb-lb1-${this.id}`, lb2: `mqlb-lb2-${this.id}`, client: `mqlb-client-${this.id}`, broker: `mqlb-broker-${this.id}` };
    this.addr = { lb1: '', lb2: '', client: '', broker: '' };
    for (const r of ROLES) this.addr[r] = `${this.subnet}.${HOST_OCTET[r]}`;
  }

  /** An address of the test subnet for a VIP or extra host (host part 1..254). */
  address(host: number): string {
    return `${this.subnet}.${host}`;
  }

  static async create(): Promise<NetnsTopology> {
    await acquireMachineLock();
    const t = new NetnsTopology();
    live.add(t);
    try {
      await t.build();
    } catch (err) {
      await t.teardown();
      throw err;
    }
    return t;
  }

  private allNs(): string[] {
    return [this.bridgeNs, ...ROLES.map((r) => this.ns[r])];
  }

  private async build(): Promise<void> {
    for (const n of this.allNs()) {
      await runOk('ip', ['netns', 'add', n]);
      await runOk('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    }
    const br = this.bridgeNs;
    await runOk('ip', ['-n', br, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0', 'stp_state', '0']);
    await runOk('ip', ['-n', br, 'link', 'set', 'br0', 'up']);
    for (const r of ROLES) await this.plugIn(r);
  }

  /** The host's eth0 (with its address) on the bridge. */
  private async plugIn(r: Role): Promise<void> {
    const br = this.bridgeNs;
    // Created inside the bridge namespace, the peer end moved straight into the host namespace:
    // nothing is ever created in the root namespace.
    await runOk('ip', ['-n', br, 'link', 'add', `p-${r}`, 'type', 'veth', 'peer', 'name', this.iface, 'netns', this.ns[r]]);
    await runOk('ip', ['-n', br, 'link', 'set', `p-${r}`, 'master', 'br0', 'up']);
    await runOk('ip', ['-n', this.ns[r], 'addr', 'add', `${this.addr[r]}/${this.prefix}`, 'dev', this.iface]);
    await runOk('ip', ['-n', this.ns[r], 'link', 'set', this.iface, 'up']);
  }

  /** Deletes the host's eth0 (its bridge end goes with it), waits `goneMs`, and makes it again (a new interface index). */
  async recreateLink(role: Role, goneMs: number): Promise<void> {
    await runOk('ip', ['-n', this.ns[role], 'link', 'del', this.iface]);
    await sleep(goneMs);
    await this.plugIn(role);
  }

  exec(ns: string, cmd: string, args: readonly string[], timeoutMs = 10_000): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', ns, cmd, ...args], timeoutMs);
  }

  async execOk(ns: string, cmd: string, args: readonly string[], timeoutMs = 10_000): Promise<string> {
    return runOk('ip', ['netns', 'exec', ns, cmd, ...args], timeoutMs);
  }

  /** Starts `cmd args` inside `ns` (its own process group); teardown stops it. */
  spawn(ns: string, cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv): NsProcess {
    if (this.torn) throw new Error('topology already torn down');
    const p = new NsProcess(ns, cmd, args, env);
    this.procs.add(p);
    void p.exited.then(() => this.procs.delete(p));
    return p;
  }

  /** Pulls the host's cable: its bridge port goes down, the host's eth0 loses carrier. */
  async cutLink(role: Role): Promise<void> {
    await runOk('ip', ['-n', this.bridgeNs, 'link', 'set', `p-${role}`, 'down']);
  }

  async restoreLink(role: Role): Promise<void> {
    await runOk('ip', ['-n', this.bridgeNs, 'link', 'set', `p-${role}`, 'up']);
  }

  /**
   * Drops traffic from `role` to `to` (a blackhole route for `to`/32 inside `role`), or with `unreachable` refuses it
   * at once (EHOSTUNREACH), as when the neighbour lookup for `to` fails.
   */
  async blockRoute(role: Role, to: string, type: 'blackhole' | 'unreachable' = 'blackhole'): Promise<void> {
    await runOk('ip', ['-n', this.ns[role], 'route', 'add', type, `${to}/32`]);
  }

  async unblockRoute(role: Role, to: string, type: 'blackhole' | 'unreachable' = 'blackhole'): Promise<void> {
    await run('ip', ['-n', this.ns[role], 'route', 'del', type, `${to}/32`]);
  }

  async neigh(role: Role = 'client'): Promise<NeighEntry[]> {
    return JSON.parse(await runOk('ip', ['-n', this.ns[role], '-j', 'neigh', 'show', 'dev', this.iface])) as NeighEntry[];
  }

  async mac(role: Role): Promise<string> {
    const links = JSON.parse(await runOk('ip', ['-n', this.ns[role], '-j', 'link', 'show', 'dev', this.iface])) as Array<{ address: string }>;
    return links[0]!.address;
  }

  /** IPv4 addresses on the host's eth0 as "a.b.c.d/p". */
  async addresses(role: Role): Promise<string[]> {
    const links = JSON.parse(await runOk('ip', ['-n', this.ns[role], '-j', 'addr', 'show', 'dev', this.iface])) as Array<{
      addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
    }>;
    return (links[0]?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
  }

  /** Which LB hosts hold `cidr` on eth0 right now (one `ip -j addr` per host, lb1 first). */
  async vipHolders(cidr: string): Promise<Role[]> {
    const out: Role[] = [];
    for (const r of ['lb1', 'lb2'] as const) if ((await this.addresses(r)).includes(cidr)) out.push(r);
    return out;
  }

  /** Watches address changes on the host's interfaces (`ip -ts monitor address`), from now on. */
  monitorAddresses(role: Role): AddressMonitor {
    return new AddressMonitor(this.spawn(this.ns[role], 'ip', ['-ts', 'monitor', 'address']));
  }

  /** Stops every process, kills what is left in the namespaces, deletes the namespaces. Idempotent. */
  async teardown(): Promise<void> {
    if (this.torn) return;
    this.torn = true;
    await Promise.all([...this.procs].map((p) => p.stop(1500)));
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

  /** Last resort from the process 'exit' hook. */
  teardownSync(): void {
    for (const p of this.procs) p.signal('SIGKILL');
    for (const n of this.allNs()) {
      try {
        execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore', timeout: 5000 });
      } catch {
        /* best effort */
      }
    }
    releaseMachineLock();
  }
}

export interface AddressEvent {
  /** Wall-clock ms of the kernel notification, as stamped by `ip -ts` (local time, same clock as Date.now()). */
  t: number;
  deleted: boolean;
  /** "a.b.c.d/p" */
  cidr: string;
}

/** Address add/delete events from `ip -ts monitor address` (IPv4 only). */
export class AddressMonitor {
  constructor(readonly proc: NsProcess) {}

  events(): AddressEvent[] {
    const out: AddressEvent[] = [];
    for (const l of this.proc.lines) {
      // [2026-11-22T00:22:36.744731] Deleted 3: eth0    inet 10.9.9.10/24 scope global secondary eth0
      const m = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\d*\]\s+(Deleted\s+)?\d+:\s+\S+\s+inet\s+(\S+)/.exec(l);
      if (m === null) continue;
      // No offset in the stamp: Date.parse reads it as local time, as `ip` printed it.
      out.push({ t: Date.parse(m[1]!), deleted: m[2] !== undefined, cidr: m[3]! });
    }
    return out;
  }

  first(cidr: string, deleted: boolean): AddressEvent | undefined {
    return this.events().find((e) => e.cidr === cidr && e.deleted === deleted);
  }

  async stop(): Promise<void> {
    await this.proc.stop(1000);
  }
}
