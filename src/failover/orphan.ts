/**
 * Child processes left behind by a failover thread that died. A worker thread's children outlive it: its event loop
 * is torn down without killing them, and with it the kill timeouts of `ip`, `arping` and the notify hook. The `ip
 * monitor` the heartbeat thread started would run on, one more after every restart of the thread, and a hook that
 * hangs would hang for good (unreaped, each stays a zombie once it ends). The main thread stops them by their pids,
 * which the thread told it (children.ts).
 */
import { readProcStat } from '../proc-stat.js';
import type { RunningChild } from './children.js';

/**
 * SIGKILL to the process group that `pid` leads (every command the failover runs has one of its own: command.ts), as
 * its kill timeout would have sent, if `pid` is still a child of this process leading its own group (its /proc entry
 * says so: a pid is only reused once its process has been reaped, and a child of a dead thread never is; the check
 * keeps a pid that some other process may have meanwhile from being signalled). Its name is not checked: a hook may
 * exec another program. A leader that has ended (a zombie) still counts: the group may hold what the hook started.
 * True if signalled.
 */
export function killOrphanedGroup(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const stat = readProcStat(pid);
  if (stat === null || stat.ppid !== process.pid || stat.pgrp !== pid) return false;
  try {
    process.kill(-pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

/** Stops one child of a dead thread, with its group. True if signalled. */
export function stopOrphan(child: RunningChild): boolean {
  return killOrphanedGroup(child.pid);
}
