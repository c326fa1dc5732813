/** Reading a running balancer's /metrics in tests (the exposition parser is the unit tests' own). */
import { find, parseExposition, value, type Exposition } from '../unit/telemetry-fixtures.js';

export async function scrapeMetrics(admin: number): Promise<Exposition> {
  const r = await fetch(`http://127.0.0.1:${admin}/metrics`, { signal: AbortSignal.timeout(5000) });
  return parseExposition(await r.text());
}

/** The one sample of `name` matching `labels`; throws when there is none or more than one. */
export async function metricValue(admin: number, name: string, labels: Record<string, string>): Promise<number> {
  return value(await scrapeMetrics(admin), name, labels);
}

/** The samples of `name` matching `labels`, summed (0 when there is none). */
export async function metricSum(admin: number, name: string, labels: Record<string, string>): Promise<number> {
  return find(await scrapeMetrics(admin), name, labels).reduce((a, s) => a + s.value, 0);
}
