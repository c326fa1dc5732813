/**
 * `failover.track.scripts`: keepalived's `vrrp_script` + `track_script`. Each script runs every `interval`, without
 * a shell, in a process group of its own that is killed at `timeout` (what it started goes too). Its own exit
 * decides, as keepalived's does: exit 0 passes; anything else fails (another code, a signal, the timeout, a file
 * that cannot run). What it leaves running when it exits is killed with its group: a check runs every interval, and
 * leftovers would pile up. The first run decides at once (rise-fall.ts's `unknown`, as a server's first probe);
 * after that, `fall` consecutive failures make the script failing and `rise` consecutive passes passing again.
 * Until its first result a script counts as passing, but the host does not become master while a script has none
 * (`settled`, at most its `timeout`): a host whose check hangs or fails must not take the VIP for a moment first, nor
 * preempt a peer only to hand the VIP back when a weight lowers its priority a second later.
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
  /** now() when its last run started; null before the first. */
  lastStart: number | null;
}

/** A check's stderr is for its first line in a log line: no more is kept (characters). */
const SCRIPT_OUTPUT_CHARS = 16 * 1024;

async function runScript(cfg: TrackScriptConfig, signal: AbortSignal): Promise<ScriptResult> {
  const r = await runCommand(cfg.command, cfg.args, { timeoutMs: cfg.timeout, atProcessPriority: true, endsAtExit: true, maxOutputChars: SCRIPT_OUTPUT_CHARS, signal });
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
   * @param onChange called when what the scripts ask for changes (a script starts or stops failing, a first result
   *   comes, a reload changes a failing script's weight, adds one or drops one): read `fault`, `priorityPenalty` and
   *   `settled` then
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
    this.reconfigure(scripts, false);
  }

  /**
   * Every script has a first result: until then the host must not become master (at start, and after a reload adds
   * one: a host in FAULT for a script the reload replaced must not take the VIP before the new one ran).
   */
  get settled(): boolean {
    for (const t of this.tracked.values()) if (t.state.health === 'unknown') return false;
    return true;
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
   * A reload: a script kept by name keeps its state, even with another command (a failing check must not pass for a
   * moment because its arguments changed); the new settings apply at once (the weight, and an interval that ends
   * sooner: its next run moves up), and a run in progress ends on the timeout it started with. A new script counts as
   * passing until its first run, which starts now; a dropped one stops (a run in progress is killed).
   * @param notify false from the constructor: its owner reads the state itself
   */
  reconfigure(scripts: readonly TrackScriptConfig[], notify = true): void {
    if (this.closed) return;
    const before = this.snapshot();
    const next = new Map<string, Tracked>();
    for (const cfg of scripts) {
      const kept = this.tracked.get(cfg.name);
      if (kept === undefined) {
        next.set(cfg.name, { cfg, state: initialRiseFall('unknown'), timer: null, running: null, lastStart: null });
        continue;
      }
      const was = kept.cfg;
      kept.cfg = cfg;
      this.tracked.delete(cfg.name);
      next.set(cfg.name, kept);
      if (kept.state.health === 'down' && was.weight !== cfg.weight) this.logFailing(kept, 'the reload changed its weight');
      if (kept.timer !== null && kept.lastStart !== null && cfg.interval < was.interval) {
        this.clearTimer(kept.timer);
        this.schedule(kept, kept.lastStart + cfg.interval - this.now());
      }
    }
    for (const dropped of this.tracked.values()) {
      this.stop(dropped);
      if (dropped.state.health === 'down') this.log.info({ script: dropped.cfg.name }, 'failover track script removed while failing');
    }
    this.tracked = next;
    for (const t of next.values()) if (t.timer === null && t.running === null) this.schedule(t, 0);
    if (notify && this.snapshot() !== before) this.onChange();
  }

  /** Stops every script (a run in progress is killed with its process group). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.tracked.values()) this.stop(t);
    this.tracked.clear();
  }

  private snapshot(): string {
    return `${this.fault}/${this.priorityPenalty}/${this.settled}`;
  }

  private logFailing(t: Tracked, detail: string): void {
    const { name, weight } = t.cfg;
    this.log.warn({ script: name, weight, effect: weight === 0 ? 'fault' : `priority -${weight}`, detail }, 'failover track script failing');
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
    t.lastStart = started;
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
    const before = this.snapshot();
    const was = t.state.health;
    t.state = nextRiseFall(t.state, result.passed, t.cfg);
    const name = t.cfg.name;
    if (t.state.health === 'down' && was !== 'down') this.logFailing(t, result.detail);
    else if (t.state.health === 'up' && was === 'down') this.log.info({ script: name }, 'failover track script passing');
    else if (!result.passed) this.log.debug({ script: name, detail: result.detail }, 'failover track script run failed');
    if (this.snapshot() !== before) this.onChange();
    this.schedule(t, t.cfg.interval - (this.now() - started));
  }
}
