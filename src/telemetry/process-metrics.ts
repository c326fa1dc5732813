/**
 * prom-client's default process and Node.js metrics ("process and Node.js default metrics", design §6), in a
 * registry of their own. With workers, each proxy worker sends its values to the primary (PROCESS_METRICS_MS),
 * and the primary's /metrics shows them combined with its own: what an operator watches (CPU, memory,
 * descriptors) is mostly spent in the workers, not in the primary.
 */
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { droppedLogLines } from './log-stream.js';
import type { IntervalWindow, LoopLagSampler } from './loop-lag.js';

export type ProcessMetricsJson = Array<MetricObjectWithValues<MetricValue<string>>>;

/** How often a worker sends its process metrics to the primary. */
export const PROCESS_METRICS_MS = 1000;

/**
 * prom-client's event-loop delay gauges, which it fills from a monitorEventLoopDelay of its own: a C++ timer every
 * 10 ms (its default precision) beside our 20 ms sampler, i.e. 100 more wake-ups a second of an idle process, each
 * ~20 µs of CPU on this VM (docs/metrics.md). Here they are the same names, help and aggregation, filled from our
 * sampler's ticks instead. (`nodejs_eventloop_lag_seconds`, measured by a setImmediate at collection, stays its own.)
 */
const NODE_LAG_GAUGES: ReadonlyArray<readonly [name: string, help: string, aggregator: 'min' | 'max' | 'average', field: keyof IntervalWindow]> = [
  ['nodejs_eventloop_lag_min_seconds', 'The minimum recorded event loop delay.', 'min', 'min'],
  ['nodejs_eventloop_lag_max_seconds', 'The maximum recorded event loop delay.', 'max', 'max'],
  ['nodejs_eventloop_lag_mean_seconds', 'The mean of the recorded event loop delays.', 'average', 'mean'],
  ['nodejs_eventloop_lag_stddev_seconds', 'The standard deviation of the recorded event loop delays.', 'average', 'stddev'],
  ['nodejs_eventloop_lag_p50_seconds', 'The 50th percentile of the recorded event loop delays.', 'average', 'p50'],
  ['nodejs_eventloop_lag_p90_seconds', 'The 90th percentile of the recorded event loop delays.', 'average', 'p90'],
  ['nodejs_eventloop_lag_p99_seconds', 'The 99th percentile of the recorded event loop delays.', 'average', 'p99'],
];

/**
 * prom-client cannot leave its monitor out, only set its period: this one (2^31 - 1 ms, 24.8 days) never wakes
 * the process in practice. Its values go to gauges no longer in the registry.
 */
const PROM_CLIENT_MONITOR_MS = 2 ** 31 - 1;

/** @param loopLag this process's sampler: its ticks fill the `nodejs_eventloop_lag_*` gauges */
export function createProcessRegistry(loopLag: LoopLagSampler): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: PROM_CLIENT_MONITOR_MS });
  registerLoopDelayGauges(registry, loopLag);
  // Per process like the defaults (each process has its own stdout queue), so summed over workers with them.
  new Counter({
    name: 'mqtt_lb_log_lines_dropped_total',
    help: 'Log lines dropped because the log reader did not keep up (more than log.bufferBytes queued) or stdout failed.',
    registers: [registry],
    collect() {
      const total = droppedLogLines();
      this.reset();
      this.inc(total);
    },
  });
  return registry;
}

function registerLoopDelayGauges(registry: Registry, loopLag: LoopLagSampler): void {
  const gauges: Array<[Gauge, keyof IntervalWindow]> = [];
  for (const [name, help, aggregator, field] of NODE_LAG_GAUGES) {
    registry.removeSingleMetric(name);
    // The first gauge collected takes the window for all of them (the registry collects in registration order).
    const collect = gauges.length === 0 ? fill : undefined;
    gauges.push([new Gauge({ name, help, aggregator, registers: [registry], ...(collect ? { collect } : {}) }), field]);
  }
  function fill(): void {
    const w = loopLag.takeIntervalWindow();
    if (w === null) return; // no tick since the previous collection: the values stand
    for (const [gauge, field] of gauges) gauge.set(w[field]);
  }
}

/**
 * How a metric of several processes becomes one, where prom-client's own choice does not fit: the start time
 * is the primary's (prom-client omits it); every process has the same descriptor limit, and the one closest
 * to it is what matters, so open descriptors show the largest. The rest as prom-client does (CPU, memory,
 * handles and GC summed; event-loop lag averaged, its min and max kept).
 */
const AGGREGATOR_OVERRIDES: Readonly<Record<string, string>> = {
  process_start_time_seconds: 'first',
  process_max_fds: 'first',
  process_open_fds: 'max',
};

/**
 * The counters and histograms of an exited worker's last metrics: what is kept so that the combined counters
 * never go backwards (its gauges, such as memory, go with it).
 */
export function countersOf(metrics: ProcessMetricsJson): ProcessMetricsJson {
  return summed(metrics.filter(isCounting));
}

/** Several countersOf() results summed into one. */
export async function sumCounters(parts: readonly ProcessMetricsJson[]): Promise<ProcessMetricsJson> {
  return summed((await AggregatorRegistry.aggregate(parts as Aggregatable).getMetricsAsJSON()) as ProcessMetricsJson);
}

/** A counter or a histogram: values that only grow, so combining must never show them lower. */
function isCounting(m: ProcessMetricsJson[number]): boolean {
  return String(m.type) === 'counter' || String(m.type) === 'histogram';
}

/** The same metrics, each combined by summing (the identity when aggregated alone). */
function summed(metrics: ProcessMetricsJson): ProcessMetricsJson {
  return metrics.map((m) => ({ ...m, aggregator: 'sum' }));
}

/**
 * The primary's process metrics combined with its workers' latest (primary first), as Prometheus text. Counters
 * and histograms never go below what it exposed before: an exited worker's values move from its slot to the
 * retired entries, and floating-point sums in another order can come out one unit in the last place lower, which
 * Prometheus would read as a counter reset.
 */
export class CombinedProcessMetrics {
  private readonly exposed = new Map<string, number>();

  constructor(private readonly primary: Registry) {}

  async text(workers: readonly ProcessMetricsJson[]): Promise<string> {
    if (workers.length === 0) return this.primary.metrics();
    const own = (await this.primary.getMetricsAsJSON()) as ProcessMetricsJson;
    const all = [own, ...workers].map((metrics) =>
      metrics.map((m) => (m.name in AGGREGATOR_OVERRIDES ? { ...m, aggregator: AGGREGATOR_OVERRIDES[m.name] } : m)),
    );
    const combined = (await AggregatorRegistry.aggregate(all as Aggregatable).getMetricsAsJSON()) as ProcessMetricsJson;
    for (const m of combined) {
      if (!isCounting(m)) continue;
      for (const v of m.values) {
        const key = `${(v as { metricName?: string }).metricName ?? m.name}${JSON.stringify(v.labels)}`;
        const before = this.exposed.get(key);
        if (before !== undefined && v.value < before) v.value = before;
        else this.exposed.set(key, v.value);
      }
    }
    // One input: every series as it is.
    return AggregatorRegistry.aggregate([summed(combined)] as Aggregatable).metrics();
  }
}

type Aggregatable = Parameters<typeof AggregatorRegistry.aggregate>[0];
