/**
 * `npx mqtt-lb` runs the balancer as npm → `sh -c mqtt-lb …` → node, and `npm start` (the demo) as npm →
 * `sh -c "tsc … && node …"` → node. npm forwards SIGTERM and SIGINT to the shell only: the shell dies and the
 * balancer runs on with no parent, still holding its ports (measured with npm 11: `kill -TERM <npm>` exited npm
 * with 143 and the balancer kept serving; a SIGHUP killed npm alone; an audit saw the same with `npm start`).
 * Started that way (npm sets npm_command to `exec`, `start` or `run-script`), the balancer takes its parent
 * shell, or the npm above it, going away as a stop request, checked every second. A terminal's Ctrl-C reaches the
 * whole process group and works anyway; a reload still needs a SIGHUP to the balancer's own PID (the `pid` of its
 * `mqtt-lb started` line).
 */
import { readFileSync } from 'node:fs';
import { readProcStat } from './proc-stat.js';

const CHECK_MS = 1000;

/** The npm commands that run a command of ours in a shell of their own. */
const NPM_LAUNCHES = new Set(['exec', 'start', 'run-script', 'restart']);

/** Starts watching when run under `npx`, `npm exec` or `npm start`; calls `onGone` once. Returns a function that stops watching. */
export function watchNpmExec(onGone: (what: string) => void, env: NodeJS.ProcessEnv = process.env): () => void {
  if (!NPM_LAUNCHES.has(env['npm_command'] ?? '')) return () => {};
  const parent = process.ppid;
  // npm's script shell may have exec'd us (bash does for one command: the parent is npm itself), or not (dash:
  // npm → sh → us). Anything else (npm_command inherited by a process started some other way) is not watched.
  let npm: number | null;
  if (isNpmExec(parent)) npm = null;
  else {
    const grandparent = parentOf(parent);
    if (grandparent === null || !isNpmExec(grandparent)) return () => {};
    npm = grandparent;
  }
  const timer = setInterval(() => {
    let what: string | null = null;
    if (process.ppid !== parent) what = npm === null ? 'the npm process that started it has exited' : 'the shell npm started it from has exited';
    else if (npm !== null && !alive(npm)) what = 'the npm process that started it has exited';
    if (what === null) return;
    clearInterval(timer);
    onGone(what);
  }, CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** npm sets its process title to `npm exec …` (npx included), `npm start`, `npm run …`. */
function isNpmExec(pid: number): boolean {
  try {
    return /^npm (?:exec|start|run|run-script|restart)\b|^npx\b/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '));
  } catch {
    return false;
  }
}

/** The parent PID of `pid` from /proc (null where there is no /proc). */
function parentOf(pid: number): number | null {
  const ppid = readProcStat(pid)?.ppid;
  return ppid !== undefined && Number.isInteger(ppid) && ppid > 1 ? ppid : null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
