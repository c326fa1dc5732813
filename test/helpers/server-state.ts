/** A server's state as the LB's /api/status reports it (design.md §6), how long it takes to reach one, and the admin actions. */
import { expect } from 'vitest';
import { sleep } from './lb.js';

/** POST drain, maint or ready for `server` of pool `brokers` (design.md §6); expects 200, returns the answer. */
export async function serverAction(admin: number, server: string, action: 'drain' | 'maint' | 'ready'): Promise<{ admin: string; state: string }> {
  const r = await fetch(`http://127.0.0.1:${admin}/api/servers/brokers/${server}/${action}`, { method: 'POST', signal: AbortSignal.timeout(2000) });
  expect(r.status).toBe(200);
  return (await r.json()) as { admin: string; state: string };
}

/** The state of `server` in the first pool of the LB whose admin API is on 127.0.0.1:`admin`. */
export async function serverState(admin: number, server: string): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${admin}/api/status`, { signal: AbortSignal.timeout(2000) });
  const doc = (await r.json()) as { pools: Array<{ servers: Array<{ name: string; state: string }> }> };
  return doc.pools[0]!.servers.find((s) => s.name === server)!.state;
}

/** Milliseconds from `since` (Date.now()) until `server` is in `state`, polled every 50 ms for up to `timeoutMs`; -1 if never. */
export async function msUntilServerState(admin: number, server: string, state: string, since: number, timeoutMs = 3000): Promise<number> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if ((await serverState(admin, server)) === state) return Date.now() - since;
    await sleep(50);
  }
  return -1;
}
