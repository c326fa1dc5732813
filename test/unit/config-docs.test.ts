/** docs/configuration.md stays in step with the validator: every key documented, every default right. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config/defaults.js';
import { formatDuration } from '../../src/config/duration.js';
import { KEYS } from '../../src/config/keys.js';
import { parseConfig } from '../../src/config/load.js';

const DOC = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');

/** Heading text in the doc -> the KEYS section it documents. */
const HEADINGS: Record<keyof typeof KEYS, string> = {
  root: 'Top level',
  listener: 'listeners[]',
  tls: 'listeners[].tls',
  pool: 'pools.&lt;name&gt;',
  server: 'pools.&lt;name&gt;.servers[]',
  health: 'pools.&lt;name&gt;.health',
  healthMqtt: 'pools.&lt;name&gt;.health.mqtt',
  healthHttp: 'pools.&lt;name&gt;.health.http',
  limits: 'limits',
  perSource: 'limits.perSource',
  admin: 'admin',
  log: 'log',
  failover: 'failover',
  instance: 'failover.instances[]',
  track: 'failover.track',
  trackPools: 'failover.track.pools',
  trackScript: 'failover.track.scripts[]',
  garp: 'failover.garp',
};

/** The defaults each table must show (scalars and empty lists; sub-mappings have their own table). */
const TABLE_DEFAULTS: Partial<Record<keyof typeof KEYS, Record<string, unknown>>> = {
  root: { workers: DEFAULTS.workers, warmUp: DEFAULTS.warmUp, failover: null },
  listener: DEFAULTS.listener,
  tls: DEFAULTS.tls,
  pool: DEFAULTS.pool,
  server: DEFAULTS.server,
  health: DEFAULTS.health,
  healthMqtt: DEFAULTS.health.mqtt,
  healthHttp: DEFAULTS.health.http,
  limits: DEFAULTS.limits,
  perSource: DEFAULTS.limits.perSource,
  admin: DEFAULTS.admin,
  log: DEFAULTS.log,
  failover: { ...DEFAULTS.failover, ...DEFAULTS.failoverInstance, instances: [] },
  instance: { priority: DEFAULTS.failoverInstance.priority },
  track: DEFAULTS.failover.track,
  trackPools: DEFAULTS.failover.track.pools,
  trackScript: DEFAULTS.trackScript,
  garp: DEFAULTS.failover.garp,
};

const DURATION_KEYS = new Set([
  'serverConnectTimeout',
  'serverConnackTimeout',
  'interval',
  'timeout',
  'clientConnectTimeout',
  'drainTimeout',
  'idleTimeout',
  'advertInterval',
  'preemptDelay',
  'repeatAfter',
]);

/** heading -> key -> the default column, read from the markdown tables. */
function tables(): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let heading = '';
  for (const line of DOC.split('\n')) {
    const h = /^#+ (.*)$/.exec(line);
    if (h !== null) {
      heading = h[1]!.trim();
      continue;
    }
    const row = /^\| `([A-Za-z]+)` \|(.*)$/.exec(line);
    if (row === null) continue;
    // Split on unescaped pipes: enum types are written `a` \| `b`.
    const cells = row[2]!.split(/(?<!\\)\|/).map((c) => c.trim());
    if (!out.has(heading)) out.set(heading, new Map());
    out.get(heading)!.set(row[1]!, cells[1]!);
  }
  return out;
}

function expectedCell(key: string, value: unknown): string {
  if (typeof value === 'number' && DURATION_KEYS.has(key)) return `\`${formatDuration(value)}\``;
  if (Array.isArray(value)) return `\`${JSON.stringify(value)}\``;
  return `\`${String(value)}\``;
}

describe('docs/configuration.md', () => {
  const docTables = tables();

  it.each(Object.entries(HEADINGS))('documents every key of %s, and nothing else', (section, heading) => {
    const rows = docTables.get(heading);
    expect(rows, `no table under "${heading}"`).toBeDefined();
    expect([...rows!.keys()].sort()).toEqual([...KEYS[section as keyof typeof KEYS]].sort());
  });

  it.each(Object.entries(TABLE_DEFAULTS))('shows the defaults of %s', (section, defaults) => {
    const rows = docTables.get(HEADINGS[section as keyof typeof KEYS])!;
    for (const [key, value] of Object.entries(defaults!)) {
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) continue; // own table
      if (!rows.has(key)) continue; // e.g. failover.routerId default shown where the key is
      expect(`${key}: ${rows.get(key)}`).toBe(`${key}: ${expectedCell(key, value)}`);
    }
  });

  it('has a complete example that is valid and uses the defaults', () => {
    const m = /## A complete example[\s\S]*?```yaml\n([\s\S]*?)```/.exec(DOC);
    expect(m).not.toBeNull();
    const out = parseConfig(m![1]!, 'example.yaml');
    expect(out.problems).toEqual([]);
    expect(out.warnings).toEqual([]);
    const pool = out.config!.pools['brokers']!;
    expect(pool.health.interval).toBe(DEFAULTS.health.interval);
    expect(out.config!.failover!.instances).toEqual([
      { routerId: DEFAULTS.failoverInstance.routerId, priority: DEFAULTS.failoverInstance.priority, vips: ['192.0.2.10/24'] },
    ]);
  });
});
