/**
 * Keys a reload does not apply (operations.md: they need a restart) besides failover's (failover/reload.ts): the
 * admin port's address, the worker count, the log queue's size and the start's warm-up; and each pool's `takeover`
 * (TakeoverHistory, below), which a reload puts back before the config is applied. A reloaded file is compared with what the
 * process started with, not with the previous file: a change is named at every reload until a restart, and a file
 * that goes back to the running values is not reported as a change.
 */
import { availableParallelism } from 'node:os';
import { workerCount } from '../cluster/messages.js';
import type { LbConfig, TakeoverKey } from './types.js';

/** Every key restartOnlyChanges() may name. */
export const RESTART_ONLY_KEYS = ['admin.bind', 'workers', 'log.bufferBytes', 'warmUp'] as const;

export interface RestartOnlyChange {
  key: (typeof RESTART_ONLY_KEYS)[number];
  running: string | number;
  file: string | number;
}

/** `cores`: what `workers: auto` meant at start; `auto` and the number it meant are no change. */
export function restartOnlyChanges(running: LbConfig, next: LbConfig, cores = availableParallelism()): RestartOnlyChange[] {
  const out: RestartOnlyChange[] = [];
  if (next.admin.bind !== running.admin.bind) out.push({ key: 'admin.bind', running: running.admin.bind, file: next.admin.bind });
  // `auto` said with what it means here: the number running is what the operator compares (a workers audit).
  const workers = (w: LbConfig['workers']): string | number => (w === 'auto' ? `auto (${workerCount(w, cores)})` : w);
  if (workerCount(next.workers, cores) !== workerCount(running.workers, cores)) out.push({ key: 'workers', running: workers(running.workers), file: workers(next.workers) });
  if (next.log.bufferBytes !== running.log.bufferBytes) out.push({ key: 'log.bufferBytes', running: running.log.bufferBytes, file: next.log.bufferBytes });
  // Used once, before the listeners open: a new value means something only at the next start.
  if (next.warmUp !== running.warmUp) out.push({ key: 'warmUp', running: running.warmUp, file: next.warmUp });
  return out;
}

/** A pool whose `takeover` the file changed, and what it keeps (TakeoverHistory). */
export interface TakeoverKept {
  pool: string;
  running: TakeoverKey;
  file: TakeoverKey;
}

/**
 * `pools.<name>.takeover` needs a restart: a pool's sessions are held under keys of its kind (client-id-registry.ts
 * takeoverKey), and under another kind the sessions from before a change would never be taken over by the same
 * client's newer ones, or could be by another user's (a takeover audit). So a pool keeps the value it started with,
 * or came with in the reload that added it, until a restart: also when a reload removes it and a later one adds it
 * back (its sessions run on meanwhile, and come back with it: a re-audit). Kept where reloads begin (run.ts): a
 * workers' primary hands the config it gives out, so every worker, and one restarted later, keys alike.
 */
export class TakeoverHistory {
  private readonly kinds = new Map<string, TakeoverKey>();

  constructor(start: LbConfig) {
    this.record(start);
  }

  /** The config a reload applies: the file's, with each pool ever run under its name at the value it ran with. */
  keep(file: LbConfig): { config: LbConfig; kept: TakeoverKept[] } {
    const kept: TakeoverKept[] = [];
    const pools = { ...file.pools };
    for (const [name, pc] of Object.entries(file.pools)) {
      const was = this.kinds.get(name);
      if (was === undefined || was === pc.takeover) continue;
      kept.push({ pool: name, running: was, file: pc.takeover });
      pools[name] = { ...pc, takeover: was };
    }
    return { config: kept.length === 0 ? file : { ...file, pools }, kept };
  }

  /** A config that now runs (the start's, an applied reload's): the pools it added keep their value from now on. */
  record(applied: LbConfig): void {
    for (const [name, pc] of Object.entries(applied.pools)) if (!this.kinds.has(name)) this.kinds.set(name, pc.takeover);
  }
}
