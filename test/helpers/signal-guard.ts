/**
 * Loaded into every test worker (vitest.config.ts `setupFiles`): a `process.kill` that would signal the test's own
 * process group, or every process, throws instead. Such a call is always a test's bug (a pid read as 0 from an
 * empty pid file, a -1 for "no pid"), and with SIGKILL it ends vitest, npm and the CI job at once, with no report
 * of which test did it: CI once died that way (exit 137, the output cut mid-run).
 */
import { readProcStat } from '../../src/proc-stat.js';

const ownGroup = readProcStat(process.pid)?.pgrp ?? process.pid;
const kill = process.kill.bind(process);

process.kill = function guardedKill(pid: number, signal?: string | number): true {
  if (pid === 0 || pid === -1 || pid === -ownGroup) {
    throw new Error(`refused: process.kill(${pid}, ${String(signal)}) would signal the test runner's own process group or every process`);
  }
  return kill(pid, signal);
};
