/** Process checks for tests that must see a process gone (killed, with its children), not just signalled. */
import { readFileSync } from 'node:fs';

/**
 * Running: the process exists and is not a zombie. A killed orphan waits for its reaper (pid 1 here), and
 * `process.kill(pid, 0)` still succeeds on it until then.
 */
export function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
