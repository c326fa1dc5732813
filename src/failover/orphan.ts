/**
 * A child process left behind by a failover thread that died. A worker thread's children outlive it: its event loop
 * is torn down without killing them, so the `ip monitor` the heartbeat thread started would run on, one more after
 * every restart of the thread (and, unreaped, stay a zombie once it ends). The main thread stops it by its pid.
 */
import { readProcStat } from '../proc-stat.js';

/**
 * SIGTERM to `pid` if it is still a running child of this process named `command` (its /proc entry says so: a pid
 * is only reused once its process has been reaped, and a child of a dead thread never is; the check keeps a pid
 * that some other process may have meanwhile from being signalled). True if signalled.
 */
export function killOrphanedChild(pid: number, command: string): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const stat = readProcStat(pid);
  if (stat === null || stat.comm !== command.slice(0, 15) || stat.ppid !== process.pid || stat.state === 'Z' || stat.state === 'X') return false;
  try {
    process.kill(pid, 'SIGTERM');
    return true;
  } catch {
    return false;
  }
}
