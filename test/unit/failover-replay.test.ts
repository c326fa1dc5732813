import { describe, expect, it } from 'vitest';
import { ReplayGuard } from '../../src/failover/replay.js';

describe('replay window (design.md §6b)', () => {
  it('equal epoch needs a higher counter', () => {
    const g = new ReplayGuard();
    expect(g.check('10.0.0.2', 100n, 5n)).toBe('ok');
    expect(g.check('10.0.0.2', 100n, 5n)).toBe('replay');
    expect(g.check('10.0.0.2', 100n, 4n)).toBe('replay');
    expect(g.check('10.0.0.2', 100n, 6n)).toBe('ok');
    expect(g.get('10.0.0.2')).toEqual({ epoch: 100n, counter: 6n });
  });

  it('a newer epoch (restarted peer) is accepted at once, even with a low counter', () => {
    const g = new ReplayGuard();
    g.check('10.0.0.2', 100n, 5000n);
    expect(g.check('10.0.0.2', 200n, 1n)).toBe('ok');
    expect(g.get('10.0.0.2')).toEqual({ epoch: 200n, counter: 1n });
  });

  it('an older epoch is not accepted while the peer is live (captured adverts of a previous boot)', () => {
    const g = new ReplayGuard();
    g.check('10.0.0.2', 200n, 1n);
    expect(g.check('10.0.0.2', 100n, 999_999n)).toBe('replay');
  });

  // A peer restarted after its clock was stepped back: its new boot epoch is lower than the last one we saw.
  it('a peer silent for longer than forgetAfterMs may come back with a lower epoch; adverts we saw stay replays', () => {
    let t = 0;
    const g = new ReplayGuard(64, 400, () => t);
    for (let c = 1n; c <= 10n; c++) {
      expect(g.check('10.0.0.2', 5000n, c)).toBe('ok');
      t += 100;
    }
    // Within the down interval the lower epoch is still a replay (the old boot may be live).
    t += 300;
    expect(g.check('10.0.0.2', 4000n, 1n)).toBe('replay');
    // Silent past it: the peer is down and forgotten; its new boot gets in, and goes on.
    t += 200;
    expect(g.check('10.0.0.2', 4000n, 1n)).toBe('ok');
    t += 100;
    expect(g.check('10.0.0.2', 4000n, 2n)).toBe('ok');
    // Adverts of the old boot that we received cannot be replayed later, even after another silence.
    t += 1000;
    for (let c = 1n; c <= 10n; c++) expect(g.check('10.0.0.2', 5000n, c), `counter ${c}`).toBe('replay');
  });

  it('without forgetAfterMs (the default) a lower epoch is never accepted again', () => {
    let t = 0;
    const g = new ReplayGuard(64, Number.POSITIVE_INFINITY, () => t);
    g.check('10.0.0.2', 200n, 1n);
    t += 3_600_000;
    expect(g.check('10.0.0.2', 100n, 1n)).toBe('replay');
  });

  it('tracks each peer address on its own', () => {
    const g = new ReplayGuard();
    expect(g.check('10.0.0.2', 100n, 5n)).toBe('ok');
    expect(g.check('10.0.0.3', 300n, 1n)).toBe('ok');
    expect(g.check('10.0.0.2', 100n, 6n)).toBe('ok');
    expect(g.check('10.0.0.3', 300n, 1n)).toBe('replay');
  });

  it('the same (epoch, counter) re-sent from another address is a replay', () => {
    const g = new ReplayGuard();
    g.check('10.0.0.2', 100n, 5n);
    expect(g.check('10.0.0.66', 100n, 5n)).toBe('replay');
    expect(g.check('10.0.0.66', 100n, 3n)).toBe('replay');
  });

  it('an advert of an older boot of a peer, replayed from a new address, is a replay', () => {
    const g = new ReplayGuard();
    g.check('10.0.0.2', 100n, 50n);
    g.check('10.0.0.2', 200n, 1n); // the peer restarted
    expect(g.check('10.0.0.66', 100n, 40n)).toBe('replay');
  });

  it('our own epochs, current and earlier, are reported as such', () => {
    const g = new ReplayGuard();
    g.setOwnEpoch(100n);
    expect(g.check('10.0.0.2', 100n, 5n)).toBe('own_epoch');
    g.setOwnEpoch(150n); // moved to a new epoch: reflections of the old one are still ours
    expect(g.check('10.0.0.66', 100n, 6n)).toBe('own_epoch');
    expect(g.check('10.0.0.2', 150n, 1n)).toBe('own_epoch');
    expect(g.check('10.0.0.2', 101n, 5n)).toBe('ok');
  });

  it('stays bounded', () => {
    const g = new ReplayGuard(4);
    for (let i = 0; i < 20; i++) g.check(`10.0.1.${i}`, BigInt(1000 + i), 1n);
    expect(g.size).toBe(4);
    expect(g.get('10.0.1.19')).toEqual({ epoch: 1019n, counter: 1n });
  });
});
