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

/** The `pid` of the `mqtt-lb started` log line in `output()`, polled every 50 ms up to `timeoutMs`; 0 when none came. */
export async function startedPid(output: () => string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const started = /"pid":(\d+)[^\n]*"msg":"mqtt-lb started"/.exec(output());
    if (started !== null) return Number(started[1]);
    if (Date.now() >= deadline) return 0;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits (polled every 100 ms, bounded) until `pid` is no longer running (isRunning); true when it has gone. */
export async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(pid)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}
