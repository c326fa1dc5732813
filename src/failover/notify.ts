/**
 * The `failover.notify` hook: an executable called with the new state (`master`, `backup`, `fault`, and `stop`
 * when the balancer stops and gives up its addresses, as keepalived's STOP) and the router id as arguments.
 * Never awaited by the advert loop (a slow hook must not decide the election, keepalived#2389), but run one at
 * a time in order (keepalived's notify FIFO lesson, #996), each with a kill timeout. Failures are logged, never
 * thrown.
 */
import { describeResult, runCommand } from './command.js';
import type { LogSink } from './log.js';
import type { FailoverState } from './state-machine.js';

export const NOTIFY_TIMEOUT_MS = 30_000;

export class NotifyRunner {
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string | null,
    private readonly log: LogSink,
    private readonly timeoutMs = NOTIFY_TIMEOUT_MS,
  ) {}

  run(state: FailoverState | 'stop', routerId: number): void {
    const file = this.file;
    if (file === null) return;
    const args = [state, String(routerId)];
    this.chain = this.chain.then(async () => {
      const r = await runCommand(file, args, { timeoutMs: this.timeoutMs });
      if (r.code !== 0) this.log.error({ routerId, state, detail: describeResult(file, args, r) }, 'failover notify hook failed');
    });
  }

  /** Resolves when the queued hooks have finished (bounded by their timeouts). */
  idle(): Promise<void> {
    return this.chain;
  }
}
