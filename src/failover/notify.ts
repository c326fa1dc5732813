/**
 * The `failover.notify` hook: an executable called with the new state (`master`, `backup`, `fault`, and `stop`
 * when the balancer stops and gives up its addresses, as keepalived's STOP) and the router id as arguments.
 * Never awaited by the advert loop (a slow hook must not decide the election, keepalived#2389), but run one at
 * a time in order (keepalived's notify FIFO lesson, #996), each with a kill timeout that takes the hook's own
 * children with it. Calls that wait behind a running hook are merged per router id: the hook learns the state
 * the instance is in when its turn comes, not a backlog of stale ones (a hook of 1 s under a flap of 36
 * transitions was still told of them 16 s after the state had settled, and the stop's call was lost behind
 * them). Failures are logged, never thrown.
 */
import { describeResult, runCommand } from './command.js';
import type { LogSink } from './log.js';
import type { FailoverState } from './state-machine.js';

export const NOTIFY_TIMEOUT_MS = 30_000;

type NotifyState = FailoverState | 'stop';

interface NotifyCall {
  routerId: number;
  state: NotifyState;
}

export class NotifyRunner {
  /** Calls not started yet, at most one per router id. */
  private readonly waiting: NotifyCall[] = [];
  /** The state the hook was last started with, per router id. */
  private readonly told = new Map<number, NotifyState>();
  private running: Promise<void> | null = null;
  /** Cancels the call that runs now (cutRunning). */
  private current: AbortController | null = null;
  private closed = false;

  constructor(
    private file: string | null,
    private readonly log: LogSink,
    private readonly timeoutMs = NOTIFY_TIMEOUT_MS,
  ) {}

  /** A reload: the hook for the calls from now on (one running or waiting keeps the file it started with or gets the new one). */
  setFile(file: string | null): void {
    this.file = file;
  }

  run(state: NotifyState, routerId: number): void {
    if (this.file === null || this.closed) return;
    const i = this.waiting.findIndex((c) => c.routerId === routerId);
    if (i >= 0) {
      // Back where the hook was last told (master -> backup -> master while it ran): nothing to tell.
      if (state === this.told.get(routerId)) this.waiting.splice(i, 1);
      else this.waiting[i]!.state = state;
    } else {
      this.waiting.push({ routerId, state });
    }
    this.running ??= this.runWaiting(this.file);
  }

  private async runWaiting(file: string): Promise<void> {
    try {
      for (let call = this.waiting.shift(); call !== undefined && !this.closed; call = this.waiting.shift()) {
        const { routerId, state } = call;
        this.told.set(routerId, state);
        const args = [state, String(routerId)];
        let detail: string | null;
        const cancel = new AbortController();
        this.current = cancel;
        try {
          const r = await runCommand(file, args, { timeoutMs: this.timeoutMs, atProcessPriority: true, signal: cancel.signal });
          // Killed at the timeout counts as failed even when the hook itself had exited 0 (a child held its output).
          detail = r.code !== 0 || r.timedOut ? describeResult(file, args, r) : null;
        } catch (err) {
          detail = `${file} ${args.join(' ')}: ${(err as Error).message}`;
        } finally {
          this.current = null;
        }
        const failed = detail !== null;
        if (failed) this.log.error({ routerId, state, detail }, 'failover notify hook failed');
        // Not told after all: a later call back to this state must not be dropped as a repeat.
        if (failed && this.told.get(routerId) === state) this.told.delete(routerId);
      }
    } finally {
      // Whatever happened, the next run() starts a new runner: one failure must not wedge the queue.
      this.running = null;
    }
  }

  /**
   * Kills the call that runs now, with its process group (at a stop that cannot wait for it: a hung hook would
   * outlive mqtt-lb and hold back the `stop` call queued behind it). False when none runs.
   */
  cutRunning(): boolean {
    if (this.current === null) return false;
    this.current.abort();
    return true;
  }

  /**
   * The end of a stop: no call starts any more, the waiting ones are dropped and the running one is killed with its
   * process group. Resolves once it has ended. Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.waiting.length = 0;
    this.cutRunning();
    await this.idle();
  }

  /** Resolves when the queued hooks have finished (bounded by their timeouts). */
  idle(): Promise<void> {
    return this.running ?? Promise.resolve();
  }
}
