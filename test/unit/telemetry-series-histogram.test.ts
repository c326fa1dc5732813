/**
 * SeriesHistogram (src/telemetry/series-histogram.ts) must expose exactly what prom-client's Histogram
 * exposes for the same observations: the two are fed the same values and their scrapes compared as text.
 */
import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SeriesHistogram } from '../../src/telemetry/series-histogram.js';

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

function pair(): { ours: SeriesHistogram<'pool' | 'server'>; theirs: Histogram<'pool' | 'server'>; oursText: () => Promise<string>; theirsText: () => Promise<string> } {
  const a = new Registry();
  const b = new Registry();
  const config = { name: 'x_seconds', help: 'Help text.', labelNames: ['pool', 'server'] as const, buckets: BUCKETS };
  const ours = new SeriesHistogram({ ...config, registers: [a] });
  const theirs = new Histogram({ ...config, labelNames: [...config.labelNames], registers: [b] });
  return { ours, theirs, oursText: () => a.metrics(), theirsText: () => b.metrics() };
}

describe('SeriesHistogram', () => {
  it('scrapes as prom-client Histogram does, bounds inclusive, +Inf past the last', async () => {
    const { ours, theirs, oursText, theirsText } = pair();
    // Every bound exactly, just above each, zero, and beyond the last bucket.
    const values = [0, ...BUCKETS, ...BUCKETS.map((b) => b * 1.0001), 11, 1e6, 0.0004];
    // As Metrics does: the series is asked for at the first observation (the scrape lists series in that order).
    values.forEach((v, i) => {
      const server = i % 3 === 0 ? 'b2' : 'b1';
      ours.series({ pool: 'brokers', server }).observe(v);
      theirs.observe({ pool: 'brokers', server }, v);
    });
    expect(await oursText()).toBe(await theirsText());
    expect(await oursText()).toContain('x_seconds_bucket{le="+Inf",pool="brokers",server="b1"}');
  });

  it('one series per label set; removed series leave the scrape', async () => {
    const { ours, theirs, oursText, theirsText } = pair();
    expect(ours.series({ pool: 'p', server: 's' })).toBe(ours.series({ server: 's', pool: 'p' }));
    ours.series({ pool: 'p', server: 's' }).observe(0.003);
    ours.series({ pool: 'p', server: 't' }).observe(0.2);
    theirs.observe({ pool: 'p', server: 's' }, 0.003);
    theirs.observe({ pool: 'p', server: 't' }, 0.2);
    ours.remove({ pool: 'p', server: 't' });
    theirs.remove({ pool: 'p', server: 't' });
    expect(await oursText()).toBe(await theirsText());
    expect(await oursText()).not.toContain('server="t"');
  });

  it('an empty histogram scrapes as its HELP and TYPE lines', async () => {
    const { oursText, theirsText } = pair();
    expect(await oursText()).toBe(await theirsText());
  });

  it('refuses buckets out of order', () => {
    expect(() => new SeriesHistogram({ name: 'y', help: 'h', labelNames: ['a'], buckets: [1, 1], registers: [] })).toThrow(RangeError);
  });
});
