/**
 * The clock for durations, deadlines, rates and probe spacing: milliseconds that only go forward. Date.now() is
 * for the timestamps people read (`lastCheck.at`, the start time): an NTP step or a restored VM moves it by any
 * amount, and a token bucket, a pacer or a deadline on it would stall, or fire early, by as much.
 */
export function monotonicNow(): number {
  return performance.now();
}
