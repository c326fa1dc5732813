/** Process checks for tests that must see a process gone (killed, with its children), not just signalled. */
import { readFileSync } from 'node:fs';
import { readProcStat } from '../../src/proc-stat.js';

/**
 * Running: the process exists and is not a zombie. A killed orphan waits for its reaper (pid 1 here), and
 * `process.kill(pid, 0)` still succeeds on it until then.
 */
export function isRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`isRunning(${pid}): not a process id`);
  const stat = readProcStat(pid);
  return stat !== null && stat.state !== 'Z';
}

/**
 * The pid a script wrote with `echo $! > FILE`, or null while the file is missing or not yet whole. The shell
 * creates the file before `echo` writes into it: read then, it is empty, `Number('')` is 0, and a
 * `process.kill(0, 'SIGKILL')` kills the whole process group the test runs in (vitest, npm, the CI job).
 */
export function readPidFile(file: string): number | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const m = /^(\d+)\n$/.exec(text);
  const pid = m === null ? 0 : Number(m[1]);
  return pid > 0 ? pid : null;
}

/** Waits (bounded) until `file` holds a whole pid line; throws at the bound. */
export async function waitForPidFile(file: string, timeoutMs = 5000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pid = readPidFile(file);
    if (pid !== null) return pid;
    if (Date.now() >= deadline) throw new Error(`no pid in ${file} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
