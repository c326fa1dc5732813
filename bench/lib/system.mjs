/**
 * Machine-wide CPU accounting from /proc/stat, to tell how much of the machine something other than this
 * benchmark used during a measurement (other users' builds and tests make every number noisier).
 */
import { readFileSync } from 'node:fs';
import { cpuMs } from './procs.mjs';

/** Busy and total jiffies over all CPUs, converted to ms (USER_HZ = 100 on Linux). */
function readProcStat() {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] ?? 0);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busyMs: (total - idle) * 10, totalMs: total * 10 };
}

function ownCpuMs(pids) {
  let sum = 0;
  for (const pid of pids) {
    try {
      sum += cpuMs(pid);
    } catch {
      // process gone
    }
  }
  const self = process.cpuUsage();
  return sum + (self.user + self.system) / 1000;
}

/**
 * Starts a measurement window; `end()` returns CPU shares in cores (1.0 = one core busy). `end(extraOwnMs)`
 * adds CPU of our own processes that are gone by then (the C connection generators report their own).
 */
export function cpuWindow(pids) {
  const s0 = readProcStat();
  const o0 = ownCpuMs(pids);
  const t0 = performance.now();
  return {
    end(extraOwnMs = 0) {
      const s1 = readProcStat();
      const o1 = ownCpuMs(pids) + extraOwnMs;
      const wall = performance.now() - t0;
      const busy = (s1.busyMs - s0.busyMs) / wall;
      const ours = (o1 - o0) / wall;
      return { busyCores: busy, benchCores: ours, foreignCores: Math.max(0, busy - ours) };
    },
  };
}

export function loadAverage() {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  } catch {
    return null;
  }
}
