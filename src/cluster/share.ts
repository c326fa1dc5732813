/**
 * Each of N workers enforces 1/N of the configured caps and rates: connections are spread over the
 * workers (by the primary's round robin, or by the kernel), so the sum stays what lb.yaml says.
 * Per-source limits are approximate in this mode (one source may land on several workers).
 */
import type { LbConfig } from '../config/types.js';

function share(value: number, n: number): number {
  return value <= 0 ? value : Math.max(1, Math.ceil(value / n));
}

export function workerShare(config: LbConfig, workers: number): LbConfig {
  if (workers <= 1) return config;
  const limits = config.limits;
  return {
    ...config,
    listeners: config.listeners.map((l) => ({ ...l, maxConnections: share(l.maxConnections, workers) })),
    limits: {
      ...limits,
      maxConnections: share(limits.maxConnections, workers),
      acceptRate: limits.acceptRate > 0 ? limits.acceptRate / workers : 0,
      acceptQueue: share(limits.acceptQueue, workers),
      perSource: { maxConnections: limits.perSource.maxConnections, connectRate: limits.perSource.connectRate > 0 ? limits.perSource.connectRate / workers : 0 },
    },
    pools: Object.fromEntries(Object.entries(config.pools).map(([k, p]) => [k, { ...p, evictRate: p.evictRate / workers }])),
  };
}
