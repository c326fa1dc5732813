/**
 * Descriptor budget. Node's net.Server silently accepts-and-closes once the process is out of descriptors
 * (libuv's EMFILE trick), so clients would be reset instead of told. We size the caps so that never happens:
 * each proxied session costs two descriptors (client + server), and a reserve stays free for health probes,
 * the admin port, failover, logs and the CONNACKs of refused clients.
 *
 * The worst case the budget covers: every listener at its Node-level accept cap (hardCapFor: the MQTT cap
 * plus room to answer CONNACKs) holding client sockets, plus one server socket per session under the
 * global cap, plus the reserve.
 */
import { readFileSync } from 'node:fs';
import type { LbConfig } from '../config/types.js';
import { ADMIN_MAX_CONNECTIONS } from '../telemetry/admin-connections.js';

/** The "Max open files" soft limit in /proc/self/limits text, or null when absent. */
export function parseOpenFileLimit(procLimits: string): number | null {
  const m = /^Max open files\s+(\d+|unlimited)\s+/m.exec(procLimits);
  if (m === null) return null;
  return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
}

/** The soft RLIMIT_NOFILE of this process, or null where /proc is not available. */
export function openFileLimit(): number | null {
  try {
    return parseOpenFileLimit(readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return null;
  }
}

export interface BudgetInput {
  fileLimit: number | null;
  globalMax: number;
  /** The caps were written in the file (absent: defaults), for Clamp.written. */
  globalWritten?: boolean;
  listeners: Array<{ name: string; maxConnections: number; written?: boolean }>;
  servers: number; // the servers of all probed pools (one probe each at most)
}

export interface Budget {
  globalMax: number;
  listenerMax: Map<string, number>;
  /**
   * Each listener's last guard (Node's server.maxConnections): its cap plus room to answer refused clients in MQTT
   * (hardCapFor), plus its share of the descriptors the budget leaves over. Beyond it a client is closed at accept
   * unanswered; within it, it gets its CONNACK. Absent: hardCapFor(cap) (no open-file limit known).
   */
  listenerHard: Map<string, number>;
  warnings: string[];
  /** Each clamp among `warnings`: what it lowered (the key and its configured value, e.g. `limits.maxConnections 20000`), to what, and its warning. */
  clamps: Clamp[];
  /** Set when the open-file limit leaves room for no session at all: the message to refuse the config with. */
  noRoom: string | null;
  /**
   * Descriptors for client and server sockets together (the limit less the reserve): Infinity when no limit is known.
   * The caps make the worst case fit it for this config; Listener checks it at each accept as well, since sessions a
   * reload left above a lowered cap hold descriptors this config's caps do not count.
   */
  descriptorRoom: number;
}

/**
 * Descriptors kept free: stdio, logs, failover socket and children (64), the admin server's clients at its cap
 * (idle ones held open by anyone who can reach admin.bind must not take the probes' descriptors: a probe that
 * cannot open a socket is no verdict on the server, but sessions could then not be dialled either), and two
 * per server for probes.
 */
export function reserveFor(servers: number): number {
  return 64 + ADMIN_MAX_CONNECTIONS + servers * 2;
}

/**
 * Node's server.maxConnections for a listener whose MQTT-answered cap is `max`: room beyond the cap to
 * answer CONNACKs (listener_full) before Node itself drops connections at accept (the last guard).
 */
export function hardCapFor(max: number): number {
  return max + Math.max(16, Math.ceil(max * 0.05));
}

/** What to do about a clamp (a new user's audit: every default config said it, and never what to do). */
function clampAdvice(written: boolean): string {
  return written
    ? ' (raise the open-file limit: ulimit -n, systemd LimitNOFILE; or set the cap this low yourself to silence this)'
    : ' (the default cap; for more sessions, raise the open-file limit: ulimit -n, systemd LimitNOFILE)';
}

/** Refused clients hold a descriptor while their CONNACK lingers: ~5% headroom over two per session. */
const DESCRIPTORS_PER_SESSION = 2 * 1.05;

/**
 * The fewest descriptors beyond the reserve that hold one session on each of `listeners` listeners (the rules of
 * clampToBudget: sessions at two descriptors and a bit each, client sockets with room to refuse beside one server
 * socket per session). Grows with `usable`, so the first that fits is found by counting up (a few hundred steps).
 */
function smallestUsable(listeners: number, globalMax: number): number {
  const perListener = hardCapFor(1);
  for (let usable = 1; ; usable++) {
    const sessions = Math.min(Math.max(1, globalMax), Math.floor(usable / DESCRIPTORS_PER_SESSION));
    if (sessions >= 1 && usable - Math.min(sessions, listeners) >= listeners * perListener) return usable;
  }
}

export interface Clamp {
  key: string;
  to: number;
  warning: string;
  /**
   * The cap was written in the file: said as a warning. A default one sized to the open-file limit is a note (HAProxy
   * derives its default maxconn from the limit without a word): a new user's audit saw the line at every start of a
   * default config, on a host whose hard limit is 20,000.
   */
  written: boolean;
}

export function clampToBudget(input: BudgetInput): Budget {
  const warnings: string[] = [];
  const clamps: Clamp[] = [];
  const listenerMax = new Map<string, number>();
  const listenerHard = new Map<string, number>();
  if (input.fileLimit === null) {
    for (const l of input.listeners) listenerMax.set(l.name, l.maxConnections);
    return { globalMax: input.globalMax, listenerMax, listenerHard, warnings, clamps, noRoom: null, descriptorRoom: Number.POSITIVE_INFINITY };
  }
  const limit = input.fileLimit;
  const usable = Math.max(0, limit - reserveFor(input.servers));
  const sessions = Math.floor(usable / DESCRIPTORS_PER_SESSION);
  const globalMax = Math.min(input.globalMax, sessions);
  let caps = input.listeners.map((l) => Math.min(l.maxConnections, sessions));
  const totalHard = (cs: number[]): number => cs.reduce((sum, c) => sum + hardCapFor(c), 0);
  // The worst case: every listener's client sockets up to its guard, beside one server socket per session, of which
  // there are no more than the global cap allows and the listeners hold together (a limits audit: server sockets
  // set aside for all 29 sessions of the global cap left two listeners no room at all, where 7 each fitted).
  const need = (cs: number[]): number => totalHard(cs) + Math.min(globalMax, cs.reduce((sum, c) => sum + c, 0));
  const shared = need(caps) > usable;
  if (shared) {
    // Max-min fair: the highest level L such that every listener capped at L fits; a listener below L keeps its
    // cap. (Scaling every cap by one factor lowered a 2-session listener to 1 beside two of 10,000.) A listener
    // is sized by what it can hold: never more sessions than the global cap.
    const held = caps.map((c) => Math.min(c, globalMax));
    const fits = (level: number): boolean => need(held.map((c) => Math.min(c, level))) <= usable;
    let lo = 0;
    let hi = Math.max(0, ...held);
    if (!fits(0)) {
      caps = caps.map(() => 0); // a limit too small for anything
    } else {
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        if (fits(mid)) lo = mid;
        else hi = mid - 1;
      }
      caps = caps.map((c) => Math.min(c, lo));
    }
  }
  // The global cap stays as the descriptors allow it, even above what the listeners hold together: lowered to their
  // sum, a client past a full listener would be refused as `global_full`, not `listener_full`.
  if (globalMax < input.globalMax) {
    const warning = `limits.maxConnections ${input.globalMax} clamped to ${globalMax}: the open-file limit is ${limit} and each session needs two descriptors, plus 5 % for refused clients and a reserve for probes and the admin port${clampAdvice(input.globalWritten === true)}`;
    // Written or not is part of the key: a reload that writes the default value makes the note a warning (a re-audit).
    clamps.push({ key: `limits.maxConnections ${input.globalMax}${input.globalWritten === true ? ' written' : ''}`, to: globalMax, warning, written: input.globalWritten === true });
    warnings.push(warning);
  }
  input.listeners.forEach((l, i) => {
    if (caps[i]! >= l.maxConnections) return;
    const advice = clampAdvice(l.written === true);
    const warning =
      shared && caps[i] === globalMax && l.maxConnections > globalMax
        ? `listeners[${i}].maxConnections (listener ${l.name}) ${l.maxConnections} lowered to ${caps[i]}: it holds no more sessions than limits.maxConnections, and the client sockets of every listener must fit the open-file limit ${limit}${advice}`
        : shared
        ? `listeners[${i}].maxConnections (listener ${l.name}) ${l.maxConnections} lowered to ${caps[i]}: the client sockets of every listener (with room to refuse in MQTT) and a server socket per session must fit the open-file limit ${limit}${advice}`
        : `listeners[${i}].maxConnections (listener ${l.name}) ${l.maxConnections} clamped to ${caps[i]}: the open-file limit is ${limit} and each session needs two descriptors, plus 5 % for refused clients and a reserve for probes and the admin port${advice}`;
    clamps.push({ key: `listener ${l.name} maxConnections ${l.maxConnections}${l.written === true ? ' written' : ''}`, to: caps[i]!, warning, written: l.written === true });
    warnings.push(warning);
  });
  input.listeners.forEach((l, i) => listenerMax.set(l.name, caps[i]!));
  // What the worst case leaves of the client sockets' room goes to the listeners' guards, in equal shares: a storm
  // past a full listener is then answered in MQTT as far as descriptors allow, not reset past a few more than the
  // cap (an audit: of 300 clients past a full listener of 50, 16 got a CONNACK and 284 a reset or a bare FIN, with
  // 20,000 descriptors and ~100 in use; and 66 silent connections locked everyone out of it).
  const slack = Math.max(0, usable - need(caps));
  const share = input.listeners.length > 0 ? Math.floor(slack / input.listeners.length) : 0;
  input.listeners.forEach((l, i) => listenerHard.set(l.name, hardCapFor(caps[i]!) + share));
  // A balancer that would refuse every client is no balancer: say so instead of starting one (HAProxy refuses to
  // start when its maxconn does not fit the FD limit either). The smallest limit for one session per listener:
  const needed = reserveFor(input.servers) + smallestUsable(input.listeners.length, input.globalMax);
  const noRoom =
    globalMax === 0 || caps.every((c) => c === 0)
      ? `the open-file limit ${limit} leaves no room for a client session (${reserveFor(input.servers)} descriptors are kept for health probes, the admin port and logs): raise it (ulimit -n, systemd LimitNOFILE) to at least ${needed}, better far more`
      : null;
  return { globalMax, listenerMax, listenerHard, warnings, clamps, noRoom, descriptorRoom: usable };
}

/** A listener's cap (MQTT-answered) and its last guard (Node's, at accept), from a budget. */
export interface ListenerCaps {
  max: number;
  hard: number;
}

export function listenerCaps(budget: Budget, name: string, configured: number): ListenerCaps {
  const max = budget.listenerMax.get(name) ?? configured;
  return { max, hard: budget.listenerHard.get(name) ?? hardCapFor(max) };
}

/** The budget of a whole config at a given open-file limit (the running process's by default). */
export function budgetForConfig(config: Pick<LbConfig, 'limits' | 'listeners' | 'pools'>, fileLimit: number | null = openFileLimit()): Budget {
  let servers = 0;
  // Probed servers only: with `health.type: none` a pool's servers hold no probe socket.
  for (const p of Object.values(config.pools)) if (p.health.type !== 'none') servers += p.servers.length;
  return clampToBudget({
    fileLimit,
    globalMax: config.limits.maxConnections,
    globalWritten: config.limits.maxConnectionsWritten === true,
    listeners: config.listeners.map((l) => ({ name: l.name, maxConnections: l.maxConnections, written: l.maxConnectionsWritten === true })),
    servers,
  });
}

/**
 * The clamp warnings of `budget` worth saying, given what was said before (key -> value): a new clamp, or one whose
 * value moved by 1 % or more. The reserve for probes moves a clamp by a descriptor or two per server a reload adds
 * or removes; a soak saw 9,429 and 9,428 said at every reload. Returns the warnings and what counts as said now.
 */
export function clampsToSay(before: ReadonlyMap<string, number>, budget: Pick<Budget, 'clamps'>): { say: Clamp[]; said: Map<string, number> } {
  const say: Clamp[] = [];
  const said = new Map<string, number>();
  for (const clamp of budget.clamps) {
    const { key, to } = clamp;
    const was = before.get(key);
    if (was !== undefined && !movedByOnePercent(was, to)) {
      said.set(key, was);
      continue;
    }
    said.set(key, to);
    say.push(clamp);
  }
  return { say, said };
}

/**
 * Whether a budget figure moved enough to say again: by 1 % or more (at least 1). The probe reserve moves clamps and
 * accept guards by a descriptor or two per server a reload adds or removes, which is not worth a line.
 */
export function movedByOnePercent(was: number, now: number): boolean {
  return Math.abs(now - was) >= Math.max(1, was * 0.01);
}
