import { describe, expect, it } from 'vitest';
import type { WorkerPeerStatus } from '../../src/failover/messages.js';
import { mainPeer, peerViews, type PeerView } from '../../src/failover/peer-view.js';

const NOW = 100_000;

function heard(address: string, state: WorkerPeerStatus['state'], priority: number, agoMs: number): WorkerPeerStatus {
  return { address, state, priority, lastAdvertAt: NOW - agoMs, intervalMs: 1000 };
}

function view(address: string, state: PeerView['state'], priority: number, lastAdvertAgeMs: number | null): PeerView {
  return { address, state, priority, lastAdvertAgeMs };
}

describe('peerViews', () => {
  it('keeps the order and says unknown past a Master_Down_Interval (4 intervals and the status granularity)', () => {
    const views = peerViews([heard('10.0.0.2', 'master', 200, 300), heard('10.0.0.3', 'backup', 150, 4_000), heard('10.0.0.4', 'fault', 0, 4_500)], NOW);
    expect(views).toEqual([view('10.0.0.2', 'master', 200, 300), view('10.0.0.3', 'backup', 150, 4_000), view('10.0.0.4', 'unknown', 0, 4_500)]);
  });

  it('adds the configured peers not heard yet as unknown, with no age, all by address (numerically)', () => {
    const views = peerViews([heard('10.0.0.10', 'backup', 100, 200)], NOW, ['10.0.0.9', '10.0.0.10']);
    expect(views).toEqual([view('10.0.0.9', 'unknown', 0, null), view('10.0.0.10', 'backup', 100, 200)]);
    expect(peerViews([], NOW, ['10.0.0.2'])).toEqual([view('10.0.0.2', 'unknown', 0, null)]);
  });

  it('never shows a negative age (the status taken a moment before now moved)', () => {
    expect(peerViews([heard('10.0.0.2', 'backup', 100, -5)], NOW)[0]!.lastAdvertAgeMs).toBe(0);
  });
});

describe('mainPeer: the contract\'s one `peer`', () => {
  it('is null with none heard, and the one peer with two hosts whatever its state', () => {
    expect(mainPeer([])).toBeNull();
    for (const state of ['backup', 'master', 'fault', 'unknown'] as const) expect(mainPeer([view('10.0.0.2', state, 0, 9_000)])?.address).toBe('10.0.0.2');
  });

  it('is the master heard now, before a backup of higher priority heard more recently', () => {
    expect(mainPeer([view('10.0.0.3', 'backup', 250, 10), view('10.0.0.2', 'master', 200, 900)])?.address).toBe('10.0.0.2');
  });

  it('without a master, the peer that would take over first (highest priority), not the one heard last', () => {
    expect(mainPeer([view('10.0.0.2', 'backup', 150, 900), view('10.0.0.3', 'backup', 120, 10)])?.address).toBe('10.0.0.2');
    // Equal priority: the one heard last.
    expect(mainPeer([view('10.0.0.2', 'backup', 150, 900), view('10.0.0.3', 'backup', 150, 10)])?.address).toBe('10.0.0.3');
  });

  it('prefers any peer heard now to a silent one, whatever the silent one last was', () => {
    expect(mainPeer([view('10.0.0.2', 'unknown', 250, 5_000), view('10.0.0.3', 'fault', 0, 10)])?.address).toBe('10.0.0.3');
  });

  it('never a peer not heard yet (the contract: null until an advert has been heard)', () => {
    expect(mainPeer([view('10.0.0.2', 'unknown', 0, null)])).toBeNull();
    expect(mainPeer([view('10.0.0.2', 'unknown', 0, null), view('10.0.0.3', 'unknown', 100, 60_000)])?.address).toBe('10.0.0.3');
  });

  it('among silent peers, the one heard last (their priorities are stale)', () => {
    expect(mainPeer([view('10.0.0.2', 'unknown', 250, 9_000), view('10.0.0.3', 'unknown', 100, 5_000)])?.address).toBe('10.0.0.3');
  });
});
