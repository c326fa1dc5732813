import { describe, expect, it } from 'vitest';
import { ClientIdRegistry } from '../../src/balancer/client-id-registry.js';
import type { Server } from '../../src/balancer/server.js';

const b1 = { name: 'b1' } as Server;
const b2 = { name: 'b2' } as Server;
const session = (server: Server) => ({ server });

describe('ClientIdRegistry (the takeover rule across brokers)', () => {
  it('a newer session of a client ID on another server displaces the older one; on the same server, the broker does it', () => {
    const r = new ClientIdRegistry<{ server: Server }>();
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

  it('an older session that ends after a newer one took its ID leaves the newer one registered', () => {
    const r = new ClientIdRegistry<{ server: Server }>();
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
    const r = new ClientIdRegistry<{ server: Server }>();
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
