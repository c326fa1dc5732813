/**
 * HandleSocket (src/proxy/handle-socket.ts) against real loopback peers: the net.Socket behaviour sessions
 * rely on (connect, errors with codes, backpressure and 'drain', pause, half-close, reset, addresses),
 * each event after the call that caused it, and 'close' exactly once.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { HandleSocket, handleSockets, type HandleBindings, type ResolveName } from '../../src/proxy/handle-socket.js';
import { sleep } from '../helpers/lb.js';

const WAIT_MS = 10_000;

function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS)))]).finally(() => clearTimeout(t));
}

function once<T = unknown>(emitter: { once(event: string, fn: (arg: T) => void): unknown }, event: string): Promise<T> {
  return bounded(new Promise<T>((resolve) => emitter.once(event, resolve)), event);
}

const sha = (chunks: Buffer[]): string => createHash('sha256').update(Buffer.concat(chunks)).digest('hex');

interface Peer {
  port: number;
  accepted: Promise<Socket>;
  close(): Promise<void>;
}

const peers: Peer[] = [];
const sockets: HandleSocket[] = [];

/** A net server that hands over its first connection (paused, so the test decides when it reads). */
async function peer(host = '127.0.0.1'): Promise<Peer> {
  const conns: Socket[] = [];
  let give!: (s: Socket) => void;
  const accepted = new Promise<Socket>((r) => (give = r));
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    conns.push(s);
    s.on('error', () => {});
    give(s);
  });
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  const p: Peer = {
    port: (server.address() as net.AddressInfo).port,
    accepted: bounded(accepted, 'accept'),
    close: async () => {
      for (const c of conns) c.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  peers.push(p);
  return p;
}

/**
 * The peer's connection sends `text` and its FIN; resolves 200 ms later (time for them to arrive) with
 * `ended`, the peer seeing our FIN (in an object: an async function would wait for a returned promise).
 */
async function peerSendsAndEnds(p: Peer, text: string): Promise<{ ended: Promise<unknown> }> {
  const server = await p.accepted;
  server.resume();
  const ended = once(server, 'end');
  server.end(text);
  await sleep(200);
  return { ended };
}

function canListen(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(0, host, () => probe.close(() => resolve(true)));
  });
}

function bindings(): HandleBindings {
  const b = handleSockets();
  // This Node (20.x) has the handle API; if a future one drops it, the proxy falls back to net.Socket and
  // these tests say so instead of passing vacuously.
  if (b === null) throw new Error('handle bindings unavailable on this Node: the proxy runs on net.Socket');
  return b;
}

function dial(host: string, port: number): HandleSocket {
  const s = HandleSocket.dial(bindings(), { host, port, noDelay: true });
  sockets.push(s);
  return s;
}

/** Records 'close' calls: exactly one is expected. */
function closes(s: HandleSocket): { count: () => number; hadError: Promise<boolean> } {
  let n = 0;
  const hadError = bounded(
    new Promise<boolean>((resolve) =>
      s.on('close', (e: boolean) => {
        n++;
        resolve(e);
      }),
    ),
    'close',
  );
  return { count: () => n, hadError };
}

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const p of peers.splice(0)) await p.close();
});

describe('HandleSocket', () => {
  it('connects, reports both addresses, and carries bytes both ways', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    expect(s.remoteAddress).toBeUndefined(); // not connected yet
    await once(s, 'connect');
    const server = await p.accepted;
    expect(s.remoteAddress).toBe('127.0.0.1');
    expect(s.remotePort).toBe(p.port);
    expect(s.localAddress).toBe('127.0.0.1');
    expect(s.localPort).toBe(server.remotePort);
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    server.write('hello');
    server.resume();
    const atServer = once<Buffer>(server, 'data');
    expect(s.write(Buffer.from('world'))).toBe(true);
    expect((await atServer).toString()).toBe('world');
    for (let i = 0; i < 100 && Buffer.concat(got).length < 5; i++) await sleep(10);
    expect(Buffer.concat(got).toString()).toBe('hello');
    expect(s.bytesRead).toBe(5);
  });

  it('dials an IPv6 literal (connect6)', async (ctx) => {
    // A machine without IPv6 on loopback cannot run this one (it says so in the report as a skip).
    if (!(await canListen('::1'))) ctx.skip('no ::1 on loopback here');
    const p = await peer('::1');
    const s = dial('::1', p.port);
    await once(s, 'connect');
    const server = await p.accepted;
    expect(s.remoteAddress).toBe('::1');
    expect(s.localPort).toBe(server.remotePort);
  });

  it('resolves a host name before connecting', async () => {
    const p = await peer();
    const s = dial('localhost', p.port);
    await once(s, 'connect');
    expect(net.isIP(s.remoteAddress ?? '')).not.toBe(0);
  });

  // `localhost` as ::1 and 127.0.0.1 with a broker on one of them: tried address by address, as net.connect
  // (and so the health probes) do. 127.0.0.2 stands in for the address nobody listens on.
  it('a name with several addresses: each is tried in turn until one connects; all refused is one error', async () => {
    const p = await peer('127.0.0.1');
    const twoAddresses: ResolveName = (_host, cb) => cb(null, [{ address: '127.0.0.2', family: 4 }, { address: '127.0.0.1', family: 4 }]);
    const s = HandleSocket.dial(bindings(), { host: 'dual.test', port: p.port, noDelay: true, resolve: twoAddresses });
    sockets.push(s);
    await once(s, 'connect');
    expect(s.remoteAddress).toBe('127.0.0.1');
    const server = await p.accepted;
    s.write(Buffer.from('hello'));
    server.resume();
    expect((await once<Buffer>(server, 'data')).toString()).toBe('hello');

    await p.close();
    const refused = HandleSocket.dial(bindings(), { host: 'dual.test', port: p.port, noDelay: true, resolve: twoAddresses });
    sockets.push(refused);
    const errors: string[] = [];
    refused.on('error', (e: NodeJS.ErrnoException) => errors.push(`${e.code} ${e.message}`));
    const c = closes(refused);
    expect(await c.hadError).toBe(true);
    expect(errors).toEqual([`ECONNREFUSED connect ECONNREFUSED 127.0.0.1:${p.port}`]);
    await sleep(50);
    expect(c.count()).toBe(1);
  });

  it('a refused dial: error with its code, then close(true), both after the call returned', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const events: string[] = [];
    const s = dial('127.0.0.1', port);
    s.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code} ${e.syscall}`));
    const c = closes(s);
    events.push('returned');
    expect(await c.hadError).toBe(true);
    expect(events).toEqual(['returned', 'error ECONNREFUSED connect']);
    expect(s.destroyed).toBe(true);
  });

  it('more than 16 KiB written before the connect: false, then drain once it is out', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    expect(s.write(Buffer.alloc(10_000, 1))).toBe(true);
    expect(s.write(Buffer.alloc(10_000, 2))).toBe(false);
    await once(s, 'drain');
    const server = await p.accepted;
    let n = 0;
    server.on('data', (d: Buffer) => (n += d.length));
    server.resume();
    for (let i = 0; i < 100 && n < 20_000; i++) await sleep(10);
    expect(n).toBe(20_000);
  });

  it('writes and end() before the connect go out after it, in order, then the FIN', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    s.write(Buffer.from('one,'));
    s.end(Buffer.from('two'));
    const server = await p.accepted;
    const got: Buffer[] = [];
    server.on('data', (d: Buffer) => got.push(d));
    const ended = once(server, 'end');
    server.resume();
    await ended;
    expect(Buffer.concat(got).toString()).toBe('one,two');
  });

  it('backpressure: write() says false past 16 KiB queued, drain follows, every byte arrives', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    await once(s, 'connect');
    const server = await p.accepted;
    const data = randomBytes(8 << 20);
    let refusedAt = -1;
    for (let off = 0; off < data.length && refusedAt < 0; off += 65536) {
      if (!s.write(data.subarray(off, off + 65536))) refusedAt = off + 65536;
    }
    // The peer is not reading: the kernel buffers fill, then the queue passes the high-water mark.
    expect(refusedAt).toBeGreaterThan(0);
    expect(refusedAt).toBeLessThan(data.length);
    expect(s.writableLength).toBeGreaterThanOrEqual(16 * 1024);
    const got: Buffer[] = [];
    server.on('data', (d: Buffer) => got.push(d));
    const drained = once(s, 'drain');
    server.resume();
    await drained;
    expect(s.writableLength).toBe(0);
    for (let off = refusedAt; off < data.length; off += 65536) {
      if (!s.write(data.subarray(off, off + 65536))) await once(s, 'drain');
    }
    s.end();
    await once(server, 'end');
    expect(sha(got)).toBe(sha([data]));
  });

  it('pause() stops reading until resume(); the peer FIN arrives as end, then our FIN, then close(false)', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    const c = closes(s);
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.pause();
    await once(s, 'connect');
    const { ended: serverEnded } = await peerSendsAndEnds(p, 'bytes then FIN');
    expect(got).toHaveLength(0);
    let ended = false;
    s.on('end', () => (ended = true));
    s.resume();
    await serverEnded; // our FIN answers theirs (allowHalfOpen false)
    expect(await c.hadError).toBe(false);
    expect(ended).toBe(true);
    expect(Buffer.concat(got).toString()).toBe('bytes then FIN');
    expect(s.bytesRead).toBe(14); // kept after close
    s.destroy();
    await sleep(50);
    expect(c.count()).toBe(1);
  });

  // A session sets endWhilePaused before routing (a client leaving the accept queue) and clears it at the splice,
  // where a pause is backpressure and the FIN must wait behind what is queued.
  it('endWhilePaused: a FIN that arrives while paused with nothing held is passed on at once', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    s.allowHalfOpen = true;
    s.endWhilePaused = true;
    s.on('data', () => {});
    s.pause();
    await once(s, 'connect');
    const server = await p.accepted;
    const ended = once(s, 'end');
    server.end();
    await ended; // while still paused
    s.end();
    await once(s, 'close');
  });

  // A session reading its client's CONNECT copies each read at once (session.ts receive): lent, no copy is made
  // before the memory ceiling's count sees it. Cleared at the splice, where a write may keep a chunk.
  it('lendReads: a flowing read is a view of the shared read buffer for the call only; a held read and one without it are copies', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    s.lendReads = true;
    const seen: Array<{ chunk: Buffer; text: string }> = [];
    s.on('data', (d: Buffer) => seen.push({ chunk: d, text: d.toString() }));
    await once(s, 'connect');
    const server = await p.accepted;
    server.resume();
    const next = async (text: string): Promise<void> => {
      const before = seen.length;
      server.write(text);
      for (let i = 0; i < 100 && seen.length === before; i++) await sleep(10);
    };
    await next('one');
    await next('two');
    expect(seen.map((x) => x.text)).toEqual(['one', 'two']);
    // Both views of the same process-wide buffer: the second read overwrote the first one's bytes.
    expect(seen[0]!.chunk.toString()).toBe('two');
    s.pause();
    server.write('held');
    await sleep(100);
    s.resume();
    for (let i = 0; i < 100 && seen.length < 3; i++) await sleep(10);
    s.lendReads = false;
    await next('copied');
    expect(seen.map((x) => x.text)).toEqual(['one', 'two', 'held', 'copied']);
    expect(seen[1]!.chunk.toString()).not.toBe('two'); // lent: overwritten since by the reads after it
    // A copy of its own keeps its bytes whatever is read after it.
    expect(seen[2]!.chunk.toString()).toBe('held');
    await next('again');
    expect(seen[3]!.chunk.toString()).toBe('copied');
    s.destroy();
  });

  // A dialed socket reads from the connect on (handle-socket.ts connectTo): what arrives before anyone
  // listens is held as when paused, never dropped or emitted to nobody.
  it("bytes and a FIN the server sends before any 'data' listener wait for it", async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    const c = closes(s);
    await once(s, 'connect');
    const { ended: serverEnded } = await peerSendsAndEnds(p, 'greeting then FIN');
    let ended = false;
    s.on('end', () => (ended = true));
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    await serverEnded;
    expect(Buffer.concat(got).toString()).toBe('greeting then FIN');
    expect(ended).toBe(true);
    expect(await c.hadError).toBe(false);
  });

  // The first listener of a session event sits in a field (handle-socket.ts SLOT_DATA); the rest must still
  // behave as EventEmitter's: order of registration, once, removal by the original function, prepend.
  it('listeners keep EventEmitter semantics across the slot and the emitter', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    await once(s, 'connect');
    const calls: string[] = [];
    const a = (x: unknown): void => void calls.push(`a${String(x)}`);
    const b = (x: unknown): void => void calls.push(`b${String(x)}`);
    const c = (x: unknown): void => void calls.push(`c${String(x)}`);
    const d = (x: unknown): void => void calls.push(`d${String(x)}`);
    s.on('drain', a);
    s.on('drain', b);
    s.once('drain', c);
    expect(s.listenerCount('drain')).toBe(3);
    expect(s.listeners('drain')).toEqual([a, b, c]);
    s.emit('drain', 1);
    s.emit('drain', 2);
    expect(calls).toEqual(['a1', 'b1', 'c1', 'a2', 'b2']);
    // Removing the first leaves b in the emitter: a listener added now goes after it, not into the field.
    s.removeListener('drain', a);
    s.on('drain', d);
    calls.length = 0;
    s.emit('drain', 3);
    expect(calls).toEqual(['b3', 'd3']);
    s.prependListener('drain', a);
    calls.length = 0;
    s.emit('drain', 4);
    expect(calls).toEqual(['a4', 'b4', 'd4']);
    s.removeAllListeners('drain');
    expect(s.listenerCount('drain')).toBe(0);
    expect(s.emit('drain', 5)).toBe(false);
    // once() removed by the original function, as EventEmitter allows.
    s.once('end', a);
    s.off('end', a);
    expect(s.listenerCount('end')).toBe(0);
    expect(s.emit('end')).toBe(false);
    // An 'error' nobody listens to throws, as EventEmitter's does.
    expect(() => s.emit('error', new Error('unheard'))).toThrow('unheard');
    s.on('error', a);
    calls.length = 0;
    expect(s.emit('error', 'x')).toBe(true);
    expect(calls).toEqual(['ax']);
    // Events outside the slots are plain EventEmitter events.
    s.on('other', b);
    s.emit('other', 6);
    expect(calls).toEqual(['ax', 'b6']);
  });

  it('resetAndDestroy() reaches the peer as ECONNRESET', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    await once(s, 'connect');
    const server = await p.accepted;
    const peerError = bounded(new Promise<string | undefined>((r) => server.once('error', (e: NodeJS.ErrnoException) => r(e.code))), 'peer error');
    server.resume();
    const c = closes(s);
    s.resetAndDestroy();
    expect(await peerError).toBe('ECONNRESET');
    expect(await c.hadError).toBe(false);
  });

  // A re-audit: end() with writes still queued, then resetAndDestroy() (a lingering side given up on with its queue
  // unread). libuv refuses a reset while a shutdown is pending, and Node then left the handle closing forever: no
  // 'close', and the session around it never ended.
  it('resetAndDestroy() after end() with writes still queued: closes, and what was queued is dropped, not delivered', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    await once(s, 'connect');
    const server = await p.accepted; // paused: it reads nothing
    // Until our own queue holds some (the kernel's loopback buffers take megabytes first).
    const chunk = randomBytes(65536);
    let written = 0;
    for (let i = 0; i < 1024; i++) {
      written += chunk.length;
      if (!s.write(chunk)) break;
    }
    expect(s.writableLength).toBeGreaterThan(0);
    s.end();
    await sleep(50);
    const c = closes(s);
    s.resetAndDestroy();
    expect(await c.hadError).toBe(false);
    let got = 0;
    server.on('data', (d: Buffer) => (got += d.length));
    const peerSaw = bounded(
      new Promise<string>((r) => {
        server.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
        server.once('end', () => r('end'));
      }),
      'the reset at the peer',
    );
    server.resume();
    // Linux reports ECONNRESET once the peer has read what had arrived; gVisor (where sessions 1-38 ran) an end of stream.
    expect(['ECONNRESET', 'end']).toContain(await peerSaw);
    expect(got).toBeLessThan(written);
  });

  it('end() with writes queued: every byte, then the FIN, once the peer reads', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    await once(s, 'connect');
    const server = await p.accepted;
    s.on('data', () => {}); // reading: the peer's FIN then closes it
    const data = randomBytes(16 << 20);
    s.write(data);
    expect(s.writableLength).toBeGreaterThan(0);
    s.end();
    const got: Buffer[] = [];
    server.on('data', (d: Buffer) => got.push(d));
    const ended = once(server, 'end');
    server.resume();
    await ended;
    expect(sha(got)).toBe(sha([data]));
    server.end();
    expect(await closes(s).hadError).toBe(false);
  });

  it('a reset from the peer: error ECONNRESET, close(true)', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    s.on('data', () => {});
    let code: string | undefined;
    s.on('error', (e: NodeJS.ErrnoException) => (code = e.code));
    const c = closes(s);
    await once(s, 'connect');
    (await p.accepted).resetAndDestroy();
    expect(await c.hadError).toBe(true);
    expect(code).toBe('ECONNRESET');
  });

  it('destroy() twice closes once; writes after it are refused', async () => {
    const p = await peer();
    const s = dial('127.0.0.1', p.port);
    await once(s, 'connect');
    const c = closes(s);
    s.destroy();
    s.destroy();
    await c.hadError;
    await sleep(100);
    expect(c.count()).toBe(1);
    expect(s.write(Buffer.from('late'))).toBe(false);
  });
});
