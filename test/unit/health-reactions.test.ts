import { describe, expect, it } from 'vitest';
import { PoolReactions } from '../../src/health/reactions.js';
import { rebalanceStillDue, sessionsToRebalance } from '../../src/health/rebalance.js';
import { Server } from '../../src/balancer/server.js';
import { fakeSession, FakePool, logSink, makeServer, ManualClock, poolConfig, serverConfig } from './health-fixtures.js';
import { Pool } from '../../src/balancer/pool.js';
import { byName, poolConfig as balancerPoolConfig } from './balancer-fixtures.js';

function setup(overrides: Parameters<typeof poolConfig>[0] = {}) {
  const clock = new ManualClock();
  const a = makeServer('a');
  const b = makeServer('b');
  const c = makeServer('c');
  const pool = new FakePool(poolConfig({ evictRate: 10, ...overrides }), [a, b, c]);
  const { log, lines } = logSink();
  const reactions = new PoolReactions(pool, { log, now: clock.now, setTimer: clock.setTimer, clearTimer: clock.clearTimer });
  return { clock, a, b, c, pool, reactions, lines };
}

describe('sessionsToRebalance', () => {
  it('selects only sessions on other servers whose key the returning server now owns', () => {
    const clock = new ManualClock();
    const a = makeServer('a');
    const b = makeServer('b');
    const pool = new FakePool(poolConfig(), [a, b]);
    const onB = [fakeSession(clock, 'a-1', b), fakeSession(clock, 'a-2', b), fakeSession(clock, 'b-1', b), fakeSession(clock, '', b)];
    fakeSession(clock, 'a-3', a); // already home
    const items = sessionsToRebalance(pool, a);
    expect(items.map((i) => i.session)).toEqual([onB[0], onB[1]]);
    expect(items.every((i) => i.server === b && i.target === a && i.reason === 'rebalance')).toBe(true);
  });

  // A balancing audit: with the returning server's room as the cap, all moves came from the first server in the list.
  it('with a cap (the returning server\'s room), takes in turn from every server that holds its keys', () => {
    const clock = new ManualClock();
    const a = makeServer('a');
    const b = makeServer('b');
    const c = makeServer('c');
    a.config = { ...a.config, maxConnections: 4 };
    const pool = new FakePool(poolConfig(), [a, b, c]);
    for (let i = 0; i < 5; i++) fakeSession(clock, `a-b${i}`, b);
    for (let i = 0; i < 5; i++) fakeSession(clock, `a-c${i}`, c);
    const items = sessionsToRebalance(pool, a);
    expect(items.map((i) => i.server?.name)).toEqual(['b', 'c', 'b', 'c']);
  });

  it('never moves sessions with an empty routing key between non-backup servers', () => {
    const clock = new ManualClock();
    const a = makeServer('a');
    const b = makeServer('b');
    const pool = new FakePool(poolConfig(), [a, b]);
    pool.owner = () => a; // even if the pool claimed otherwise
    fakeSession(clock, '', b);
    expect(sessionsToRebalance(pool, a)).toEqual([]);
  });

  it('a returning non-backup server takes every session without a hash home off the backups (any strategy)', () => {
    const clock = new ManualClock();
    const a = makeServer('a');
    const other = makeServer('other');
    const bk = new Server('brokers', { ...serverConfig('bk'), backup: true }, 'up');
    const pool = new FakePool(poolConfig({ balance: 'round-robin' }), [a, other, bk]);
    const onBackup = [fakeSession(clock, '', bk), fakeSession(clock, '', bk)];
    fakeSession(clock, '', other); // on a non-backup server: stays
    const items = sessionsToRebalance(pool, a);
    expect(items.map((i) => i.session)).toEqual(onBackup);
    expect(items.every((i) => i.server === bk && i.target === a && i.reason === 'rebalance')).toBe(true);
    expect(items.every((i) => rebalanceStillDue(pool, i))).toBe(true);
    a.setAdmin('drain'); // at their turn the target no longer takes sessions: dropped
    expect(items.some((i) => rebalanceStillDue(pool, i))).toBe(false);
    // A backup returning takes nothing off another backup.
    const bk2 = new Server('brokers', { ...serverConfig('bk2'), backup: true }, 'up');
    pool.servers.push(bk2);
    expect(sessionsToRebalance(pool, bk2)).toEqual([]);
  });

  it('selects nothing for a server that does not take new sessions', () => {
    const clock = new ManualClock();
    const a = makeServer('a');
    const b = makeServer('b');
    const pool = new FakePool(poolConfig(), [a, b]);
    fakeSession(clock, 'a-1', b);
    a.setAdmin('drain');
    expect(sessionsToRebalance(pool, a)).toEqual([]);
  });
});

describe('PoolReactions', () => {
  it('onServerDown: shutdown evicts all of the server\'s sessions at evictRate', () => {
    const { clock, a, reactions, lines } = setup({ onServerDown: 'shutdown' });
    const sessions = Array.from({ length: 5 }, (_, i) => fakeSession(clock, `a-${i}`, a));
    a.setHealth('down');
    clock.advanceTo(10_000);
    expect(sessions.map((s) => [s.evictedAt, s.evictReason])).toEqual([
      [0, 'server_down'],
      [100, 'server_down'],
      [200, 'server_down'],
      [300, 'server_down'],
      [400, 'server_down'],
    ]);
    expect(lines.filter((l) => l.msg === 'evicting sessions')).toMatchObject([{ pool: 'brokers', server: 'a', reason: 'server_down', sessions: 5 }]);
    reactions.close();
  });

  it('onServerDown: shutdown leaves the sessions at an address a reload moved the server from', () => {
    const { clock, a, reactions } = setup({ onServerDown: 'shutdown' });
    const atOld = Object.assign(fakeSession(clock, 'a-old', a), { serverAddress: '127.0.0.1:1883' });
    a.config = { ...a.config, address: '127.0.0.1:1999', port: 1999 };
    const atNew = Object.assign(fakeSession(clock, 'a-new', a), { serverAddress: '127.0.0.1:1999' });
    a.setHealth('down');
    clock.advanceTo(clock.t + 2000);
    expect(atNew.evictedAt).not.toBeNull();
    expect(atOld.evictedAt).toBeNull();
    reactions.close();
  });

  it('onServerDown: keep leaves sessions alone', () => {
    const { clock, a, reactions } = setup({ onServerDown: 'keep' });
    const s = fakeSession(clock, 'a-1', a);
    a.setHealth('down');
    clock.advanceTo(10_000);
    expect(s.evictedAt).toBeNull();
    reactions.close();
  });

  it('a server that comes back before its turn keeps its remaining sessions', () => {
    const { clock, a, reactions } = setup({ onServerDown: 'shutdown' });
    const sessions = Array.from({ length: 5 }, (_, i) => fakeSession(clock, `a-${i}`, a));
    a.setHealth('down');
    clock.advanceTo(150); // two gone
    a.setHealth('up');
    clock.advanceTo(10_000);
    expect(sessions.filter((s) => s.evictedAt !== null)).toHaveLength(2);
    expect(reactions.pending).toBe(0);
    reactions.close();
  });

  it('onServerUp: rebalance moves back only the returning server\'s keys, paced', () => {
    const { clock, a, b, c, pool, reactions, lines } = setup({ onServerUp: 'rebalance' });
    a.setHealth('down');
    const homeOfA = [fakeSession(clock, 'a-1', b), fakeSession(clock, 'a-2', c), fakeSession(clock, 'a-3', b)];
    const others = [fakeSession(clock, 'b-1', b), fakeSession(clock, 'c-1', c), fakeSession(clock, '', b)];
    a.setHealth('up');
    clock.advanceTo(10_000);
    expect(homeOfA.map((s) => s.evictReason)).toEqual(['rebalance', 'rebalance', 'rebalance']);
    expect(homeOfA.map((s) => s.evictedAt!).sort((x, y) => x - y)).toEqual([0, 100, 200]);
    expect(others.every((s) => s.evictedAt === null)).toBe(true);
    // Named where they are closed, as on the other eviction lines, and where they go.
    expect(lines.filter((l) => l.msg === 'evicting sessions')).toMatchObject([
      { server: 'b', to: 'a', reason: 'rebalance', sessions: 2 },
      { server: 'c', to: 'a', reason: 'rebalance', sessions: 1 },
    ]);
    // The pool hears of each key as it is closed (a full server lets such a client pass on: balancer-server-cap).
    expect(pool.rebalancedKeys.sort()).toEqual(['a-1', 'a-2', 'a-3']);
    reactions.close();
  });

  it('rebalance items are dropped at their turn if the target went down again', () => {
    const { clock, a, b, reactions } = setup({ onServerUp: 'rebalance' });
    a.setHealth('down');
    const homeOfA = Array.from({ length: 4 }, (_, i) => fakeSession(clock, `a-${i}`, b));
    a.setHealth('up');
    clock.advanceTo(150); // two moved
    a.setHealth('down');
    clock.advanceTo(10_000);
    expect(homeOfA.filter((s) => s.evictedAt !== null)).toHaveLength(2);
    reactions.close();
  });

  it('onServerUp: keep moves nothing', () => {
    const { clock, a, b, reactions } = setup({ onServerUp: 'keep' });
    a.setHealth('down');
    const s = fakeSession(clock, 'a-1', b);
    a.setHealth('up');
    clock.advanceTo(10_000);
    expect(s.evictedAt).toBeNull();
    reactions.close();
  });

  it('admin drain and maint evict all sessions (reason drain) even with keep/keep', () => {
    const { clock, a, b, reactions } = setup();
    const onA = [fakeSession(clock, 'a-1', a), fakeSession(clock, '', a)];
    const onB = [fakeSession(clock, 'b-1', b)];
    a.setAdmin('drain');
    b.setAdmin('maint');
    clock.advanceTo(10_000);
    expect([...onA, ...onB].map((s) => s.evictReason)).toEqual(['drain', 'drain', 'drain']);
    reactions.close();
  });

  it('back to ready cancels the drain evictions still queued', () => {
    const { clock, a, reactions } = setup();
    const sessions = Array.from({ length: 5 }, (_, i) => fakeSession(clock, `a-${i}`, a));
    a.setAdmin('drain');
    clock.advanceTo(50);
    a.setAdmin('ready');
    expect(reactions.pending).toBe(0);
    clock.advanceTo(10_000);
    expect(sessions.filter((s) => s.evictedAt !== null)).toHaveLength(1);
    reactions.close();
  });

  // A reload audit: a drain under way went on closing a removed server's sessions, which the log line says continue.
  it('a reload that removes a server stops the drain of its sessions still queued; the other servers\' go on', () => {
    const { clock, a, b, pool, reactions } = setup();
    const onA = Array.from({ length: 5 }, (_, i) => fakeSession(clock, `a-${i}`, a));
    const onB = Array.from({ length: 5 }, (_, i) => fakeSession(clock, `b-${i}`, b));
    a.setAdmin('drain');
    b.setAdmin('drain');
    clock.advanceTo(50);
    pool.servers = [b];
    reactions.reconfigure(pool);
    clock.advanceTo(10_000);
    expect(onA.filter((s) => s.evictedAt !== null).length).toBeLessThanOrEqual(1);
    expect(onB.every((s) => s.evictReason === 'drain')).toBe(true);
    expect(reactions.pending).toBe(0);
    reactions.close();
  });

  it('reads the pool config at each event (reload) and follows reconfigured servers', () => {
    const { clock, a, pool, reactions } = setup({ onServerDown: 'keep' });
    const d = makeServer('d');
    pool.config = poolConfig({ onServerDown: 'shutdown', evictRate: 1000 });
    pool.servers = [a, d];
    reactions.reconfigure(pool);
    const onD = fakeSession(clock, 'd-1', d);
    d.setHealth('down');
    const onA = fakeSession(clock, 'a-1', a);
    a.setHealth('down');
    clock.advanceTo(100);
    expect(onD.evictReason).toBe('server_down');
    expect(onA.evictReason).toBe('server_down');
    reactions.close();
  });

  it('onServerUp: rebalance: a reload that makes a server take sessions (weight 0 to 1, backup to not) is a return', () => {
    const clock = new ManualClock();
    const a = new Server('brokers', { ...serverConfig('a'), weight: 0 }, 'up');
    const bk = new Server('brokers', { ...serverConfig('bk'), backup: true }, 'up');
    const pool = new FakePool(poolConfig({ onServerUp: 'rebalance', evictRate: 1000 }), [a, bk]);
    const { log, lines } = logSink();
    const reactions = new PoolReactions(pool, { log, now: clock.now, setTimer: clock.setTimer, clearTimer: clock.clearTimer });
    const onBackup = [fakeSession(clock, '', bk), fakeSession(clock, 'a-1', bk), fakeSession(clock, 'x-1', bk)];
    reactions.reconfigure(pool); // nothing changed: nothing moves
    clock.advanceTo(1000);
    expect(onBackup.every((x) => x.evictedAt === null)).toBe(true);
    a.config = { ...a.config, weight: 1 }; // as Pool.reconfigure does
    reactions.reconfigure(pool);
    clock.advanceTo(2000);
    // The homeless session leaves the backup, a-1 goes home; x-1 belongs to no server (FakePool.owner) and stays.
    expect(onBackup.map((x) => x.evictReason)).toEqual(['rebalance', 'rebalance', null]);
    expect(lines.filter((l) => l.msg === 'evicting sessions')).toMatchObject([{ server: 'bk', to: 'a', reason: 'rebalance', sessions: 2 }]);
    // A backup made a primary by a reload takes the sessions off the other backups.
    const bk2 = new Server('brokers', { ...serverConfig('bk2'), backup: true }, 'up');
    pool.servers = [a, bk, bk2];
    reactions.reconfigure(pool);
    const stranded = fakeSession(clock, '', bk);
    bk2.config = { ...bk2.config, backup: false };
    reactions.reconfigure(pool);
    clock.advanceTo(3000);
    expect(stranded.evictReason).toBe('rebalance');
    reactions.close();
  });

  it('evictAll serves shutdown', () => {
    const { clock, a, reactions } = setup();
    const s = fakeSession(clock, 'a-1', a);
    expect(reactions.evictAll(a, 'shutdown')).toBe(1);
    clock.advanceTo(0);
    expect(s.evictReason).toBe('shutdown');
    reactions.close();
  });

  it('close() unsubscribes from every server, stops evicting and is idempotent', () => {
    const { clock, a, b, c, reactions } = setup({ onServerDown: 'shutdown' });
    const sessions = Array.from({ length: 3 }, (_, i) => fakeSession(clock, `a-${i}`, a));
    a.setHealth('down');
    clock.advanceTo(0);
    reactions.close();
    reactions.close();
    clock.advanceTo(10_000);
    expect(sessions.filter((s) => s.evictedAt !== null)).toHaveLength(1);
    for (const s of [a, b, c]) expect(s.listenerCount('state')).toBe(0);
    b.setHealth('down'); // no reaction any more
    expect(reactions.pending).toBe(0);
  });
});

// An admin audit: a reload from `health.type: none` to probes made every server unknown at once; the first to answer
// (even a backup) owned every key for the milliseconds until the others answered, and `onServerUp: rebalance` closed
// sessions of servers that never changed (24 of 235, all back on their old broker at once).
describe('onServerUp: rebalance while servers await their first verdict (the real Pool)', () => {
  function world(): { t: { now: number }; clock: ManualClock; pool: Pool; reactions: PoolReactions; lines: Array<Record<string, unknown>>; sessions: ReturnType<typeof fakeSession>[] } {
    const t = { now: 10_000 };
    const config = { ...balancerPoolConfig({ servers: ['b1', 'b2', 'b3', { name: 'bk', backup: true }] }), onServerUp: 'rebalance' as const, evictRate: 1000 };
    const pool = new Pool(config, undefined, { now: () => t.now });
    for (const s of pool.servers) {
      s.setHealth('up');
      s.unknownSince = Number.NEGATIVE_INFINITY;
    }
    const clock = new ManualClock();
    const { log, lines } = logSink();
    const reactions = new PoolReactions(pool, { log, now: clock.now, setTimer: clock.setTimer, clearTimer: clock.clearTimer });
    // Every session on its key's owner with every server up.
    const sessions = Array.from({ length: 300 }, (_, i) => fakeSession(clock, `client-${i}`, pool.owner(Buffer.from(`client-${i}`))!));
    return { t, clock, pool, reactions, lines, sessions };
  }
  const unknownAt = (s: Server, now: number): void => {
    s.setHealth('unknown');
    s.unknownSince = now;
  };

  it('the first servers to answer take nothing from servers still unknown; nothing is closed', () => {
    const { t, clock, pool, reactions, lines, sessions } = world();
    for (const s of pool.servers) unknownAt(s, t.now);
    t.now += 50;
    byName(pool.servers, 'bk').setHealth('up');
    byName(pool.servers, 'b2').setHealth('up');
    t.now += 250;
    byName(pool.servers, 'b1').setHealth('up');
    byName(pool.servers, 'b3').setHealth('up');
    expect(reactions.pending).toBe(0);
    clock.advanceTo(60_000);
    expect(sessions.filter((s) => s.evictedAt !== null)).toEqual([]);
    expect(lines.filter((l) => l.msg === 'evicting sessions')).toEqual([]);
    reactions.close();
  });

  // A re-audit: the keys a pending server would own stayed off their owner for good when its first verdict was down.
  it.each(['down', 'no verdict'])('once the pending server is known (%s), the held-back keys go to the returning server', (verdict) => {
    const t = { now: 10_000 };
    const config = { ...balancerPoolConfig({ servers: ['a', 'b', 'c', 'e'] }), onServerUp: 'rebalance' as const, evictRate: 1000 };
    const pool = new Pool(config, undefined, { now: () => t.now });
    const [a, b, c, e] = ['a', 'b', 'c', 'e'].map((n) => byName(pool.servers, n));
    for (const s of [a, b]) s!.setHealth('up');
    c!.setHealth('down');
    e!.setHealth('down');
    for (const s of pool.servers) s.unknownSince = Number.NEGATIVE_INFINITY;
    const clock = new ManualClock();
    const { log } = logSink();
    const reactions = new PoolReactions(pool, { log, now: clock.now, setTimer: clock.setTimer, clearTimer: clock.clearTimer });
    const sessions = Array.from({ length: 400 }, (_, i) => fakeSession(clock, `client-${i}`, pool.owner(Buffer.from(`client-${i}`))!));
    // A reload: c back (weight, health), e moved (unknown, in its window).
    e!.setHealth('unknown');
    e!.unknownSince = t.now;
    c!.setHealth('up');
    clock.advanceTo(5_000);
    const ownedByC = sessions.filter((s) => pool.owner(s.routingKey) === c); // with e still unknown: not counted
    const first = sessions.filter((s) => s.evictReason === 'rebalance');
    expect(first.length).toBeGreaterThan(0);
    expect(first.length).toBeLessThan(ownedByC.length); // some held back for e
    if (verdict === 'down') {
      e!.setHealth('down');
    } else {
      t.now += 2_000; // e's window is over without a verdict
      clock.advanceTo(10_000);
    }
    clock.advanceTo(60_000);
    expect(new Set(sessions.filter((s) => s.evictReason === 'rebalance'))).toEqual(new Set(ownedByC));
    reactions.close();
  });

  it('a server back from down still takes its keys, from a pending server too when that one would not own them', () => {
    const { t, clock, pool, reactions, sessions } = world();
    const [b2, b3] = ['b2', 'b3'].map((n) => byName(pool.servers, n));
    // b2 was down: its clients went to the owners without it (b1, b3).
    const homeOfB2 = sessions.filter((s) => b2!.sessions.has(s));
    expect(homeOfB2.length).toBeGreaterThan(50);
    b2!.setHealth('down');
    for (const s of homeOfB2) {
      b2!.sessions.delete(s);
      pool.owner(s.routingKey)!.sessions.add(s);
    }
    expect(homeOfB2.filter((s) => b3!.sessions.has(s)).length).toBeGreaterThan(10);
    // b3 moved by a reload (unknown, in its window) as b2 returns: b3 would own none of b2's keys, so all move back.
    unknownAt(b3!, t.now);
    b2!.setHealth('up');
    clock.advanceTo(60_000);
    expect(new Set(sessions.filter((s) => s.evictReason === 'rebalance'))).toEqual(new Set(homeOfB2));
    reactions.close();
  });
});
