/**
 * Each of N workers enforces its share of the configured caps and rates: connections are spread over the
 * workers (by the primary's round robin, or by the kernel), so the sum stays what lb.yaml says (a cap
 * smaller than N still gives every worker one). A client may be refused by a full worker while another has
 * room. Per-source limits are not shared out: one address's connections land on the workers unevenly (the
 * kernel picks), so a share of `perSource.connectRate` refused part of a burst the limit allows (5 of 10 at
 * `connectRate: 10` over 2 workers) and a share of `perSource.maxConnections` would refuse a source under its
 * limit. Each worker keeps the whole limit: an address may get up to N times it (operations.md).
 */
import type { LbConfig } from '../config/types.js';

/**
 * The least memory ceiling a worker gets: an idle worker already has ~13 MiB of heap and buffers, so a smaller
 * share (128 MiB over 16 workers) would keep it over its ceiling, refusing every client, for good.
 */
export const MIN_WORKER_MEMORY = 64 * 1024 * 1024;

/**
 * What `workers` does to the config that an operator may not expect, said at start and by `check`: shares
 * raised to a floor (memory; caps smaller than the worker count, where every worker still takes one), and more
 * workers than cores. (The per-worker clamps to the open-file limit are each worker's own: fd-budget.ts.)
 */
export function workerShareWarnings(config: LbConfig, workers: number, cores: number): string[] {
  if (workers <= 1) return [];
  const out: string[] = [];
  const max = config.limits.maxMemory;
  if (max > 0 && max / workers < MIN_WORKER_MEMORY) {
    const mib = (n: number): string => `${Math.round(n / (1024 * 1024))} MiB`;
    out.push(`limits.maxMemory ${max} over ${workers} workers is ${mib(max / workers)} each, below what a worker needs: each worker gets ${mib(MIN_WORKER_MEMORY)} (${mib(MIN_WORKER_MEMORY * workers)} in all)`);
  }
  const capBelowWorkers = (key: string, value: number): void => {
    if (value > 0 && value < workers) out.push(`${key} ${value} is below workers (${workers}): each worker takes at least 1, so up to ${workers} in all`);
  };
  config.listeners.forEach((l, i) => capBelowWorkers(`listeners[${i}].maxConnections (listener ${l.name})`, l.maxConnections));
  for (const [name, pool] of Object.entries(config.pools)) {
    pool.servers.forEach((s, i) => capBelowWorkers(`pools.${name}.servers[${i}].maxConnections (server ${s.name})`, s.maxConnections));
  }
  capBelowWorkers('limits.maxConnections', config.limits.maxConnections);
  capBelowWorkers('limits.acceptQueue', config.limits.acceptQueue);
  const rate = config.limits.acceptRate;
  if (rate > 0 && rate / workers < 1) {
    // Each worker admits its share alone: a burst the kernel hands to one worker goes at that pace, the others idle.
    out.push(`limits.acceptRate ${rate} over ${workers} workers is ${+(rate / workers).toFixed(3)}/s each: a burst that lands on one worker is admitted at that pace while another has room`);
  }
  if (workers > cores) out.push(`workers ${workers} is more than this host's ${cores} cores: extra workers share cores and add memory, not throughput`);
  return out;
}

/** The memory ceiling the workers have together: limits.maxMemory, or more where MIN_WORKER_MEMORY raised it. */
export function effectiveMaxMemory(config: LbConfig, workers: number): number {
  if (workers <= 1) return config.limits.maxMemory;
  let total = 0;
  for (let i = 0; i < workers; i++) total += workerMemory(config.limits.maxMemory, workers, i);
  return total;
}

/** Worker `index`'s memory ceiling: its share of `max`, at least MIN_WORKER_MEMORY; 0 stays 0 (no ceiling). */
function workerMemory(max: number, workers: number, index: number): number {
  return max > 0 ? Math.max(shareOf(max, workers, index), MIN_WORKER_MEMORY) : 0;
}

/** Worker `index`'s part of `value` over `n` workers: the parts add up to `value` (each at least 1). */
function shareOf(value: number, n: number, index: number): number {
  if (value <= 0) return value;
  return Math.max(1, Math.floor(value / n) + (index < value % n ? 1 : 0));
}

export function workerShare(config: LbConfig, workers: number, index: number): LbConfig {
  if (workers <= 1) return config;
  const share = (value: number): number => shareOf(value, workers, index);
  const limits = config.limits;
  return {
    ...config,
    listeners: config.listeners.map((l) => ({ ...l, maxConnections: share(l.maxConnections) })),
    limits: {
      ...limits,
      maxConnections: share(limits.maxConnections),
      acceptRate: limits.acceptRate > 0 ? limits.acceptRate / workers : 0,
      acceptQueue: share(limits.acceptQueue),
      maxMemory: workerMemory(limits.maxMemory, workers, index),
      maxPendingConnectBytes: share(limits.maxPendingConnectBytes),
    },
    pools: Object.fromEntries(
      Object.entries(config.pools).map(([k, p]) => [
        k,
        { ...p, evictRate: p.evictRate / workers, servers: p.servers.map((s) => ({ ...s, maxConnections: share(s.maxConnections) })) },
      ]),
    ),
  };
}
