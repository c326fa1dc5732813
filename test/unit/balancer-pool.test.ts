/**
 * Pool semantics: eligibility (health, admin state, weight 0), backup servers, the routing key and
 * the fallback for empty keys, the retry list, owner() for rebalancing, and reload.
 */
import { describe, expect, it } from 'vitest';
import { Pool } from '../../src/balancer/pool.js';
import { Server } from '../../src/balancer/server.js';
import { isEmptyClientIdPersistent } from '../../src/balancer/stickiness.js';
import { addSessions, allUp, byName, clientId, FakeSession, names, poolConfig, type PoolSpec } from './balancer-fixtures.js';

const EMPTY = Buffer.alloc(0);

function upPool(spec: PoolSpec): Pool {
  const pool = new Pool(poolConfig(spec));
  allUp(pool.servers);
  return pool;
}

function pick(pool: Pool, id: Buffer | string, username: Buffer | string | null = null): string[] {
  const u = typeof username === 'string' ? Buffer.from(username) : username;
  return names(pool.candidates({ clientId: typeof id === 'string' ? Buffer.from(id) : id, username: u }));
}

describe('Pool construction', () => {
  it('creates servers from the config as unknown, or up when health.type is none', () => {
    const checked = new Pool(poolConfig({ servers: ['b1', 'b2'] }));
    expect(checked.name).toBe('brokers');
    expect(checked.servers.map((s) => [s.name, s.pool, s.health])).toEqual([
      ['b1', 'brokers', 'unknown'],
      ['b2', 'brokers', 'unknown'],
    ]);
    expect(checked.candidates({ clientId: Buffer.from('c'), username: null })).toEqual([]);
    const unchecked = new Pool(poolConfig({ servers: ['b1', 'b2'], health: 'none' }));
    expect(unchecked.servers.map((s) => s.health)).toEqual(['up', 'up']);
    expect(pick(unchecked, 'c')).toHaveLength(2);
  });

  it('uses the Server objects it is given', () => {
    const config = poolConfig({ servers: ['b1', 'b2'] });
    const given = config.servers.map((sc) => new Server('brokers', sc, 'up'));
    const pool = new Pool(config, given);
    expect(pool.servers).toBe(given);
    expect(pick(pool, 'c').sort()).toEqual(['b1', 'b2']);
  });
});

describe('eligibility', () => {
  it('never offers a server that is unknown, down, draining, in maintenance or of weight 0', () => {
    const pool = upPool({ servers: ['ok', 'unknown', 'down', 'drain', 'maint', { name: 'zero', weight: 0 }], retries: 10 });
    byName(pool.servers, 'unknown').setHealth('unknown');
    byName(pool.servers, 'down').setHealth('down');
    byName(pool.servers, 'drain').setAdmin('drain');
    byName(pool.servers, 'maint').setAdmin('maint');
    for (let i = 0; i < 500; i++) expect(pick(pool, clientId(i))).toEqual(['ok']);
    for (let i = 0; i < 50; i++) expect(pick(pool, EMPTY)).toEqual(['ok']); // fallback path too
  });

  it('returns [] when no server can take a session, including when the only server has weight 0', () => {
    const pool = upPool({ servers: [{ name: 'zero', weight: 0 }] });
    expect(pick(pool, 'c')).toEqual([]);
    expect(pick(pool, EMPTY)).toEqual([]);
    const down = upPool({ servers: ['b1', 'b2'] });
    for (const s of down.servers) s.setHealth('down');
    expect(pick(down, 'c')).toEqual([]);
  });

  it('re-reads server state on every pick (no stale cache after a state change)', () => {
    const pool = upPool({ servers: ['b1', 'b2', 'b3'], retries: 0 });
    const first = pick(pool, 'sticky')[0]!;
    byName(pool.servers, first).setHealth('down');
    const second = pick(pool, 'sticky')[0]!;
    expect(second).not.toBe(first);
    byName(pool.servers, first).setHealth('up');
    expect(pick(pool, 'sticky')).toEqual([first]);
  });
});

describe('backup servers', () => {
  const spec: PoolSpec = {
    servers: ['p1', 'p2', { name: 'k1', backup: true }, { name: 'k2', backup: true }],
    retries: 5,
  };

  it('are not used, not even as retries, while a non-backup server accepts sessions', () => {
    const pool = upPool(spec);
    for (let i = 0; i < 300; i++) expect(pick(pool, clientId(i)).sort()).toEqual(['p1', 'p2']);
    byName(pool.servers, 'p1').setHealth('down');
    for (let i = 0; i < 300; i++) expect(pick(pool, clientId(i))).toEqual(['p2']);
    for (let i = 0; i < 30; i++) expect(pick(pool, EMPTY)).toEqual(['p2']);
  });

  it('take over (only backups) when no non-backup server accepts, and hand back when one returns', () => {
    const pool = upPool(spec);
    byName(pool.servers, 'p1').setHealth('down');
    byName(pool.servers, 'p2').setAdmin('drain'); // draining counts as not accepting
    for (let i = 0; i < 300; i++) expect(pick(pool, clientId(i)).sort()).toEqual(['k1', 'k2']);
    expect(pick(pool, EMPTY).sort()).toEqual(['k1', 'k2']);
    byName(pool.servers, 'p2').setAdmin('ready');
    expect(pick(pool, 'x')).toEqual(['p2']);
  });

  it('hash among backups with the same rule, and a weight-0 primary does not hold them off', () => {
    const pool = upPool({ servers: [{ name: 'p0', weight: 0 }, { name: 'k1', backup: true }, { name: 'k2', backup: true }] });
    const counts = { k1: 0, k2: 0 };
    for (let i = 0; i < 2000; i++) counts[pick(pool, clientId(i))[0] as 'k1' | 'k2']++;
    expect(counts.k1).toBeGreaterThan(800);
    expect(counts.k2).toBeGreaterThan(800);
  });
});

describe('routing key and fallback', () => {
  it('client-id-hash keys on the client ID bytes; an empty ID routes by the fallback', () => {
    const pool = upPool({ balance: 'client-id-hash', fallback: 'round-robin', servers: ['b1', 'b2', 'b3'] });
    const id = Buffer.from('sensor-0001');
    expect(pool.routingKey({ clientId: id, username: Buffer.from('u') })).toBe(id);
    expect(pool.routingKey({ clientId: EMPTY, username: Buffer.from('u') })).toHaveLength(0);
    // Fallback round-robin: equal weights, empty IDs cycle through all servers in name order.
    const seq = Array.from({ length: 6 }, () => pick(pool, EMPTY)[0]);
    expect(seq).toEqual(['b1', 'b2', 'b3', 'b1', 'b2', 'b3']);
    // While a non-empty ID stays put.
    const home = pick(pool, id)[0];
    for (let i = 0; i < 5; i++) expect(pick(pool, id)[0]).toBe(home);
  });

  it('empty client ID with the golden weighted set: fallback round-robin starts at the heaviest server', () => {
    const pool = upPool({
      balance: 'client-id-hash',
      fallback: 'round-robin',
      retries: 0,
      servers: [
        { name: 'emqx-1', weight: 1 },
        { name: 'emqx-2', weight: 1 },
        { name: 'emqx-3', weight: 2 },
        { name: 'vernemq-a', weight: 3 },
        { name: 'spare', weight: 0 },
      ],
    });
    const seq = Array.from({ length: 7 }, () => pick(pool, EMPTY)[0]);
    expect(seq).toEqual(['vernemq-a', 'emqx-3', 'emqx-1', 'vernemq-a', 'emqx-2', 'emqx-3', 'vernemq-a']);
    expect(pick(pool, 'sensor-0001')).toEqual(['emqx-2']); // the golden vector, through the pool
  });

  it('username-hash keys on the username bytes and ignores the client ID; without a username, on the client ID; with neither, the fallback', () => {
    const pool = upPool({ balance: 'username-hash', fallback: 'least-connections', servers: ['b1', 'b2', 'b3', 'b4'] });
    const alice = Buffer.from('alice');
    const c1 = Buffer.from('c1');
    expect(pool.routingKey({ clientId: c1, username: alice })).toBe(alice);
    const home = pick(pool, 'c1', 'alice')[0];
    for (let i = 0; i < 200; i++) expect(pick(pool, clientId(i), 'alice')[0]).toBe(home);
    // No username (absent, or zero-length): the client ID keeps one client ID on one broker, whatever the load.
    expect(pool.routingKey({ clientId: c1, username: null })).toBe(c1);
    expect(pool.routingKey({ clientId: c1, username: EMPTY })).toBe(c1);
    // An ID whose broker is not the least loaded one below (b3), or the fallback would pick the same.
    const byId = upPool({ balance: 'client-id-hash', servers: ['b1', 'b2', 'b3', 'b4'] });
    const id = [...Array(50).keys()].map(clientId).find((x) => pick(byId, x)[0] !== 'b3')!;
    const idHome = pick(byId, id)[0];
    for (const s of pool.servers) if (s.name !== 'b3') addSessions(s, 5);
    expect(pick(pool, id, null)[0]).toBe(idHome);
    expect(pick(pool, id, EMPTY)[0]).toBe(idHome);
    // Neither: fallback least-connections follows load.
    expect(pool.routingKey({ clientId: EMPTY, username: null })).toHaveLength(0);
    expect(pick(pool, '', null)[0]).toBe('b3');
    expect(pick(pool, '', EMPTY)[0]).toBe('b3');
  });

  it('hashes the same bytes to the same server whichever pool strategy name keys on them', () => {
    const byId = upPool({ balance: 'client-id-hash', servers: ['b1', 'b2', 'b3'] });
    const byUser = upPool({ balance: 'username-hash', servers: ['b1', 'b2', 'b3'] });
    for (let i = 0; i < 300; i++) expect(pick(byUser, 'whatever', clientId(i))).toEqual(pick(byId, clientId(i)));
  });

  it('keyless strategies report an empty routing key', () => {
    for (const balance of ['round-robin', 'least-connections', 'random'] as const) {
      const pool = upPool({ balance, servers: ['b1'] });
      expect(pool.routingKey({ clientId: Buffer.from('c'), username: Buffer.from('u') })).toHaveLength(0);
    }
  });
});

describe('retry candidates', () => {
  it('are distinct and at most retries + 1, for every strategy and for the fallback', () => {
    for (const balance of ['client-id-hash', 'username-hash', 'round-robin', 'least-connections', 'random'] as const) {
      for (const retries of [0, 1, 2, 3, 10]) {
        const pool = upPool({ balance, retries, servers: ['b1', 'b2', 'b3', 'b4', { name: 'b5', weight: 3 }] });
        for (let i = 0; i < 100; i++) {
          for (const id of [clientId(i), EMPTY]) {
            const c = pick(pool, id, i % 2 === 0 ? clientId(i) : null);
            expect(c.length, `${balance} retries=${retries}`).toBe(Math.min(retries + 1, 5));
            expect(new Set(c).size).toBe(c.length);
          }
        }
      }
    }
  });

  it('follow the rendezvous scores for hash strategies (next-highest first)', () => {
    const pool = upPool({ retries: 4, servers: ['b1', 'b2', 'b3'] });
    expect(pick(pool, 'sensor-0001')).toEqual(['b2', 'b3', 'b1']); // golden vector order
  });
});

describe('owner()', () => {
  it('is the first hash candidate, null for empty keys, and follows a returning server', () => {
    const pool = upPool({ servers: ['b1', 'b2', 'b3', 'b4'] });
    for (let i = 0; i < 200; i++) expect(pool.owner(clientId(i))!.name).toBe(pick(pool, clientId(i))[0]);
    expect(pool.owner(EMPTY)).toBeNull();
    const key = clientId(7);
    const home = pool.owner(key)!;
    home.setHealth('down');
    expect(pool.owner(key)).not.toBe(home);
    home.setHealth('up');
    expect(pool.owner(key)).toBe(home);
  });

  it('is null for keyless strategies and when no server accepts', () => {
    expect(upPool({ balance: 'round-robin', servers: ['b1'] }).owner(Buffer.from('k'))).toBeNull();
    const pool = upPool({ servers: ['b1'] });
    pool.servers[0]!.setAdmin('maint');
    expect(pool.owner(Buffer.from('k'))).toBeNull();
  });
});

describe('reconfigure', () => {
  it('keeps Server objects by name with their admin state and sessions, adds and removes the rest', () => {
    const pool = upPool({ servers: ['b1', 'b2', 'b3'] });
    const [b1, b2, b3] = pool.servers as [Server, Server, Server];
    b2.setAdmin('drain');
    const session = new FakeSession(Buffer.from('k'));
    b3.sessions.add(session);
    const removed = pool.reconfigure(poolConfig({ servers: [{ name: 'b2', weight: 5, host: '10.0.0.12' }, 'b4', { name: 'b1', host: '10.0.0.11' }] }));
    expect(removed).toEqual([b3]);
    expect(session.evicted).toBeNull(); // removal does not close live sessions
    expect(b3.sessions.has(session)).toBe(true);
    expect(names(pool.servers)).toEqual(['b2', 'b4', 'b1']);
    expect(pool.servers[0]).toBe(b2);
    expect(pool.servers[2]).toBe(b1);
    expect(b2.admin).toBe('drain');
    expect(b2.config.weight).toBe(5);
    expect(pool.servers[1]!.health).toBe('unknown');
    expect(pool.config.servers.map((s) => s.name)).toEqual(['b2', 'b4', 'b1']);
    // Only b1 accepts (b2 drains, b4 is unknown) and b3 is gone.
    for (let i = 0; i < 50; i++) expect(pick(pool, clientId(i))).toEqual(['b1']);
  });

  it('a server given another address keeps its object, admin state and sessions, but not its verdict: unknown until probed', () => {
    const pool = upPool({ servers: ['b1', 'b2'] });
    const [b1, b2] = pool.servers as [Server, Server];
    const session = new FakeSession(Buffer.from('k'));
    b1.sessions.add(session);
    pool.reconfigure(poolConfig({ servers: [{ name: 'b1', host: '10.0.9.9' }, { name: 'b2', host: '10.0.0.12' }] }));
    expect(pool.servers[0]).toBe(b1);
    expect([b1.config.address, b1.health, b1.sessions.has(session)]).toEqual(['10.0.9.9:1883', 'unknown', true]);
    expect(b2.health).toBe('up'); // same address: kept
    for (let i = 0; i < 20; i++) expect(pick(pool, clientId(i))).toEqual(['b2']);
  });

  it('a server removed with live sessions and added again is the same object: its sessions are reachable again', () => {
    const pool = upPool({ servers: ['b1', 'b2'] });
    const b2 = pool.servers[1]!;
    b2.setAdmin('drain');
    const session = new FakeSession(Buffer.from('k'));
    b2.sessions.add(session);
    expect(pool.reconfigure(poolConfig({ servers: ['b1'] }))).toEqual([b2]);
    pool.reconfigure(poolConfig({ servers: ['b1', { name: 'b2', weight: 3 }] }));
    expect(pool.servers[1]).toBe(b2);
    expect(b2.sessions.has(session)).toBe(true);
    // Configured anew: the new weight, the health a new server starts with, admin ready.
    expect([b2.config.weight, b2.health, b2.admin]).toEqual([3, 'unknown', 'ready']);
    // Without sessions left, a removed server is forgotten: adding the name again makes a new one.
    pool.reconfigure(poolConfig({ servers: ['b1'] }));
    b2.sessions.delete(session);
    pool.reconfigure(poolConfig({ servers: ['b1'] }));
    pool.reconfigure(poolConfig({ servers: ['b1', 'b2'] }));
    expect(pool.servers[1]).not.toBe(b2);
  });

  it('applies a strategy change and marks servers up when health checks are turned off', () => {
    const pool = new Pool(poolConfig({ balance: 'client-id-hash', servers: ['b1', 'b2'] }));
    pool.reconfigure(poolConfig({ balance: 'round-robin', servers: ['b1', 'b2', 'b3'], health: 'none' }));
    expect(pool.servers.map((s) => s.health)).toEqual(['up', 'up', 'up']);
    expect(Array.from({ length: 3 }, () => pick(pool, 'same-id')[0])).toEqual(['b1', 'b2', 'b3']);
  });

  it('health checks turned on again: the made-up verdicts of `none` go, the first probe decides (as for a new server)', () => {
    const pool = new Pool(poolConfig({ servers: ['b1', 'b2'], health: 'none' }));
    expect(pool.servers.map((s) => s.health)).toEqual(['up', 'up']);
    pool.reconfigure(poolConfig({ servers: ['b1', 'b2'], health: 'mqtt' }));
    expect(pool.servers.map((s) => s.health)).toEqual(['unknown', 'unknown']);
    // A probing type to another keeps the verdicts (the probe changes, the servers did not).
    pool.servers[0]!.setHealth('up');
    pool.reconfigure(poolConfig({ servers: ['b1', 'b2'], health: 'tcp' }));
    expect(pool.servers[0]!.health).toBe('up');
  });

  it('refuses a config for another pool', () => {
    const pool = new Pool(poolConfig({ servers: ['b1'] }));
    expect(() => pool.reconfigure(poolConfig({ name: 'other', servers: ['b1'] }))).toThrow(/other/);
  });
});

describe('isEmptyClientIdPersistent', () => {
  it('flags only MQTT 5 CONNECTs with an empty client ID and a session expiry above 0', () => {
    expect(isEmptyClientIdPersistent({ protocolLevel: 5, clientIdLength: 0, sessionExpiryInterval: 3600 })).toBe(true);
    expect(isEmptyClientIdPersistent({ protocolLevel: 5 | 0x80, clientIdLength: 0, sessionExpiryInterval: 1 })).toBe(true);
    expect(isEmptyClientIdPersistent({ protocolLevel: 5, clientIdLength: 0, sessionExpiryInterval: 0 })).toBe(false);
    expect(isEmptyClientIdPersistent({ protocolLevel: 5, clientIdLength: 3, sessionExpiryInterval: 3600 })).toBe(false);
    expect(isEmptyClientIdPersistent({ protocolLevel: 4, clientIdLength: 0, sessionExpiryInterval: 3600 })).toBe(false);
  });
});
