/**
 * The primary's side of the takeover rule across workers [MQTT-3.1.4-3] (client-id-registry.ts): which worker holds
 * each client ID of each pool, on which server, since when; and which session to close when two workers hold one
 * client ID on different servers. The claim whose CONNECT went later wins, whichever worker's report came first
 * (reports are batched: client-id-exchange.ts). On one server the broker applies the rule itself; within one worker,
 * the worker's own registry did. Pure: fed the workers' events, answers orders.
 */
import type { ClientIdEvent, TakeoverOrder } from './messages.js';

interface Claim {
  worker: number;
  serial: number;
  /** Where the session runs: its server's name and the address it was dialled at (one broker: the same place). */
  server: string;
  atMicros: number;
}

export interface WorkerOrder {
  worker: number;
  order: TakeoverOrder;
}

/**
 * How many ended claims are remembered (ended): a late-reported older claim is judged against the newest session of
 * its ID that ended meanwhile, within the last this many ends (at 250 sessions a second, 40 s of them).
 */
export const ENDED_CLAIMS_KEPT = 10_000;
/** ...and their pool names and client IDs together hold at most this many characters (a client ID may be 65,535 bytes). */
export const ENDED_CHARS_KEPT = 2 * 1024 * 1024;

/** A claim's server name: its place is the name, a space, the address dialled (client-id-registry.ts brokerPlace). */
function serverName(place: string): string {
  const space = place.lastIndexOf(' ');
  return space < 0 ? place : place.slice(0, space);
}

export class ClientIdLedger {
  /** Per pool, per client ID: the newest claim known. */
  private readonly pools = new Map<string, Map<string, Claim>>();
  /**
   * The claims of sessions that ended, by pool and client ID (the newest of each), in the order they ended, at most
   * ENDED_CLAIMS_KEPT (and ENDED_CHARS_KEPT). An older session whose CONNACK comes after the newer session of its
   * ID has ended, in another worker, is closed all the same: a broker that saw both would have closed it at the newer
   * CONNECT. (Within one worker its registry closed it at the newer session's CONNACK already.)
   */
  private readonly ended = new Map<string, Claim>();
  /** The length of `ended`'s keys together. */
  private endedChars = 0;
  /** Per worker, per serial: the pool and client ID of each claim it reported and has not released. */
  private readonly serials = new Map<number, Map<number, { pool: string; id: string }>>();

  /** Worker `worker`'s events (by a worker id never reused), in its order: the sessions to close, each with the worker that holds it. */
  apply(worker: number, events: readonly ClientIdEvent[]): WorkerOrder[] {
    const orders: WorkerOrder[] = [];
    for (const e of events) {
      if (e[0] === 'claim') this.claim(e[1], e[2], { worker, serial: e[3], server: e[4], atMicros: e[5] }, orders);
      else this.release(worker, e[1]);
    }
    return orders;
  }

  /** A worker exited: its sessions went with it. */
  forgetWorker(worker: number): void {
    const claims = this.serials.get(worker);
    if (claims === undefined) return;
    this.serials.delete(worker);
    for (const [serial, { pool, id }] of claims) this.drop(pool, id, worker, serial);
  }

  /** Client IDs held, all pools together. */
  get size(): number {
    let n = 0;
    for (const ids of this.pools.values()) n += ids.size;
    return n;
  }

  private claim(pool: string, id: string, claim: Claim, orders: WorkerOrder[]): void {
    // Older than a session of its ID that has ended meanwhile (its CONNACK came late): closed all the same. It is
    // recorded as any claim until its release: its worker's registry holds it (and has let go of any claim it replaced).
    const gone = this.ended.get(endedKey(pool, id));
    const closing = gone !== undefined && claim.atMicros < gone.atMicros && gone.worker !== claim.worker && gone.server !== claim.server;
    if (closing) orders.push({ worker: claim.worker, order: [pool, id, claim.serial, false, serverName(gone.server)] });
    let ids = this.pools.get(pool);
    if (ids === undefined) {
      ids = new Map();
      this.pools.set(pool, ids);
    }
    const held = ids.get(id);
    if (held !== undefined && claim.atMicros < held.atMicros) {
      // An older session reported late: it is the one to close (its own worker's registry knew the newer one when
      // both are its own, and on one server the broker closes it).
      if (!closing && held.worker !== claim.worker && held.server !== claim.server) orders.push({ worker: claim.worker, order: [pool, id, claim.serial, false, serverName(held.server)] });
      return;
    }
    ids.set(id, claim);
    this.serialsOf(claim.worker).set(claim.serial, { pool, id });
    if (held === undefined) return;
    if (held.worker === claim.worker) {
      this.serials.get(held.worker)?.delete(held.serial);
      return;
    }
    if (held.server !== claim.server) orders.push({ worker: held.worker, order: [pool, id, held.serial, true, serverName(claim.server)] });
  }

  private release(worker: number, serial: number): void {
    const claims = this.serials.get(worker);
    const claim = claims?.get(serial);
    if (claim === undefined) return;
    claims!.delete(serial);
    this.drop(claim.pool, claim.id, worker, serial);
  }

  /** Forget `id` of `pool` if its newest claim is still that of `worker` under `serial`. */
  private drop(pool: string, id: string, worker: number, serial: number): void {
    const ids = this.pools.get(pool);
    const held = ids?.get(id);
    if (held === undefined || held.worker !== worker || held.serial !== serial) return;
    ids!.delete(id);
    if (ids!.size === 0) this.pools.delete(pool);
    // The newest session of the ID that ended is what a late older claim is judged against: one whose CONNECT went
    // earlier (accepted late, on the same server) does not replace it.
    const key = endedKey(pool, id);
    const before = this.ended.get(key);
    if (before !== undefined && before.atMicros >= held.atMicros) return;
    if (before !== undefined) {
      this.ended.delete(key); // re-inserted: the latest end comes last
      this.endedChars -= key.length;
    }
    this.ended.set(key, held);
    this.endedChars += key.length;
    while (this.ended.size > ENDED_CLAIMS_KEPT || this.endedChars > ENDED_CHARS_KEPT) {
      const oldest = this.ended.keys().next().value!;
      this.ended.delete(oldest);
      this.endedChars -= oldest.length;
    }
  }

  private serialsOf(worker: number): Map<number, { pool: string; id: string }> {
    let claims = this.serials.get(worker);
    if (claims === undefined) {
      claims = new Map();
      this.serials.set(worker, claims);
    }
    return claims;
  }
}

/** One key per pool and client ID (a pool name holds no newline: config/validate-pools.ts). */
function endedKey(pool: string, id: string): string {
  return `${pool}\n${id}`;
}
