/**
 * The receive pipeline of an advert datagram, in the order that keeps unauthenticated input cheap and
 * counted: our own datagrams (ignored) → structure and HMAC (`malformed`, `bad_hmac`) → source address
 * (`router_id`: not a configured peer) → router id (`router_id`) → replay window (`replay`). Only what passes
 * reaches a state machine.
 */
import { type AdvertCodec, type AdvertFields, type DropReason } from './advert.js';
import { ipv4ToNumber } from './ipv4.js';
import type { ReplayGuard } from './replay.js';

export type ReceiveResult =
  | { kind: 'advert'; advert: AdvertFields; sender: number }
  | {
      kind: 'drop';
      reason: DropReason;
      /** The advert carried our own boot epoch: pick a new one. */ ownEpoch?: boolean;
      /** Authentic, from an address that is not in failover.peers. */ notPeer?: boolean;
      /** `router_id`: the router id it carried (an instance we do not run). */ routerId?: number;
    }
  | { kind: 'own' };

export interface AdvertReceiverOptions {
  codec: AdvertCodec;
  routerIds: ReadonlySet<number>;
  /** When set (the configured peers), authentic adverts from any other address are dropped as `router_id`. */
  allowedSources: ReadonlySet<string> | null;
  replay: ReplayGuard;
  /** Our own addresses: multicast may loop our adverts back, and they are not a peer's. */
  isOwnAddress: (address: string) => boolean;
}

export class AdvertReceiver {
  constructor(private readonly o: AdvertReceiverOptions) {}

  receive(buf: Buffer, address: string): ReceiveResult {
    if (this.o.isOwnAddress(address)) return { kind: 'own' };
    const decoded = this.o.codec.decode(buf);
    if (!decoded.ok) return { kind: 'drop', reason: decoded.reason };
    const sender = ipv4ToNumber(address);
    if (sender === null) return { kind: 'drop', reason: 'malformed' };
    // Authentic bytes from an address that is not a peer: most often a peer list that names the wrong address
    // (a typo, a renumbered host), else a captured advert re-emitted by someone else. Counted with the adverts
    // of instances we do not run (`router_id`: "not ours to hear", as metrics.md says), not as a replay, which
    // would read as an attack.
    if (this.o.allowedSources !== null && !this.o.allowedSources.has(address)) return { kind: 'drop', reason: 'router_id', notPeer: true };
    const advert = decoded.advert;
    if (!this.o.routerIds.has(advert.routerId)) return { kind: 'drop', reason: 'router_id', routerId: advert.routerId };
    const verdict = this.o.replay.check(address, advert.bootEpoch, advert.counter);
    if (verdict === 'own_epoch') return { kind: 'drop', reason: 'replay', ownEpoch: true };
    if (verdict === 'replay') return { kind: 'drop', reason: 'replay' };
    return { kind: 'advert', advert, sender };
  }
}
