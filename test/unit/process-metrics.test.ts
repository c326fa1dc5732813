/** The primary's process metrics combined with its workers' (src/telemetry/process-metrics.ts). */
import { Counter, Gauge, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { LoopLagSampler } from '../../src/telemetry/loop-lag.js';
import { CombinedProcessMetrics, countersOf, createProcessRegistry, sumCounters, type ProcessMetricsJson } from '../../src/telemetry/process-metrics.js';

function worker(cpu: number, rss: number): ProcessMetricsJson {
  return [
    { name: 'process_cpu_seconds_total', help: 'cpu', type: 'counter', aggregator: 'sum', values: [{ value: cpu, labels: {} }] },
    { name: 'process_resident_memory_bytes', help: 'rss', type: 'gauge', aggregator: 'sum', values: [{ value: rss, labels: {} }] },
  ] as unknown as ProcessMetricsJson;
}

function primary(): Registry {
  const r = new Registry();
  new Counter({ name: 'process_cpu_seconds_total', help: 'cpu', registers: [r] }).inc(1);
  new Gauge({ name: 'process_resident_memory_bytes', help: 'rss', registers: [r] }).set(100);
  return r;
}

const valueOf = (text: string, name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);

describe('CombinedProcessMetrics', () => {
  it('sums the workers into the primary; alone, the primary as it is', async () => {
    const combined = new CombinedProcessMetrics(primary());
    const text = await combined.text([worker(2, 200), worker(3, 300)]);
    expect(valueOf(text, 'process_cpu_seconds_total')).toBe(6);
    expect(valueOf(text, 'process_resident_memory_bytes')).toBe(600);
    expect(text.match(/^# TYPE process_cpu_seconds_total counter$/gm)).toHaveLength(1);
    expect(valueOf(await new CombinedProcessMetrics(primary()).text([]), 'process_cpu_seconds_total')).toBe(1);
  });

  it('a counter never goes below what it exposed before (gauges may)', async () => {
    const combined = new CombinedProcessMetrics(primary());
    await combined.text([worker(2, 200), worker(3, 300)]);
    // A worker's values re-added elsewhere can sum one unit in the last place lower; here plainly lower.
    const text = await combined.text([worker(2, 200), worker(2.5, 250)]);
    expect(valueOf(text, 'process_cpu_seconds_total')).toBe(6);
    expect(valueOf(text, 'process_resident_memory_bytes')).toBe(550);
  });

  it('an exited worker keeps its counters, not its gauges; several fold into one', async () => {
    const folded = await sumCounters([countersOf(worker(2, 200)), countersOf(worker(3, 300))]);
    expect(folded.map((m) => m.name)).toEqual(['process_cpu_seconds_total']);
    expect(folded[0]!.values[0]!.value).toBe(5);
  });
});

describe('createProcessRegistry: nodejs_eventloop_lag_* from our sampler', () => {
  it('fills the gauges from the sampler\'s ticks, a window per collection, with prom-client\'s aggregation', async () => {
    let t = 0;
    const lag = new LoopLagSampler(20, () => t, false);
    const registry = createProcessRegistry(lag);
    for (const step of [20, 20, 20, 170]) {
      t += step;
      lag.tick();
    }
    const text = await registry.metrics();
    expect(valueOf(text, 'nodejs_eventloop_lag_min_seconds')).toBeCloseTo(0.02, 3);
    expect(valueOf(text, 'nodejs_eventloop_lag_max_seconds')).toBeCloseTo(0.17, 3);
    expect(valueOf(text, 'nodejs_eventloop_lag_p50_seconds')).toBeCloseTo(0.02, 3);
    expect(valueOf(text, 'nodejs_eventloop_lag_p99_seconds')).toBeCloseTo(0.17, 3);
    expect(valueOf(text, 'nodejs_eventloop_lag_mean_seconds')).toBeCloseTo(0.0575, 3);
    // Once each, and prom-client's own gauge measured at collection is still there.
    expect(text.match(/^# TYPE nodejs_eventloop_lag_p99_seconds gauge$/gm)).toHaveLength(1);
    expect(text).toMatch(/^# TYPE nodejs_eventloop_lag_seconds gauge$/m);

    // A new window: the stall is gone; with no tick at all the values stand.
    t += 20;
    lag.tick();
    const next = await registry.metrics();
    expect(valueOf(next, 'nodejs_eventloop_lag_max_seconds')).toBeCloseTo(0.02, 3);
    expect(valueOf(await registry.metrics(), 'nodejs_eventloop_lag_max_seconds')).toBeCloseTo(0.02, 3);

    const json = (await registry.getMetricsAsJSON()) as ProcessMetricsJson;
    const aggregatorOf = (name: string) => (json.find((m) => m.name === name) as { aggregator?: string } | undefined)?.aggregator;
    const aggregators = ['min', 'max', 'p99'].map((k) => aggregatorOf(`nodejs_eventloop_lag_${k}_seconds`));
    expect(aggregators).toEqual(['min', 'max', 'average']);
    lag.close();
  });
});
