/**
 * A process's name, state, parent and process group from /proc/PID/stat (Linux), for the few places that ask about
 * another process: whether npx, our parent, has gone (launcher-watch.ts), and whether a dead thread's child is still
 * ours to stop (failover/orphan.ts).
 */
import { readFileSync } from 'node:fs';

export interface ProcStat {
  /** The command name, at most 15 bytes (as the kernel keeps it). */
  comm: string;
  /** One letter: R, S, D, Z (zombie), X (dead), ... */
  state: string;
  ppid: number;
  /** Its process group. */
  pgrp: number;
}

/** null when there is no such process (or no /proc). */
export function readProcStat(pid: number): ProcStat | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // "pid (comm) state ppid ...": comm may itself hold spaces and parentheses, so it ends at the last ')'.
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const [state, ppid, pgrp] = stat.slice(close + 2).split(' ');
  return { comm: stat.slice(open + 1, close), state: state ?? '', ppid: Number(ppid), pgrp: Number(pgrp) };
}
