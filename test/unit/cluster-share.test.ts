/**
 * Each worker's share of the caps (src/cluster/share.ts): the shares add up to what lb.yaml says, so that
 * `workers: N` admits no more than one process would.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { MIN_WORKER_MEMORY, effectiveMaxMemory, workerShare, workerShareWarnings } from '../../src/cluster/share.js';

const YAML = (listenerCap: number, globalCap: number, queue: number): string => `
listeners:
  - name: mqtt
    bind: 127.0.0.1:1883
    pool: brokers
    maxConnections: ${listenerCap}
pools:
  brokers:
    servers:
      - name: b1
        address: 127.0.0.1:1884
limits:
  maxConnections: ${globalCap}
  acceptRate: 10
  acceptQueue: ${queue}
  perSource: { maxConnections: 2, connectRate: 4 }
  maxMemory: 1073741825
workers: 2
`;

describe('workerShare', () => {
  it.each([
    [3, 2],
    [3, 3],
    [10, 4],
    [20000, 3],
    [7, 5],
  ])('cap %i over %i workers: the shares add up to the cap, each at least 1', (cap, workers) => {
    const { config, problems } = parseConfig(YAML(cap, cap, cap), 'lb.yaml');
    expect(problems).toEqual([]);
    const shares = Array.from({ length: workers }, (_, i) => workerShare(config!, workers, i));
    const sum = (pick: (c: (typeof shares)[number]) => number): number => shares.reduce((n, c) => n + pick(c), 0);
    expect(sum((c) => c.listeners[0]!.maxConnections)).toBe(cap);
    expect(sum((c) => c.limits.maxConnections)).toBe(cap);
    expect(sum((c) => c.limits.acceptQueue)).toBe(cap);
    expect(sum((c) => c.limits.acceptRate)).toBeCloseTo(10);
    expect(sum((c) => c.limits.maxMemory)).toBe(1073741825); // the memory ceiling too
    for (const c of shares) expect(c.listeners[0]!.maxConnections).toBeGreaterThanOrEqual(1);
    // Per-source limits are each worker's whole: a share refused part of a burst the limit allows.
    for (const c of shares) expect(c.limits.perSource).toEqual({ maxConnections: 2, connectRate: 4, exempt: [] });
  });

  it('a cap smaller than the workers still gives each one (the only case where the sum exceeds it)', () => {
    const { config } = parseConfig(YAML(1, 1, 0), 'lb.yaml');
    const shares = [0, 1, 2].map((i) => workerShare(config!, 3, i));
    expect(shares.map((c) => c.listeners[0]!.maxConnections)).toEqual([1, 1, 1]);
    expect(shares.map((c) => c.limits.acceptQueue)).toEqual([0, 0, 0]); // no queue stays no queue
  });

  it('a memory ceiling too small for the workers gives each MIN_WORKER_MEMORY, and says so', () => {
    const { config } = parseConfig(YAML(50, 50, 50).replace('maxMemory: 1073741825', 'maxMemory: 134217728'), 'lb.yaml');
    const shares = Array.from({ length: 16 }, (_, i) => workerShare(config!, 16, i));
    for (const c of shares) expect(c.limits.maxMemory).toBe(MIN_WORKER_MEMORY);
    expect(workerShareWarnings(config!, 16, 16)).toEqual([
      'limits.maxMemory 134217728 over 16 workers is 8 MiB each, below what a worker needs: each worker gets 64 MiB (1024 MiB in all)',
      'limits.acceptRate 10 over 16 workers is 0.625/s each: a burst that lands on one worker is admitted at that pace while another has room',
    ]);
    expect(workerShareWarnings(config!, 2, 16)).toEqual([]);
    expect(workerShareWarnings(config!, 1, 16)).toEqual([]);
    // What the workers have together (mqtt_lb_memory_max_bytes): raised by the floor, else the configured total.
    expect(effectiveMaxMemory(config!, 16)).toBe(16 * MIN_WORKER_MEMORY);
    expect(effectiveMaxMemory(config!, 3)).toBe(3 * MIN_WORKER_MEMORY);
    expect(effectiveMaxMemory(config!, 2)).toBe(134217728);
    expect(effectiveMaxMemory(config!, 1)).toBe(134217728);
  });

  it('says when a cap is below the worker count (every worker still takes one) and when workers exceed the cores', () => {
    const { config } = parseConfig(YAML(1, 3, 0), 'lb.yaml');
    expect(workerShareWarnings(config!, 4, 4)).toEqual([
      'listeners[0].maxConnections (listener mqtt) 1 is below workers (4): each worker takes at least 1, so up to 4 in all',
      'limits.maxConnections 3 is below workers (4): each worker takes at least 1, so up to 4 in all',
    ]);
    expect(workerShareWarnings(config!, 3, 2)).toEqual([
      'listeners[0].maxConnections (listener mqtt) 1 is below workers (3): each worker takes at least 1, so up to 3 in all',
      "workers 3 is more than this host's 2 cores: extra workers share cores and add memory, not throughput",
    ]);
    expect(workerShareWarnings(config!, 1, 1)).toEqual([]);
    // acceptRate 10 (YAML): 2.5/s each over 4 workers is fine; below 1/s each is said.
    const slow = parseConfig(YAML(50, 50, 50).replace('acceptRate: 10', 'acceptRate: 1'), 'lb.yaml').config!;
    expect(workerShareWarnings(slow, 2, 2)).toEqual([
      'limits.acceptRate 1 over 2 workers is 0.5/s each: a burst that lands on one worker is admitted at that pace while another has room',
    ]);
    expect(workerShareWarnings(slow, 1, 2)).toEqual([]);
  });

  it('servers[].maxConnections: shared out like the other caps; 0 (no cap) stays 0; below the workers is said', () => {
    const yaml = YAML(50, 50, 50).replace('        address: 127.0.0.1:1884\n', '        address: 127.0.0.1:1884\n        maxConnections: 7\n      - name: b2\n        address: 127.0.0.1:1885\n');
    const { config, problems } = parseConfig(yaml, 'lb.yaml');
    expect(problems).toEqual([]);
    const shares = [0, 1, 2].map((i) => workerShare(config!, 3, i));
    expect(shares.map((c) => c.pools.brokers!.servers.map((s) => s.maxConnections))).toEqual([
      [3, 0],
      [2, 0],
      [2, 0],
    ]);
    expect(config!.pools.brokers!.servers[0]!.maxConnections).toBe(7); // the config itself is untouched
    expect(workerShareWarnings(config!, 8, 8)).toEqual([
      'pools.brokers.servers[0].maxConnections (server b1) 7 is below workers (8): each worker takes at least 1, so up to 8 in all',
    ]);
  });

  it('one worker: the config as it is', () => {
    const { config } = parseConfig(YAML(5, 5, 5), 'lb.yaml');
    expect(workerShare(config!, 1, 0)).toBe(config);
  });
});
