/**
 * Failover settings are not reloaded (operations.md: they need a restart): the runtime keeps the settings it
 * started with. What a reloaded file would change is named in the warning, so an operator knows what is not
 * in force.
 */
import type { FailoverConfig } from '../config/types.js';

/** The failover keys that differ between the running settings and a reloaded file (`failover` when one side has none). */
export function failoverChanges(running: FailoverConfig | null, next: FailoverConfig | null): string[] {
  if (running === null || next === null) return running === next ? [] : ['failover'];
  const keys = Object.keys(running) as Array<keyof FailoverConfig>;
  return keys.filter((k) => JSON.stringify(running[k]) !== JSON.stringify(next[k])).map((k) => `failover.${k}`);
}
