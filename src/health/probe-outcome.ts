/**
 * What every probe returns. Probes never reject: a failure is a result (contract §6 `result` label),
 * with an optional short human detail for the state-change log line.
 */
import type { CheckResult } from '../balancer/server.js';

export interface ProbeOutcome {
  result: CheckResult;
  durationMs: number;
  detail?: string;
  /** The probe's TCP connection was established: a timeout after it is the server's (slow), not this host's path. */
  connected?: boolean;
}

/** Host and port a socket probe dials (the server's traffic port). */
export interface SocketTarget {
  host: string;
  port: number;
}

/** Detail used when a probe was cancelled from outside (checker closed, server put in maint). */
export const ABORTED_DETAIL = 'aborted';

/** Map a socket/connect error to a probe result. */
export function resultForSocketError(err: NodeJS.ErrnoException): CheckResult {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    default:
      return 'error';
  }
}

export function errorDetail(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown };
    if (typeof e.code === 'string') return e.code;
    if (typeof e.message === 'string') return e.message;
  }
  return String(err);
}

/** Milliseconds since `startedAt` (a performance.now() value), rounded to 0.1 ms. */
export function elapsedSince(startedAt: number): number {
  return Math.round((performance.now() - startedAt) * 10) / 10;
}
