/** Process checks for tests that must see a process gone (killed, with its children), not just signalled. */
import { readProcStat } from '../../src/proc-stat.js';

/**
 * Running: the process exists and is not a zombie. A killed orphan waits for its reaper (pid 1 here), and
 * `process.kill(pid, 0)` still succeeds on it until then.
 */
export function isRunning(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat !== null && stat.state !== 'Z';
}
