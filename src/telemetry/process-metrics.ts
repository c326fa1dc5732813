/**
 * prom-client's default process and Node.js metrics ("process and Node.js default metrics", design §6), in a
 * registry of their own. With workers, each proxy worker sends its values to the primary (PROCESS_METRICS_MS),
 * and the primary's /metrics shows them combined with its own: what an operator watches (CPU, memory,
 * descriptors) is mostly spent in the workers, not in the primary.
 */
import { AggregatorRegistry, Counter, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { droppedLogLines } from './log-stream.js';

export type ProcessMetricsJson = Array<MetricObjectWithValues<MetricValue<string>>>;

/** How often a worker sends its process metrics to the primary. */
export const PROCESS_METRICS_MS = 1000;

export function createProcessRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
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
