/**
 * A Prometheus histogram for observations made on the connection path (once per proxied connection).
 *
 * prom-client's Histogram.observe() validates the label object and hashes it into a string on every call:
 * in --cpu-prof of the connection benchmark that was the largest item of our own code (1.5 % of the
 * balancer's CPU). Here the caller keeps the series it observes into (a few numbers per label set), so an
 * observation is a bucket search and three additions; the exposition is built when scraped, in the shape
 * prom-client's own histograms have (`_bucket` with `le`, cumulative, then `_sum` and `_count`; series in the
 * order they were created).
 *
 * It is registered in a prom-client Registry like prom-client's metrics: the registry only reads `name`,
 * `help`, `type` and `get()`.
 */
import type { MetricObjectWithValues, MetricValueWithName, Registry } from 'prom-client';

/** One label set's counts. */
export class HistogramSeries {
  /** Observations per bucket (not cumulative); the last slot is above the highest bound (+Inf). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  private readonly bounds: readonly number[];

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    // Upper bounds are inclusive, as in Prometheus (`le`).
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

export interface SeriesHistogramConfig<L extends string> {
  name: string;
  help: string;
  labelNames: readonly L[];
  /** Upper bounds, ascending. */
  buckets: readonly number[];
  registers: Registry[];
}

type Labels<L extends string> = Record<L, string>;

export class SeriesHistogram<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  private readonly labelNames: readonly L[];
  private readonly bounds: readonly number[];
  private readonly bySeries = new Map<string, { labels: Labels<L>; series: HistogramSeries }>();

  constructor(config: SeriesHistogramConfig<L>) {
    for (let i = 1; i < config.buckets.length; i++) {
      if (!(config.buckets[i]! > config.buckets[i - 1]!)) throw new RangeError(`${config.name}: buckets must be ascending`);
    }
    this.name = config.name;
    this.help = config.help;
    this.labelNames = config.labelNames;
    this.bounds = [...config.buckets];
    for (const r of config.registers) r.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** The series of one label set, created on first use. Keep it: observing through it is the cheap path. */
  series(labels: Labels<L>): HistogramSeries {
    const key = this.keyOf(labels);
    let entry = this.bySeries.get(key);
    if (entry === undefined) {
      entry = { labels: { ...labels }, series: new HistogramSeries(this.bounds) };
      this.bySeries.set(key, entry);
    }
    return entry.series;
  }

  /** Forget one label set (a server removed by a reload); a series kept by a caller no longer shows. */
  remove(labels: Labels<L>): void {
    this.bySeries.delete(this.keyOf(labels));
  }

  async get(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const values: MetricValueWithName<string>[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, series } of this.bySeries.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += series.counts[i]!;
        values.push({ labels: { le: this.bounds[i]!, ...labels }, value: cumulative, metricName: bucket });
      }
      values.push({ labels: { le: '+Inf', ...labels }, value: series.count, metricName: bucket });
      values.push({ labels, value: series.sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: series.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values } as unknown as MetricObjectWithValues<MetricValueWithName<string>>;
  }

  private keyOf(labels: Labels<L>): string {
    return JSON.stringify(this.labelNames.map((n) => labels[n]));
  }
}
