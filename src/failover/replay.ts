/**
 * Replay window for authentic adverts (design.md §6b): per peer address, the highest (epoch, counter) accepted.
 * An advert passes only if its epoch is newer (a restarted peer gets in at once) or its epoch is equal and its
 * counter higher. Called only after the HMAC checked out, so entries come from key holders and stay few.
 *
 * Two extra rules close holes the per-address rule leaves open (UDP source addresses are not authenticated):
 *  - per boot epoch, the highest counter accepted from ANY address: an attacker re-emitting a captured advert
 *    from its own address must not look like a second, fresh peer;
 *  - an advert carrying one of OUR OWN boot epochs is a reflection of one of our adverts. (A real peer that
 *    started in the very same millisecond would also hit this; the caller then moves to a new epoch, and the
 *    two separate within one advert.)
 * Known limit: with no peer list (multicast, `peers` empty), adverts captured while we were not listening can
 * still be replayed from a new address. Listing the peers closes that (see receiver.ts).
 *
 * A peer silent for longer than `forgetAfterMs` (its Master_Down_Interval, set by the heartbeat) is forgotten,
 * as OSPF forgets a neighbour's cryptographic sequence number once it is declared down: its next authentic
 * advert is taken whatever its epoch. Without this, a peer that restarted after its clock was stepped back (an
 * RTC or NTP correction, a restored VM snapshot) carried a lower boot epoch, and every advert of it was dropped
 * as a replay until we restarted too: both hosts MASTER. The per-epoch high-water marks are kept, so adverts we
 * have seen still cannot be replayed; only ones we never received could be, and only while that peer is silent.
 */

export type ReplayVerdict = 'ok' | 'replay' | 'own_epoch';

interface PeerWindow {
  epoch: bigint;
  counter: bigint;
  /** When an advert of it was last accepted (the injected clock). */
  lastAt: number;
}

export class ReplayGuard {
  private readonly peers = new Map<string, PeerWindow>();
  /** epoch → highest counter accepted with it, from any address. */
  private readonly epochs = new Map<bigint, bigint>();
  private readonly ownEpochs = new Set<bigint>();
  private readonly maxPeers: number;
  private readonly forgetAfterMs: number;
  private readonly now: () => number;

  constructor(maxPeers = 64, forgetAfterMs = Number.POSITIVE_INFINITY, now: () => number = () => performance.now()) {
    this.maxPeers = maxPeers;
    this.forgetAfterMs = forgetAfterMs;
    this.now = now;
  }

  /** Our current boot epoch; earlier ones stay known as ours. */
  setOwnEpoch(epoch: bigint): void {
    this.ownEpochs.add(epoch);
  }

  /** Checks and, when 'ok', records (epoch, counter) as the new high-water mark for `address`. */
  check(address: string, epoch: bigint, counter: bigint): ReplayVerdict {
    if (this.ownEpochs.has(epoch)) return 'own_epoch';
    const now = this.now();
    let seen = this.peers.get(address);
    if (seen !== undefined && now - seen.lastAt > this.forgetAfterMs) {
      this.peers.delete(address);
      seen = undefined;
    }
    if (seen !== undefined && (epoch < seen.epoch || (epoch === seen.epoch && counter <= seen.counter))) return 'replay';
    const highest = this.epochs.get(epoch);
    if (highest !== undefined && counter <= highest) return 'replay';
    if (seen !== undefined) {
      seen.epoch = epoch;
      seen.counter = counter;
      seen.lastAt = now;
    } else {
      if (this.peers.size >= this.maxPeers) this.evictOldestPeer();
      this.peers.set(address, { epoch, counter, lastAt: now });
    }
    if (highest === undefined && this.epochs.size >= this.maxPeers * 4) this.evictOldestEpoch();
    this.epochs.set(epoch, counter);
    return 'ok';
  }

  /** The highest (epoch, counter) accepted from `address`, if any. */
  get(address: string): { epoch: bigint; counter: bigint } | undefined {
    const w = this.peers.get(address);
    return w === undefined ? undefined : { epoch: w.epoch, counter: w.counter };
  }

  get size(): number {
    return this.peers.size;
  }

  private evictOldestPeer(): void {
    let oldest: string | null = null;
    let oldestEpoch = 0n;
    for (const [addr, w] of this.peers) {
      if (oldest === null || w.epoch < oldestEpoch) {
        oldest = addr;
        oldestEpoch = w.epoch;
      }
    }
    if (oldest !== null) this.peers.delete(oldest);
  }

  private evictOldestEpoch(): void {
    let oldest: bigint | null = null;
    for (const e of this.epochs.keys()) if (oldest === null || e < oldest) oldest = e;
    if (oldest !== null) this.epochs.delete(oldest);
  }
}
