/**
 * The peers of an instance as /api/status and /metrics show them: each one's last advert, and the one peer the
 * contract's `peer` names. With two hosts that is simply the other host. With three or more, the peer heard last
 * changes at every advert (they take turns), so `peer` is the one that matters for this host: the master when there
 * is one we hear, else the peer that would take over first (highest priority), else the one heard last.
 */
import { ipv4ToNumber } from './ipv4.js';
import { peerSilent, type WorkerPeerStatus } from './messages.js';

export const PEER_VIEW_STATES = ['backup', 'master', 'fault', 'unknown'] as const;
export type PeerViewState = (typeof PEER_VIEW_STATES)[number];

export interface PeerView {
  address: string;
  /** `unknown` once silent for longer than a Master_Down_Interval (peerSilent). */
  state: PeerViewState;
  /** What its last advert carried (0: resigning or in FAULT; 0 too when never heard). */
  priority: number;
  /** null: never heard (a configured unicast peer). */
  lastAdvertAgeMs: number | null;
}

/**
 * The peers heard (`heard`, as of `now` on threadSharedNow()) and the configured ones not heard yet (`unknown`, so
 * that a standby that never came is seen as one that went), by address.
 */
export function peerViews(heard: readonly WorkerPeerStatus[], now: number, configured: readonly string[] = []): PeerView[] {
  const views: PeerView[] = heard.map((p) => ({
    address: p.address,
    state: peerSilent(p, now) ? 'unknown' : p.state,
    priority: p.priority,
    lastAdvertAgeMs: Math.max(0, now - p.lastAdvertAt),
  }));
  for (const address of configured) {
    if (!views.some((v) => v.address === address)) views.push({ address, state: 'unknown', priority: 0, lastAdvertAgeMs: null });
  }
  return views.sort((a, b) => (ipv4ToNumber(a.address) ?? 0) - (ipv4ToNumber(b.address) ?? 0));
}

/** The peer the contract's `peer` shows (see above); null when none was heard. */
export function mainPeer(views: readonly PeerView[]): HeardPeerView | null {
  let best: HeardPeerView | null = null;
  for (const v of views) if (isHeard(v) && (best === null || outranks(v, best))) best = v;
  return best;
}

export type HeardPeerView = PeerView & { lastAdvertAgeMs: number };

function isHeard(v: PeerView): v is HeardPeerView {
  return v.lastAdvertAgeMs !== null;
}

function outranks(a: HeardPeerView, b: HeardPeerView): boolean {
  const ra = rank(a.state);
  const rb = rank(b.state);
  if (ra !== rb) return ra > rb;
  if (a.state !== 'unknown' && a.priority !== b.priority) return a.priority > b.priority;
  return a.lastAdvertAgeMs < b.lastAdvertAgeMs;
}

/** A master heard now first, then any peer heard now, then silent ones. */
function rank(state: PeerViewState): number {
  return state === 'master' ? 2 : state === 'unknown' ? 0 : 1;
}
