/**
 * The kernel's interface events, as they happen: `ip -o monitor link address` (netlink) for the failover
 * interface, so that a lost or regained carrier, or a VIP removed behind our back, is acted on within milliseconds
 * instead of at the next watch poll (500 ms; keepalived listens on netlink too). The failover benchmark measured
 * link-up seen 338-422 ms late by the poll against keepalived's 2-4 ms, on every failback after a link cut.
 *
 * Each event only asks for a poll now (`onEvent`); the poll reads the interface and decides, as it always has, and
 * still runs every 500 ms for whatever an event would miss. A monitor that exits is started again after
 * restartDelay (1 s, doubling, at most 30 s); the polls cover the gap.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { restartDelay } from '../restart-delay.js';
import { childEnded, childStarted } from './children.js';
import { COMMAND_ENV } from './command.js';
import { isInterfaceName } from './ipv4.js';
import type { LogSink } from './log.js';
import { IP_COMMAND } from './vip.js';

/** A monitor that ran this long before it exited starts again at the first delay. */
const STABLE_RUN_MS = 60_000;
/** An `ip -o` line is short; a longer unterminated one is not ours to keep. */
const MAX_PARTIAL_LINE = 64 * 1024;

export type SpawnMonitor = (args: readonly string[]) => ChildProcess;

// detached: a process group of its own, as every command the failover runs (command.ts): a hang-up sent to
// mqtt-lb's group would otherwise end the monitor as well.
const spawnIp: SpawnMonitor = (args) => spawn(IP_COMMAND, args, { detached: true, stdio: ['ignore', 'pipe', 'ignore'], env: COMMAND_ENV, windowsHide: true });

/**
 * True when an `ip -o monitor link address` line concerns `iface`: `3: eth0: <...>` (link), `3: eth0@if4: <...>`
 * (a veth), `3: eth0    inet 10.0.0.5/24 ...` (address), each possibly after `Deleted `.
 */
export function monitorLineConcerns(line: string, iface: string): boolean {
  const m = /^(?:Deleted\s+)?\d+:\s+([^\s:@]+)/.exec(line);
  return m !== null && m[1] === iface;
}

export class LinkMonitor {
  private child: ChildProcess | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private closed = false;
  private partial = '';

  constructor(
    private readonly iface: string,
    private readonly onEvent: () => void,
    private readonly log: LogSink,
    private readonly spawnMonitor: SpawnMonitor = spawnIp,
  ) {
    if (!isInterfaceName(iface)) throw new RangeError(`invalid interface name ${iface}`);
  }

  start(): void {
    if (this.closed || this.child !== null) return;
    const startedAt = performance.now();
    let child: ChildProcess;
    try {
      child = this.spawnMonitor(['-o', 'monitor', 'link', 'address']);
    } catch (err) {
      this.ended(startedAt, err);
      return;
    }
    this.child = child;
    this.partial = '';
    childStarted(child, IP_COMMAND);
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => this.onData(chunk));
    let ended = false;
    const end = (err: unknown) => {
      if (ended) return;
      ended = true;
      if (this.child === child) this.child = null;
      childEnded(child);
      this.ended(startedAt, err);
    };
    child.once('error', (err) => end(err));
    child.once('exit', (code, signal) => end(code !== null ? `exit ${code}` : `signal ${signal ?? '?'}`));
  }

  /** Idempotent: no restart after it, and the running monitor is killed. */
  close(): void {
    this.closed = true;
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.child?.kill('SIGTERM');
    this.child = null;
  }

  private onData(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    if (this.partial.length > MAX_PARTIAL_LINE) this.partial = '';
    // One poll for a burst of lines: the poll reads the whole interface anyway.
    if (lines.some((l) => monitorLineConcerns(l, this.iface))) this.onEvent();
  }

  private ended(startedAt: number, why: unknown): void {
    if (this.closed) return;
    if (performance.now() - startedAt >= STABLE_RUN_MS) this.failures = 0;
    const retryInMs = restartDelay(this.failures++);
    const detail = why instanceof Error ? ((why as NodeJS.ErrnoException).code ?? why.message) : String(why);
    this.log.warn({ iface: this.iface, detail, retryInMs }, 'failover: interface monitor ended: polling only until it restarts');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.start();
    }, retryInMs);
  }
}
