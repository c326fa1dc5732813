/** Turns the raw trial records into medians, spreads, ratios and target verdicts, and prints the table. */
import { median, minMax, relativeSpread, ratio } from './stats.mjs';

/**
 * The headline metrics. `better` says which direction is good; `target` (ratio to HAProxy or absolute KiB)
 * is the goal.
 */
export const METRICS = [
  { key: 'connRate', test: 'connRate', field: 'connPerSec', label: 'connection setup rate (conn/s)', better: 'higher', target: { vsHaproxy: 1.0 } },
  { key: 'msgRate64', test: 'msgRate64', field: 'msgPerSec', label: 'msg rate 64 B QoS 0 (msg/s)', better: 'higher', target: { vsHaproxy: 1.0 } },
  { key: 'msgRate16k', test: 'msgRate16k', field: 'msgPerSec', label: 'msg rate 16 KiB QoS 0 (msg/s)', better: 'higher', target: { vsHaproxy: 1.0 } },
  { key: 'latP50', test: 'latency', field: 'p50Ms', label: 'latency p50 @10k msg/s (ms)', better: 'lower', target: { vsHaproxy: 1.0 } },
  { key: 'latP99', test: 'latency', field: 'p99Ms', label: 'latency p99 @10k msg/s (ms)', better: 'lower' },
  { key: 'rssPerConn', test: 'heldMemory', field: 'kibPerConn', label: 'RSS per held connection (KiB)', better: 'lower', target: { absoluteMax: 8 } },
  { key: 'rssSlope', test: 'heldMemory', field: 'slopeKibPerConn', label: '  same, slope over steps (KiB)', better: 'lower' },
  { key: 'cpuMsg64', test: 'msgRate64', field: 'targetCpuUsPerMsg', label: 'target CPU per msg, 64 B (µs)', better: 'lower' },
  { key: 'cpuMsg16k', test: 'msgRate16k', field: 'targetCpuUsPerMsg', label: 'target CPU per msg, 16 KiB (µs)', better: 'lower' },
  { key: 'cpuMsgLat', test: 'latency', field: 'targetCpuUsPerMsg', label: 'target CPU per msg @10k/s (µs)', better: 'lower' },
  { key: 'cpuConn', test: 'connRate', field: 'targetCpuUsPerConn', label: 'target CPU per conn+close (µs)', better: 'lower' },
  { key: 'cpuConnSetup', test: 'connRate', field: 'targetSetupCpuUsPerConn', label: '  of which setup (C generator) (µs)', better: 'lower' },
];

export function summarize(records, targets) {
  const summary = {};
  for (const m of METRICS) {
    const row = { label: m.label, better: m.better, byTarget: {} };
    for (const t of targets) {
      const values = records.filter((r) => r.test === m.test && r.target === t).map((r) => r.result[m.field]);
      row.byTarget[t] = { median: median(values), minMax: minMax(values), relSpread: relativeSpread(values), n: values.length, values };
    }
    const lb = row.byTarget['mqtt-lb']?.median ?? null;
    row.lbVsHaproxy = ratio(lb, row.byTarget.haproxy?.median ?? null);
    row.lbVsDirect = ratio(lb, row.byTarget.direct?.median ?? null);
    row.haproxyVsDirect = ratio(row.byTarget.haproxy?.median ?? null, row.byTarget.direct?.median ?? null);
    // Paired per-trial ratios (same trial, adjacent in time): less sensitive to slow drift of the machine.
    const pairs = records.filter((r) => r.test === m.test && r.target === 'mqtt-lb').map((r) => {
      const h = records.find((x) => x.test === m.test && x.target === 'haproxy' && x.trial === r.trial);
      return h === undefined ? null : ratio(r.result[m.field], h.result[m.field]);
    });
    row.pairedLbVsHaproxy = median(pairs.filter((x) => x !== null));
    if (m.target !== undefined) {
      if (m.target.vsHaproxy !== undefined && row.lbVsHaproxy !== null) {
        row.target = `${m.better === 'higher' ? '>=' : '<='} ${m.target.vsHaproxy.toFixed(1)}x haproxy`;
        row.met = m.better === 'higher' ? row.lbVsHaproxy >= m.target.vsHaproxy : row.lbVsHaproxy <= m.target.vsHaproxy;
      } else if (m.target.absoluteMax !== undefined && lb !== null) {
        row.target = `<= ${m.target.absoluteMax} KiB`;
        row.met = lb <= m.target.absoluteMax;
      }
    }
    summary[m.key] = row;
  }
  return summary;
}

function fmt(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a >= 10000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

function fmtRatio(v) {
  return v === null || v === undefined ? '-' : `${v.toFixed(2)}x`;
}

function pad(s, n, right = false) {
  s = String(s);
  return right ? s.padStart(n) : s.padEnd(n);
}

export function printTable(summary, targets, write = (s) => process.stdout.write(s)) {
  const cols = targets;
  const header = [pad('metric (median of trials)', 34), ...cols.map((c) => pad(c, 11, true)), pad('lb/haproxy', 11, true), pad('paired', 7, true), pad('lb/direct', 10, true), pad('spread', 8, true), '  target'];
  write(header.join(' ') + '\n');
  write('-'.repeat(header.join(' ').length + 12) + '\n');
  for (const row of Object.values(summary)) {
    const spreads = cols.map((c) => row.byTarget[c]?.relSpread).filter((x) => x !== null && x !== undefined);
    const spread = spreads.length > 0 ? `${Math.round(Math.max(...spreads) * 100)}%` : '-';
    const verdict = row.target === undefined ? '' : `${row.target}: ${row.met ? 'MET' : 'NOT MET'}`;
    write(
      [
        pad(row.label, 34),
        ...cols.map((c) => pad(fmt(row.byTarget[c]?.median), 11, true)),
        pad(fmtRatio(row.lbVsHaproxy), 11, true),
        pad(fmtRatio(row.pairedLbVsHaproxy), 7, true),
        pad(fmtRatio(row.lbVsDirect), 10, true),
        pad(spread, 8, true),
        '  ' + verdict,
      ].join(' ') + '\n',
    );
  }
  write('lb/haproxy, lb/direct = ratio of the medians; paired = median of per-trial mqtt-lb/haproxy ratios.\n');
  write('spread = (max - min) / median over the trials, worst target of the row.\n');
}
