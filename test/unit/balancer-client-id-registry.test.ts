import { describe, expect, it } from 'vitest';
import { ClientIdRegistry, assignedIdKeyPrefix, clientIdOfKey, sessionKey, takeoverKey, userKeyPart, type ClientIdSharing } from '../../src/balancer/client-id-registry.js';
import type { Server } from '../../src/balancer/server.js';

const b1 = { name: 'b1' } as Server;
const b2 = { name: 'b2' } as Server;
/** A session whose CONNECT went to `server` at `connectSentAt` (ms); by default each one later than the last. */
let clock = 0;
const session = (server: Server, connectSentAt = ++clock, serverAddress?: string) => ({ server, connectSentAt, serverAddress, takenOver: () => {} });
type Holder = ReturnType<typeof session>;

describe('ClientIdRegistry (the takeover rule across brokers)', () => {
  it('a newer session of a client ID on another server displaces the older one; on the same server, the broker does it', () => {
    const r = new ClientIdRegistry<Holder>();
    const first = session(b1);
    expect(r.claim('c', first)).toBeNull();
    const second = session(b2);
    expect(r.claim('c', second)).toBe(first);
    const third = session(b2);
    expect(r.holderOf('c')).toBe(second);
    expect(r.claim('c', third)).toBeNull();
    expect(r.holderOf('c')).toBe(third);
    expect(r.size).toBe(1);
  });

  // A reload audit: a reload moved server b1 to another address; the sessions at the old one run on another broker.
  it('one server at two addresses (moved by a reload) is two brokers: the newer session displaces the older', () => {
    const r = new ClientIdRegistry<Holder>();
    const atOld = session(b1, ++clock, '127.0.0.1:25004');
    const atNew = session(b1, ++clock, '127.0.0.1:25005');
    expect(r.claim('c', atOld)).toBeNull();
    expect(r.claim('c', atNew)).toBe(atOld);
    // At the same address, the broker does it.
    expect(r.claim('c', session(b1, ++clock, '127.0.0.1:25005'))).toBeNull();
  });

  it('newer is whose CONNECT went later, not whose CONNACK came first: an older claim arriving late is the one displaced', () => {
    const r = new ClientIdRegistry<Holder>();
    const older = session(b1, 100); // its broker answers slowly
    const newer = session(b2, 200);
    expect(r.claim('c', newer)).toBeNull();
    expect(r.claim('c', older)).toBe(older);
    expect(r.holderOf('c')).toBe(newer);
    // On the newer one's server, the broker closes the older itself.
    expect(r.claim('c', session(b2, 150))).toBeNull();
    expect(r.holderOf('c')).toBe(newer);
  });

  it('an older session that ends after a newer one took its ID leaves the newer one registered', () => {
    const r = new ClientIdRegistry<Holder>();
    const older = session(b1);
    const newer = session(b2);
    r.claim('c', older);
    r.claim('c', newer);
    r.release('c', older);
    expect(r.size).toBe(1);
    // The newer one is still known: a third on b1 displaces it.
    expect(r.claim('c', session(b1))).toBe(newer);
  });

  it('forgets an ID when its session ends; other IDs are independent; claiming twice is harmless', () => {
    const r = new ClientIdRegistry<Holder>();
    const a = session(b1);
    const b = session(b2);
    r.claim('a', a);
    expect(r.claim('a', a)).toBeNull();
    r.claim('b', b);
    r.release('a', a);
    expect(r.size).toBe(1);
    expect(r.claim('a', session(b2))).toBeNull();
    r.release('a', a); // not the holder any more: no effect
    expect(r.size).toBe(2);
  });
});

describe('ClientIdRegistry: sessions waiting for their CONNACK', () => {
  it('answers the older ones of the ID on other servers, to be closed when a newer session is accepted', () => {
    const r = new ClientIdRegistry<Holder>();
    const slowA = session(b1, 10);
    const slowB = session(b2, 20);
    const later = session(b2, 40);
    r.awaitConnack('c', slowA);
    r.awaitConnack('c', slowB);
    r.awaitConnack('c', later);
    r.awaitConnack('other', session(b1, 5));
    expect(r.awaitingCount).toBe(4);
    const accepted = session(b1, 30);
    r.awaitConnack('c', accepted);
    expect(r.claim('c', accepted)).toBeNull();
    // slowA is on the accepted one's broker (the broker closes it), `later` is newer: only slowB.
    expect(r.olderAwaiting('c', accepted)).toEqual([slowB]);
    expect(r.olderAwaiting('other', accepted)).toBeNull(); // on the same broker
    expect(r.awaitingCount).toBe(4); // the accepted one no longer waits
  });

  it('forgets a waiting session at its CONNACK, its refusal or its end; none left answers null', () => {
    const r = new ClientIdRegistry<Holder>();
    const a = session(b1, 10);
    const b = session(b2, 20);
    const c = session(b2, 25);
    for (const s of [a, b, c]) r.awaitConnack('c', s);
    r.release('c', b); // refused by its broker, or ended before its CONNACK
    expect(r.awaitingCount).toBe(2);
    expect(r.claim('c', c)).toBeNull();
    expect(r.olderAwaiting('c', c)).toEqual([a]);
    r.release('c', a);
    expect(r.awaitingCount).toBe(0);
    expect(r.olderAwaiting('c', c)).toBeNull();
    r.release('c', c);
    expect(r.size).toBe(0);
  });
});

describe('ClientIdRegistry with sharing (workers: the primary hears every claim and release)', () => {
  function recorder() {
    const events: unknown[][] = [];
    const attached = new Map<string, unknown>();
    const sharing: ClientIdSharing = {
      attach: (pool, registry) => void attached.set(pool, registry),
      claimed: (pool, id, serial, server, connectSentAt) => void events.push(['claim', pool, id, serial, server, connectSentAt]),
      released: (serial) => void events.push(['release', serial]),
    };
    return { events, attached, sharing };
  }

  it('reports each new holder once, under a fresh serial, and its release only when it still holds the ID', () => {
    const { events, attached, sharing } = recorder();
    const r = new ClientIdRegistry<Holder>('brokers', sharing);
    expect(attached.get('brokers')).toBe(r);
    const older = session(b1, 10, '10.0.0.11:1883');
    const newer = session(b2, 20);
    r.claim('c', older);
    r.claim('c', older); // the same holder again: nothing new to say
    expect(r.claim('c', newer)).toBe(older);
    expect(r.claim('c', session(b1, 15))).not.toBeNull(); // older than the holder: not reported
    r.release('c', older); // displaced: the primary already holds the newer claim
    r.release('c', newer);
    const [s1, s2] = [events[0]![3] as number, events[1]![3] as number];
    expect(s2).toBeGreaterThan(s1);
    expect(events).toEqual([
      // Its server's name and the address it was dialled at: the primary tells brokers apart by both.
      ['claim', 'brokers', 'c', s1, 'b1 10.0.0.11:1883', 10],
      ['claim', 'brokers', 'c', s2, 'b2 ', 20],
      ['release', s2],
    ]);
  });

  it('an order names a holder by its serial: one that has ended, or was replaced since, is not found', () => {
    const { events, sharing } = recorder();
    const r = new ClientIdRegistry<Holder>('brokers', sharing);
    const first = session(b1);
    r.claim('c', first);
    const serial = events[0]![3] as number;
    expect(r.heldUnder('c', serial)).toBe(first);
    expect(r.heldUnder('c', serial + 1)).toBeUndefined();
    expect(r.heldUnder('other', serial)).toBeUndefined();
    r.claim('c', session(b1)); // same broker: the broker closes `first`; a new serial
    expect(r.heldUnder('c', serial)).toBeUndefined();
    expect(new ClientIdRegistry<Holder>().heldUnder('c', serial)).toBeUndefined();
  });
});

describe('sessionKey', () => {
  it('keys a session by username and client ID together, so that no two pairs meet, and gives the client ID back', () => {
    const b = (s: string) => Buffer.from(s, 'latin1');
    const pairs: Array<[string, string | null]> = [['dev-1', null], ['dev-1', ''], ['dev-1', 'alice'], ['dev-1', 'carol'], ['e-dev-1', 'alic'], ['1:x', null], ['x', '1:'], ['', 'alice'], ['\u00ff\u0000', '\u0000']];
    const keys = pairs.map(([id, user]) => sessionKey(b(id), user === null ? null : b(user)));
    // No username and an empty one are the same user; every other pair is its own key.
    expect(keys[0]).toBe(keys[1]);
    expect(new Set(keys.slice(1)).size).toBe(pairs.length - 1);
    for (let i = 0; i < pairs.length; i++) expect(clientIdOfKey(keys[i]!).toString('latin1')).toBe(pairs[i]![0]);
    expect(userKeyPart(b('alice')) + 'dev-1').toBe(sessionKey(b('dev-1'), b('alice')));
  });
});

describe('takeoverKey (pools.<name>.takeover)', () => {
  const b = (s: string) => Buffer.from(s, 'latin1');
  const key = (by: Parameters<typeof takeoverKey>[0], id: string, user: string | null) => takeoverKey(by, b(id), user === null ? null : b(user));

  it('client-id-and-username (the default): one client ID under two usernames is two clients', () => {
    expect(key('client-id-and-username', 'dev-1', 'alice')).toBe(sessionKey(b('dev-1'), b('alice')));
    expect(key('client-id-and-username', 'dev-1', 'alice')).not.toBe(key('client-id-and-username', 'dev-1', 'carol'));
    expect(key('client-id-and-username', 'dev-1', null)).toBe(key('client-id-and-username', 'dev-1', ''));
  });

  it('client-id: the client ID alone, whatever the username, as one broker judges', () => {
    expect(key('client-id', 'dev-1', 'alice')).toBe(key('client-id', 'dev-1', 'carol'));
    expect(key('client-id', 'dev-1', 'alice')).toBe(key('client-id', 'dev-1', null));
    expect(key('client-id', 'dev-1', null)).not.toBe(key('client-id', 'dev-2', null));
    expect(clientIdOfKey(key('client-id', 'dev-1', 'alice')!).toString()).toBe('dev-1');
  });

  it('username: the username whatever the client ID (use_username_as_clientid); without one, the client ID, among such clients only', () => {
    expect(key('username', 'dev-1', 'alice')).toBe(key('username', 'dev-2', 'alice'));
    expect(key('username', 'dev-1', 'alice')).not.toBe(key('username', 'dev-1', 'carol'));
    expect(key('username', '', 'alice')).toBe(key('username', 'x', 'alice'));
    expect(key('username', 'alice', '')).toBe(key('username', 'alice', null));
    expect(key('username', 'dev-1', null)).toBe(key('username', 'dev-1', ''));
    // A client without credentials never has a user's key, whatever its client ID (a takeover audit).
    const anonymous = ['alice', '5:alice', '0:alice', '', '1:a'].map((id) => key('username', id, null));
    const users = ['alice', '5:alice', '0:', 'a', '1:a'].map((u) => key('username', 'x', u));
    for (const a of anonymous) for (const u of users) expect(a).not.toBe(u);
  });

  it('off, and an empty client ID that no username keys: no key; the prefix of a broker-assigned ID agrees with the key of a reconnect that sends it', () => {
    expect(key('off', 'dev-1', 'alice')).toBeNull();
    for (const by of ['client-id-and-username', 'client-id', 'username'] as const) {
      expect(key(by, '', null)).toBeNull();
      expect(assignedIdKeyPrefix(by, null)! + 'auto-1').toBe(key(by, 'auto-1', null));
    }
    expect(key('client-id-and-username', '', 'alice')).toBeNull();
    expect(assignedIdKeyPrefix('client-id-and-username', b('alice'))! + 'auto-1').toBe(key('client-id-and-username', 'auto-1', 'alice'));
    expect(key('client-id', '', 'alice')).toBeNull();
    expect(assignedIdKeyPrefix('client-id', b('alice'))! + 'auto-1').toBe(key('client-id', 'auto-1', 'alice'));
    expect(assignedIdKeyPrefix('off', b('alice'))).toBeNull();
  });
});
