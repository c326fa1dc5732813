/**
 * The primary's side of the takeover rule across workers [MQTT-3.1.4-3] (client-id-registry.ts): which worker holds
 * each client ID of each pool, on which server, since when; and which session to close when two workers hold one
 * client ID on different servers. The older claim loses, whichever worker's report came first (reports are batched:
 * client-id-exchange.ts). On one server the broker applies the rule itself; within one worker, the worker's own
 * registry did at the CONNACK. Pure: fed the workers' events, answers orders.
 */
import type { ClientIdEvent, TakeoverOrder } from './messages.js';

interface Claim {
  worker: number;
  serial: number;
  server: string;
  atMicros: number;
}

export interface WorkerOrder {
  worker: number;
  order: TakeoverOrder;
}

export class ClientIdLedger {
  /** Per pool, per client ID: the newest claim known. */
  private readonly pools = new Map<string, Map<string, Claim>>();

  /** Worker `worker`'s events (by a worker id never reused), in its order: the sessions to close, each with the worker that holds it. */
  apply(worker: number, events: readonly ClientIdEvent[]): WorkerOrder[] {
    const orders: WorkerOrder[] = [];
    for (const e of events) {
      if (e[0] === 'claim') this.claim(worker, e[1], e[2], { worker, serial: e[3], server: e[4], atMicros: e[5] }, orders);
      else this.release(worker, e[1], e[2], e[3]);
    }
    return orders;
  }

  /** A worker exited: its sessions went with it. */
  forgetWorker(worker: number): void {
    for (const [pool, ids] of this.pools) {
      for (const [id, claim] of ids) if (claim.worker === worker) ids.delete(id);
      if (ids.size === 0) this.pools.delete(pool);
    }
  }

  /** Client IDs held, all pools together. */
  get size(): number {
    let n = 0;
    for (const ids of this.pools.values()) n += ids.size;
    return n;
  }

  private claim(worker: number, pool: string, id: string, claim: Claim, orders: WorkerOrder[]): void {
    let ids = this.pools.get(pool);
    if (ids === undefined) {
      ids = new Map();
      this.pools.set(pool, ids);
    }
    const held = ids.get(id);
    // None, or the same worker's older claim (its registry applied the rule already): the newer claim holds.
    if (held === undefined || held.worker === worker) {
      ids.set(id, claim);
      return;
    }
    const [newer, older] = claim.atMicros >= held.atMicros ? [claim, held] : [held, claim];
    ids.set(id, newer);
    // On one server the broker closes the older connection itself.
    if (older.server !== newer.server) orders.push({ worker: older.worker, order: [pool, id, older.serial] });
  }

  private release(worker: number, pool: string, id: string, serial: number): void {
    const ids = this.pools.get(pool);
    const held = ids?.get(id);
    if (held === undefined || held.worker !== worker || held.serial !== serial) return;
    ids!.delete(id);
    if (ids!.size === 0) this.pools.delete(pool);
  }
}
