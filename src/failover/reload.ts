/**
 * What a reload does to the failover settings. keepalived applies a reloaded file; so does mqtt-lb, for what can
 * change without restarting the heartbeat: each instance's `priority` (the shorthand's too), `preempt`,
 * `preemptDelay`, `track`, `garp` and `notify`. Lowering the master's priority below the peer's and reloading is
 * then a planned switchover, as with keepalived. The rest (the interface, transport, peers, group, port, key file,
 * advert interval, and which instances there are with which VIPs) needs a restart: the runtime keeps what it started
 * with, and the warning names the keys, so an operator knows what is not in force.
 */
import type { FailoverConfig } from '../config/types.js';

/** The keys a reload applies in place (the instances' priorities are `failover.priority`). */
const LIVE_KEYS = ['preempt', 'preemptDelay', 'track', 'garp', 'notify'] as const satisfies ReadonlyArray<keyof FailoverConfig>;

export interface FailoverReloadPlan {
  /** The settings to run with: the running ones, with what a reload applies taken from the file. */
  next: FailoverConfig | null;
  /** Keys applied now. */
  applied: string[];
  /** Keys that differ but need a restart (left as they run in `next`). */
  restartOnly: string[];
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Compares a reloaded file's failover settings with the running ones (not the previous file's). */
export function planFailoverReload(running: FailoverConfig | null, file: FailoverConfig | null): FailoverReloadPlan {
  if (running === null || file === null) return { next: running, applied: [], restartOnly: running === file ? [] : ['failover'] };
  const next: FailoverConfig = { ...running };
  const applied: string[] = [];
  const restartOnly: string[] = [];
  for (const k of Object.keys(running) as Array<keyof FailoverConfig>) {
    if (k === 'instances' || same(running[k], file[k])) continue;
    if ((LIVE_KEYS as readonly string[]).includes(k)) {
      (next as unknown as Record<string, unknown>)[k] = file[k];
      applied.push(`failover.${k}`);
    } else {
      restartOnly.push(`failover.${k}`);
    }
  }
  // Instances by router id: a priority changes in place; other differences (one added or removed, its VIPs) wait.
  const byId = new Map(file.instances.map((i) => [i.routerId, i]));
  let priorities = false;
  let instances = running.instances.length !== file.instances.length;
  next.instances = running.instances.map((ri) => {
    const fi = byId.get(ri.routerId);
    if (fi === undefined) {
      instances = true;
      return ri;
    }
    if (!same(ri.vips, fi.vips)) instances = true;
    if (ri.priority === fi.priority) return ri;
    priorities = true;
    return { ...ri, priority: fi.priority };
  });
  if (priorities) applied.unshift('failover.priority');
  if (instances) restartOnly.push('failover.instances');
  return { next, applied, restartOnly };
}
