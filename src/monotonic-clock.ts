/**
 * The clock for durations, deadlines, rates and probe spacing: milliseconds that only go forward. Date.now() is
 * for the timestamps people read (`lastCheck.at`, the start time): an NTP step or a restored VM moves it by any
 * amount, and a token bucket, a pacer or a deadline on it would stall, or fire early, by as much.
 */
export function monotonicNow(): number {
  return performance.now();
}

/**
 * Wall-clock milliseconds as of the time origin, advanced by the monotonic clock since: comparable between the
 * threads of one process (on Node 20 a worker thread's performance.timeOrigin and now() agree with the main
 * thread's within a millisecond, measured), and unmoved by a step of the wall clock once they run. For ages
 * measured across threads (the failover peer's last advert).
 */
export function threadSharedNow(): number {
  return performance.timeOrigin + performance.now();
}
