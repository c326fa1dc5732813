/**
 * The child processes the failover thread runs (`ip`, `arping`, the notify hook, the `ip monitor`), told to
 * whoever watches. A worker thread's children outlive it, and the kill timeouts of `ip`, `arping` and the hook
 * lived in it: the heartbeat thread passes them on to the main thread, which stops those still running should the
 * thread die (orphan.ts). Module state, so one per thread: only the heartbeat thread sets a watcher.
 */
import type { ChildProcess } from 'node:child_process';

export interface RunningChild {
  pid: number;
  /** The command as run (`ip`, `arping`, the hook's path). It leads a process group of its own: what to stop. */
  command: string;
}

export interface ChildWatcher {
  started(child: RunningChild): void;
  ended(pid: number): void;
}

let watcher: ChildWatcher | null = null;

/** Set (or with null, clear) the watcher of this thread's children. */
export function watchChildren(w: ChildWatcher | null): void {
  watcher = w;
}

/** A child has started; nothing when it has no pid (its spawn failed: its 'error' says why). */
export function childStarted(child: ChildProcess, command: string): void {
  if (watcher !== null && child.pid !== undefined) watcher.started({ pid: child.pid, command });
}

/** A child that childStarted() reported has ended (exit or close). */
export function childEnded(child: ChildProcess): void {
  if (watcher !== null && child.pid !== undefined) watcher.ended(child.pid);
}
