/**
 * contrib/ and docs/ stay in step with the code: every metric the Grafana dashboard queries and every
 * metric docs/metrics.md describes is one /metrics really exports, and the reverse for our own metrics.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/telemetry/metrics.js';
import { FakeSession, FakeSource, failoverStatus, listenerStats, makeServer, parseExposition, type Exposition } from './telemetry-fixtures.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (p: string): string => readFileSync(`${root}${p}`, 'utf8');

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Array<{ refId: string; expr: string; datasource?: { type: string; uid: string } }>;
  panels?: Panel[];
}

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

const PROMQL_WORDS = new Set([
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'and', 'or', 'unless', 'inf', 'nan',
]);

/** Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or strings. */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // string literals
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // range selectors
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // label lists
    .replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/g, ' '); // Grafana variables
  const names: string[] = [];
  for (const m of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*(?:\.[0-9]+)?/g)) {
    const word = m[0];
    const after = stripped.slice(m.index + word.length).trimStart();
    if (after.startsWith('(')) continue; // a function
    if (PROMQL_WORDS.has(word.toLowerCase())) continue;
    names.push(word);
  }
  return names;
}

let metrics: Metrics;
let exposition: Exposition;

beforeAll(async () => {
  // Everything switched on, so that every family has samples.
  const source = new FakeSource();
  const l = listenerStats('mqtt', { active: 3 });
  l.rejected.set('no_server', 1);
  source.listenerList = [l];
  const b1 = makeServer('brokers', 'b1');
  b1.sessions.add(new FakeSession(10, 20));
  source.poolList = [{ name: 'brokers', balance: 'client-id-hash', servers: [b1] }];
  source.failoverStatus = failoverStatus('master');
  source.workerCounts = () => ({ serving: 2, restarts: 1, exits: 1 });
  metrics = new Metrics(source);
  metrics.healthCheck('brokers', 'b1', 'ok', 0.002);
  metrics.serverConnect('brokers', 'b1', 0.001);
  metrics.configReload('ok');
  await new Promise((r) => setTimeout(r, 60)); // one event-loop lag sample
  exposition = parseExposition(await metrics.text());
});

afterAll(() => metrics?.close());

/** The family of a sample name as used in PromQL (histogram series carry _bucket/_sum/_count). */
function exported(name: string): boolean {
  if (exposition.types.has(name)) return true;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return base !== name && exposition.types.get(base) === 'histogram';
}

describe('contrib/grafana-dashboard.json', () => {
  const dashboard = JSON.parse(read('contrib/grafana-dashboard.json')) as {
    title: string;
    uid: string;
    schemaVersion: number;
    panels: Panel[];
    templating: { list: Array<{ name: string; type: string; query: unknown; datasource?: { uid: string } }> };
  };
  const panels = allPanels(dashboard.panels);
  const queries = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

  it('extracts metric names from PromQL the way Prometheus reads it', () => {
    expect(
      metricNames('histogram_quantile(0.99, sum by (le, pool) (rate(mqtt_lb_x_bucket{a="b", c=~"$d"}[$__rate_interval]))) > 0'),
    ).toEqual(['mqtt_lb_x_bucket']);
    expect(metricNames('a{s="up"} + 2 * max by (instance) (b) / on (x) group_left (y) c')).toEqual(['a', 'b', 'c']);
  });

  it('is a valid Grafana dashboard with a ${datasource} variable', () => {
    expect(dashboard.title).toBe('mqtt-lb');
    expect(dashboard.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    expect(typeof dashboard.schemaVersion).toBe('number');
    const ds = dashboard.templating.list.find((v) => v.name === 'datasource');
    expect(ds).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) expect(v.datasource?.uid).toBe('${datasource}');

    expect(panels.filter((p) => p.type !== 'row').length).toBeGreaterThanOrEqual(10);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.title, `panel ${p.id}`).toBeTruthy();
      const g = p.gridPos;
      expect(g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.y >= 0 && g.h > 0, `${p.title} gridPos`).toBe(true);
      if (p.type === 'row') continue;
      expect(['timeseries', 'stat', 'state-timeline', 'table', 'gauge', 'bargauge'], p.title).toContain(p.type);
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets?.length ?? 0, p.title).toBeGreaterThan(0);
      const refIds = p.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, `${p.title} refIds`).toBe(refIds.length);
      for (const t of p.targets!) {
        expect(t.expr.trim(), p.title).not.toBe('');
        expect(t.datasource?.uid ?? '${datasource}', p.title).toBe('${datasource}');
      }
    }
  });

  it('queries only metrics that /metrics exports', () => {
    const used = new Set<string>();
    for (const q of queries) {
      const names = metricNames(q.expr);
      expect(names.length, `${q.panel}: ${q.expr}`).toBeGreaterThan(0);
      for (const n of names) {
        used.add(n);
        expect(exported(n), `${q.panel} uses ${n}, which /metrics does not export`).toBe(true);
      }
    }
    // The panels the brief asks for are there.
    for (const needed of [
      'mqtt_lb_connections_active',
      'mqtt_lb_connections_total',
      'mqtt_lb_connect_rejected_total',
      'mqtt_lb_server_sessions_active',
      'mqtt_lb_server_bytes_total',
      'mqtt_lb_server_up',
      'mqtt_lb_server_state',
      'mqtt_lb_health_checks_total',
      'mqtt_lb_health_check_duration_seconds_bucket',
      'mqtt_lb_failover_state',
      'mqtt_lb_failover_transitions_total',
      'mqtt_lb_event_loop_lag_seconds',
    ]) {
      expect(used, needed).toContain(needed);
    }
  });
});

describe('contrib/prometheus.yml', () => {
  it('scrapes the default admin address', () => {
    const y = parseYaml(read('contrib/prometheus.yml')) as {
      scrape_configs: Array<{ job_name: string; metrics_path?: string; static_configs: Array<{ targets: string[] }> }>;
    };
    const job = y.scrape_configs.find((j) => j.job_name === 'mqtt-lb');
    expect(job).toBeDefined();
    expect(job!.metrics_path ?? '/metrics').toBe('/metrics');
    expect(job!.static_configs.flatMap((s) => s.targets)).toContain('127.0.0.1:9883');
  });
});

describe('docs/metrics.md', () => {
  const doc = read('docs/metrics.md');

  it('describes every mqtt_lb_ metric with its type and labels', () => {
    const ours = [...exposition.types.entries()].filter(([n]) => n.startsWith('mqtt_lb_'));
    expect(ours.length).toBeGreaterThan(15);
    for (const [name, type] of ours) {
      const row = doc.split('\n').find((line) => line.startsWith(`| \`${name}\``));
      expect(row, `docs/metrics.md has a table row for ${name}`).toBeDefined();
      expect(row, `${name} type`).toContain(` ${type} `);
      const labels = new Set(exposition.samples.filter((s) => s.name.startsWith(name)).flatMap((s) => Object.keys(s.labels)));
      labels.delete('le');
      for (const label of labels) expect(row, `${name} label ${label}`).toContain(`\`${label}\``);
    }
  });

  it('mentions only metrics that exist', () => {
    for (const m of doc.matchAll(/`(mqtt_lb_[a-z0-9_]+)/g)) expect(exported(m[1]!), m[1]).toBe(true);
  });
});
