/**
 * `failover.track.scripts`: keepalived's `vrrp_script` + `track_script`. Each script runs every `interval`, without
 * a shell, in a process group of its own that is killed at `timeout` (what it started goes too). Exit 0 passes;
 * anything else fails: another code, a signal, the timeout, a file that cannot run. `fall` consecutive failures
 * make the script failing, `rise` consecutive passes passing again (rise-fall.ts, as the health checks). A script
 * starts out passing, as keepalived's do without `init_fail`, so a start does not wait for it.
 *
 * While a script fails, weight 0 puts the host in FAULT: it resigns its VIPs. A weight N lowers the priority by N
 * instead, as keepalived's negative weight does; whether that moves the VIP depends on the two hosts' priorities.
 *
 * Runs in the heartbeat thread: a busy proxy loop neither delays a run nor hides its result. One run at a time per
 * script; the next starts `interval` after the previous one started, or at once if that one took longer.
 */
import { describeResult, runCommand } from './command.js';
import type { LogSink } from './log.js';
import { initialRiseFall, nextRiseFall, type RiseFallState } from '../health/rise-fall.js';
import type { TrackScriptConfig } from '../config/types.js';

export interface ScriptResult {
  passed: boolean;
  /** Why it failed (the command, exit code or signal, first line of stderr); '' when it passed. */
  detail: string;
}

/** Runs one script once. Never rejects. */
export type ScriptRunner = (cfg: TrackScriptConfig, signal: AbortSignal) => Promise<ScriptResult>;

export interface TrackScriptsOptions {
  run?: ScriptRunner;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

interface Tracked {
  cfg: TrackScriptConfig;
  state: RiseFallState;
  timer: unknown;
  /** Set while a run is in progress: cancels it (a reload that drops the script, the stop). */
  running: AbortController | null;
}

async function runScript(cfg: TrackScriptConfig, signal: AbortSignal): Promise<ScriptResult> {
  const r = await runCommand(cfg.command, cfg.args, { timeoutMs: cfg.timeout, processGroup: true, signal });
  // Killed at the timeout counts as failed even when the script itself had exited 0 (a child held its output).
  const passed = r.code === 0 && !r.timedOut && !r.aborted;
  return { passed, detail: passed ? '' : describeResult(cfg.command, cfg.args, r) };
}

export class TrackScripts {
  private tracked = new Map<string, Tracked>();
  private closed = false;
  private readonly run: ScriptRunner;
  private readonly now: () => number;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;

  /**
   * @param onChange called when what the scripts ask for changes (a script starts or stops failing, a reload
   *   changes a failing script's weight or drops it): read `fault` and `priorityPenalty` then
   */
  constructor(
    scripts: readonly TrackScriptConfig[],
    private readonly log: LogSink,
    private readonly onChange: () => void,
    opts: TrackScriptsOptions = {},
  ) {
    this.run = opts.run ?? runScript;
    this.now = opts.now ?? (() => performance.now());
    this.setTimer = opts.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = opts.clearTimer ?? ((h) => clearTimeout(h as NodeJS.Timeout));
    this.reconfigure(scripts);
  }

  /** A failing script with weight 0. */
  get fault(): boolean {
    for (const t of this.tracked.values()) if (t.state.health === 'down' && t.cfg.weight === 0) return true;
    return false;
  }

  /** The weights of the failing scripts, summed. */
  get priorityPenalty(): number {
    let n = 0;
    for (const t of this.tracked.values()) if (t.state.health === 'down') n += t.cfg.weight;
    return n;
  }

  /** The names of the failing scripts (status, logs). */
  failing(): string[] {
    return [...this.tracked.values()].filter((t) => t.state.health === 'down').map((t) => t.cfg.name);
  }

  /**
   * A reload: a script kept by name with the same command and arguments keeps its state and its schedule (its new
   * interval, timeout, rise, fall and weight apply from its next run; the weight at once); any other starts anew,
   * passing, and runs now. A dropped script stops (a run in progress is killed).
   */
  reconfigure(scripts: readonly TrackScriptConfig[]): void {
    if (this.closed) return;
    const before = this.snapshot();
    const next = new Map<string, Tracked>();
    for (const cfg of scripts) {
      const kept = this.tracked.get(cfg.name);
      if (kept !== undefined && kept.cfg.command === cfg.command && sameArgs(kept.cfg.args, cfg.args)) {
        kept.cfg = cfg;
        this.tracked.delete(cfg.name);
        next.set(cfg.name, kept);
      } else {
        next.set(cfg.name, { cfg, state: initialRiseFall('up'), timer: null, running: null });
      }
    }
    for (const dropped of this.tracked.values()) this.stop(dropped);
    this.tracked = next;
    for (const t of next.values()) if (t.timer === null && t.running === null) this.schedule(t, 0);
    if (this.snapshot() !== before) this.onChange();
  }

  /** Stops every script (a run in progress is killed with its process group). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.tracked.values()) this.stop(t);
    this.tracked.clear();
  }

  private snapshot(): string {
    return `${this.fault}/${this.priorityPenalty}`;
  }

  private stop(t: Tracked): void {
    if (t.timer !== null) this.clearTimer(t.timer);
    t.timer = null;
    t.running?.abort();
    t.running = null;
  }

  private schedule(t: Tracked, delayMs: number): void {
    t.timer = this.setTimer(() => void this.runOnce(t), Math.max(0, delayMs));
  }

  private async runOnce(t: Tracked): Promise<void> {
    t.timer = null;
    if (this.closed || this.tracked.get(t.cfg.name) !== t) return;
    const started = this.now();
    const cancel = new AbortController();
    t.running = cancel;
    let result: ScriptResult;
    try {
      result = await this.run(t.cfg, cancel.signal);
    } catch (err) {
      result = { passed: false, detail: `${t.cfg.command}: ${(err as Error).message}` };
    }
    if (t.running === cancel) t.running = null;
    // Dropped by a reload, or stopped, while it ran: its result no longer counts.
    if (cancel.signal.aborted || this.closed || this.tracked.get(t.cfg.name) !== t) return;
    const was = t.state.health;
    t.state = nextRiseFall(t.state, result.passed, t.cfg);
    const { name, weight } = t.cfg;
    if (t.state.health !== was) {
      if (t.state.health === 'down') {
        this.log.warn({ script: name, weight, effect: weight === 0 ? 'fault' : `priority -${weight}`, detail: result.detail }, 'failover track script failing');
      } else {
        this.log.info({ script: name }, 'failover track script passing');
      }
      this.onChange();
    } else if (!result.passed) {
      this.log.debug({ script: name, detail: result.detail }, 'failover track script run failed');
    }
    this.schedule(t, t.cfg.interval - (this.now() - started));
  }
}

function sameArgs(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
