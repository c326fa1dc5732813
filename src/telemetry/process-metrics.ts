/**
 * prom-client's default process and Node.js metrics ("process and Node.js default metrics", design §6), in a
 * registry of their own. With workers, each proxy worker sends its values to the primary (PROCESS_METRICS_MS),
 * and the primary's /metrics shows them combined with its own: what an operator watches (CPU, memory,
 * descriptors) is mostly spent in the workers, not in the primary.
 */
import { AggregatorRegistry, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';

export type ProcessMetricsJson = Array<MetricObjectWithValues<MetricValue<string>>>;

/** How often a worker sends its process metrics to the primary. */
export const PROCESS_METRICS_MS = 1000;

export function createProcessRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
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
  return metrics.filter((m) => String(m.type) === 'counter' || String(m.type) === 'histogram').map((m) => ({ ...m, aggregator: 'sum' }));
}

/** Several countersOf() results summed into one. */
export async function sumCounters(parts: readonly ProcessMetricsJson[]): Promise<ProcessMetricsJson> {
  const summed = AggregatorRegistry.aggregate(parts as Parameters<typeof AggregatorRegistry.aggregate>[0]);
  return (await summed.getMetricsAsJSON()).map((m) => ({ ...m, aggregator: 'sum' })) as ProcessMetricsJson;
}

/** The Prometheus text of the primary's metrics combined with its workers' latest (primary first). */
export async function combinedProcessMetrics(primary: Registry, workers: readonly ProcessMetricsJson[]): Promise<string> {
  if (workers.length === 0) return primary.metrics();
  const own = (await primary.getMetricsAsJSON()) as ProcessMetricsJson;
  const all = [own, ...workers].map((metrics) =>
    metrics.map((m) => (m.name in AGGREGATOR_OVERRIDES ? { ...m, aggregator: AGGREGATOR_OVERRIDES[m.name] } : m)),
  );
  return AggregatorRegistry.aggregate(all as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics();
}
