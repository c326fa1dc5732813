/** Small statistics helpers: medians, spreads, ratios. Pure functions. */

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

export function minMax(values) {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return null;
  return [Math.min(...v), Math.max(...v)];
}

/** (max - min) / median: how far apart the trials were, relative to the reported value. */
export function relativeSpread(values) {
  const m = median(values);
  const mm = minMax(values);
  if (m === null || mm === null || m === 0) return null;
  return (mm[1] - mm[0]) / Math.abs(m);
}

export function ratio(a, b) {
  if (a === null || b === null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}

/** Least-squares slope of y over x. */
export function slope(xs, ys) {
  const n = xs.length;
  if (n < 2) return null;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? null : num / den;
}
