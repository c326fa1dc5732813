/**
 * A stand-in broker that answers every CONNECT after a delay (a loaded or distant broker, healthy but slow), or
 * never; and clients that connect as soon as a port accepts. For the tests of the first health verdicts: at start
 * (start-verdicts.test.ts) and after a reload (reload-verdicts.test.ts).
 */
import net from 'node:net';
import { eventWithin } from './events.js';
import { sleep } from './lb.js';
import { connectPacket } from './raw-client.js';

export const CONNACK_OK = '20020000';

export interface DelayedBroker {
  port: number;
  /** The client IDs of the CONNECTs it received, in order (health probes included). */
  readonly clientIds: string[];
  /** Connections open to it now (the LB's sessions and probes). */
  readonly openSockets: number;
  close(): Promise<void>;
}

/** A broker that answers every CONNECT after `delayMs` (0: at once), or never (null: accepts TCP, stays silent). */
export function delayedBroker(delayMs: number | null): Promise<DelayedBroker> {
  const sockets = new Set<net.Socket>();
  const clientIds: string[] = [];
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.once('data', (d: Buffer) => {
      clientIds.push(connectClientId(d));
      if (delayMs !== null) setTimeout(() => socket.write(Buffer.from(CONNACK_OK, 'hex')), delayMs).unref();
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        clientIds,
        get openSockets() {
          return sockets.size;
        },
        close: () => {
          for (const s of sockets) s.destroy();
          return new Promise<void>((r) => server.close(() => r()));
        },
      }),
    );
  });
}

/** The client ID of a CONNECT (3.1.1 or 5.0) that arrived whole in `d`; '' when it cannot be read. */
function connectClientId(d: Buffer): string {
  let i = 1;
  while (i < d.length && (d[i]! & 0x80) !== 0) i++;
  i++; // past the remaining length
  if (i + 2 > d.length) return '';
  i += 2 + d.readUInt16BE(i); // protocol name
  const level = d[i];
  i += 1 + 1 + 2; // level, flags, keepalive
  if (level === 5) {
    let props = 0;
    let shift = 0;
    while (i < d.length) {
      const b = d[i++]!;
      props |= (b & 0x7f) << shift;
      shift += 7;
      if ((b & 0x80) === 0) break;
    }
    i += props;
  }
  if (i + 2 > d.length) return '';
  const n = d.readUInt16BE(i);
  return d.subarray(i + 2, i + 2 + n).toString('utf8');
}

/**
 * As soon as the port accepts (tried every 10 ms, bounded): `count` clients send a CONNECT (client IDs from
 * `ids`, default `first-<i>`); their first 4 bytes back, as hex (waited for up to `answerMs` each).
 */
export async function firstClients(port: number, count: number, opts: { timeoutMs?: number; ids?: readonly string[]; answerMs?: number } = {}): Promise<string[]> {
  const until = Date.now() + (opts.timeoutMs ?? 20_000);
  const answerMs = opts.answerMs ?? 3000;
  for (;;) {
    const s = await new Promise<net.Socket | null>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => resolve(c));
      c.once('error', () => resolve(null));
    });
    // Not the balancer's address check at start (listener.ts probeBind: bound, listening and closed again at once,
    // which resets what connected meanwhile): the real listener keeps a connection open for its CONNECT.
    s?.on('error', () => {});
    if (s !== null && (await eventWithin(s, 'close', 30))) {
      s.destroy();
      if (Date.now() > until) throw new Error(`port ${port} kept closing what it accepted for ${opts.timeoutMs ?? 20_000} ms`);
      await sleep(10);
      continue;
    }
    if (s !== null) {
      const others = await Promise.all(Array.from({ length: count - 1 }, () => new Promise<net.Socket>((resolve, reject) => net.connect(port, '127.0.0.1').once('connect', function (this: net.Socket) { resolve(this); }).once('error', reject))));
      const all = [s, ...others];
      return Promise.all(
        all.map(
          (c, i) =>
            new Promise<string>((resolve) => {
              let got = Buffer.alloc(0);
              const done = (): void => {
                clearTimeout(t);
                c.destroy();
                resolve(got.subarray(0, 4).toString('hex'));
              };
              const t = setTimeout(done, answerMs);
              c.on('data', (d: Buffer) => {
                got = Buffer.concat([got, d]);
                if (got.length >= 4) done();
              });
              c.on('error', () => {});
              c.on('close', done);
              c.write(connectPacket({ clientId: opts.ids?.[i] ?? `first-${i}` }));
            }),
        ),
      );
    }
    if (Date.now() > until) throw new Error(`port ${port} not accepting within ${opts.timeoutMs ?? 20_000} ms`);
    await sleep(10);
  }
}
