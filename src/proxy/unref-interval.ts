/**
 * A periodic tick that never keeps the process alive (the sockets it looks after do that); returns its stop
 * function. The default `schedule` of the sweeps over sessions (keepalive-arming.ts, idle-sweep.ts).
 */
export function unrefInterval(tick: () => void, everyMs: number): () => void {
  const timer = setInterval(tick, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
