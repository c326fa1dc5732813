/**
 * The heartbeat's lifecycle in this process (no heartbeat thread): on the loopback interface, read with `ip`,
 * its advert socket bound to 127.0.0.1. It never becomes master here, so no address is added.
 */
import dgram from 'node:dgram';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { FailoverConfig } from '../../src/config/types.js';
import { AdvertCodec, FLAG_MASTER } from '../../src/failover/advert.js';
import { Heartbeat } from '../../src/failover/heartbeat.js';
import { mainPeer, peerViews } from '../../src/failover/peer-view.js';
import { threadSharedNow } from '../../src/monotonic-clock.js';
import type { LogSink } from '../../src/failover/log.js';

function bindUdp(port: number): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  return new Promise((resolve, reject) => {
    s.once('error', (err) => {
      s.close();
      reject(err);
    });
    s.bind({ address: '127.0.0.1', port, exclusive: true }, () => resolve(s));
  });
}

async function freeUdpPort(): Promise<number> {
  const s = await bindUdp(0);
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Not the root namespace's `lo` setting: tests change only namespaces of their own. */
const keepHostSysctl = (): 'already' => 'already';

function config(port: number, advertInterval = 1000): FailoverConfig {
  return {
    interface: 'lo',
    transport: 'unicast',
    peers: ['127.0.0.2'],
    group: '224.0.0.18',
    port,
    authKeyFile: '',
    advertInterval,
    preempt: true,
    preemptDelay: 0,
    instances: [{ routerId: 7, priority: 100, vips: ['192.0.2.99/32'] }],
    track: { listeners: false, interface: false, pools: { weight: 50 }, scripts: [] },
    garp: { count: 1, interval: 100, repeatAfter: 0 },
    notify: null,
  };
}

describe('Heartbeat lifecycle', () => {
  it('close() while start() runs: the start stops, the close waits for it, and the advert port is free after', async () => {
    const port = await freeUdpPort();
    const hb = new Heartbeat({ config: config(port), key: Buffer.alloc(32, 1), log: pino({ level: 'silent' }), emit: () => undefined, sendGarp: async () => undefined, promoteSecondaries: keepHostSysctl });
    const order: string[] = [];
    const started = hb.start().then(
      () => order.push('start resolved'),
      (err: unknown) => order.push(`start failed: ${(err as Error).message}`),
    );
    const closed = hb.close().then(() => order.push('close resolved'));
    await Promise.all([started, closed]);
    expect(order).toEqual(['start resolved', 'close resolved']);
    expect(hb.status().instances[0]!.state).toBe('init');
    const again = await bindUdp(port); // EADDRINUSE if the close left the advert socket bound
    await new Promise<void>((r) => again.close(() => r()));
    await hb.close(); // idempotent
  });

  it('close() after a start that completed releases the advert port', async () => {
    const port = await freeUdpPort();
    const hb = new Heartbeat({ config: config(port), key: Buffer.alloc(32, 1), log: pino({ level: 'silent' }), emit: () => undefined, sendGarp: async () => undefined, promoteSecondaries: keepHostSysctl });
    await hb.start();
    await expect(bindUdp(port)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await hb.close();
    const again = await bindUdp(port);
    await new Promise<void>((r) => again.close(() => r()));
  });
});

/** Log lines kept for assertions. */
function recordingLog(): LogSink & { lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> } {
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  const at = (level: string) => (obj: object, msg: string) => void lines.push({ level, obj: obj as Record<string, unknown>, msg });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** Blocks this thread (the heartbeat's, here) as a starved or SIGSTOPped process would be. */
function stallThread(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const LATE = 'failover heartbeat timer ran late (CPU starvation?)';

describe('Heartbeat timer lateness', () => {
  const KEY = Buffer.alloc(32, 1);

  it('a stall ended by a tracking update (posted by the proxy every 250 ms) is still reported as late', async () => {
    const port = await freeUdpPort();
    const log = recordingLog();
    const hb = new Heartbeat({ config: config(port, 100), key: KEY, log, emit: () => undefined, sendGarp: async () => undefined, promoteSecondaries: keepHostSysctl });
    try {
      await hb.start();
      await sleep(250);
      // The update reaches the heartbeat before its deferred timer does (app.ts posts it every 250 ms).
      await new Promise<void>((r) =>
        setTimeout(() => {
          stallThread(600);
          hb.setTracking(false, 0);
          r();
        }, 0),
      );
      await sleep(300); // bounded: the timer runs within one interval after the stall
      const late = log.lines.filter((l) => l.msg === LATE);
      expect(late).toHaveLength(1);
      expect(late[0]!.level).toBe('warn');
      expect(late[0]!.obj.lateMs).toBeGreaterThanOrEqual(400);
    } finally {
      await hb.close();
    }
  });

  it('a stall ended by a waiting advert (read before the deferred timer) is still reported as late', async () => {
    const port = await freeUdpPort();
    const log = recordingLog();
    const hb = new Heartbeat({ config: config(port, 100), key: KEY, log, emit: () => undefined, sendGarp: async () => undefined, promoteSecondaries: keepHostSysctl });
    const peer = dgram.createSocket('udp4');
    try {
      await hb.start();
      // The configured peer, 127.0.0.2: connected, so that send() goes out at once (no address lookup).
      await new Promise<void>((r) => peer.bind({ address: '127.0.0.2', port: 0 }, () => r()));
      await new Promise<void>((r) => peer.connect(port, '127.0.0.1', () => r()));
      const advert = new AdvertCodec(KEY).encode({ routerId: 7, priority: 100, flags: 0, intervalCs: 10, bootEpoch: BigInt(Date.now() - 60_000), counter: 1n }); // never the heartbeat's own epoch
      await sleep(250);
      await new Promise<void>((r) =>
        setTimeout(() => {
          peer.send(advert); // waits in the heartbeat's socket through the stall
          stallThread(600);
          r();
        }, 0),
      );
      await sleep(300);
      // The advert was heard (the drop counts and log lines say why if not).
      expect({ peer: hb.status().instances[0]!.peers[0]?.address, dropped: hb.dropped, lines: log.lines.map((l) => l.msg) }).toMatchObject({ peer: '127.0.0.2' });
      const late = log.lines.filter((l) => l.msg === LATE);
      expect(late).toHaveLength(1);
      expect(late[0]!.obj.lateMs).toBeGreaterThanOrEqual(400);
    } finally {
      peer.close();
      await hb.close();
    }
  });
});

// A re-audit: with three hosts (peers listing two), `failover peer state` was said at each turn of the two peers'
// adverts (20 lines a second), and a peer that fell silent was never said, the other one keeping the record fresh.
describe('Heartbeat with two peers (three hosts)', () => {
  const KEY = Buffer.alloc(32, 1);

  it('says each peer\'s state once, and the one that falls silent once', async () => {
    const port = await freeUdpPort();
    const log = recordingLog();
    const hb = new Heartbeat({ config: { ...config(port, 100), peers: ['127.0.0.2', '127.0.0.3'] }, key: KEY, log, emit: () => undefined, sendGarp: async () => undefined, promoteSecondaries: keepHostSysctl });
    const codec = new AdvertCodec(KEY);
    const epochs = [BigInt(Date.now() - 60_000), BigInt(Date.now() - 50_000)]; // one per host, never the heartbeat's own
    const peers = await Promise.all(
      ['127.0.0.2', '127.0.0.3'].map(async (address) => {
        const s = dgram.createSocket('udp4');
        await new Promise<void>((r) => s.bind({ address, port: 0 }, () => r()));
        await new Promise<void>((r) => s.connect(port, '127.0.0.1', () => r()));
        return s;
      }),
    );
    let counter = 0n;
    // .2 is master (priority 200: this host, 100, stays backup and adds no address), .3 a backup of 150.
    const advertise = (which: number[]): void => {
      counter++;
      if (which.includes(0)) peers[0]!.send(codec.encode({ routerId: 7, priority: 200, flags: FLAG_MASTER, intervalCs: 10, bootEpoch: epochs[0]!, counter }));
      if (which.includes(1)) peers[1]!.send(codec.encode({ routerId: 7, priority: 150, flags: 0, intervalCs: 10, bootEpoch: epochs[1]!, counter }));
    };
    try {
      await hb.start();
      for (let i = 0; i < 15; i++) {
        advertise([0, 1]);
        await sleep(100);
      }
      const stateLines = () => log.lines.filter((l) => l.msg === 'failover peer state');
      expect(stateLines().map((l) => [l.obj.peer, l.obj.state])).toEqual([
        ['127.0.0.2', 'master'],
        ['127.0.0.3', 'backup'],
      ]);
      // Both peers in the status, by address, whichever was heard last.
      expect(hb.status().instances[0]!.peers.map((p) => [p.address, p.state, p.priority])).toEqual([
        ['127.0.0.2', 'master', 200],
        ['127.0.0.3', 'backup', 150],
      ]);
      for (let i = 0; i < 15; i++) {
        advertise([0]);
        await sleep(100);
      }
      const silent = log.lines.filter((l) => l.msg === 'failover peer silent: no advert from it for longer than a Master_Down_Interval');
      expect(silent.map((l) => [l.obj.peer, l.obj.lastState, l.obj.state])).toEqual([['127.0.0.3', 'backup', 'backup']]);
      // As /api/status and /metrics read it: the silent one unknown, the master the contract's `peer`.
      const views = peerViews(hb.status().instances[0]!.peers, threadSharedNow());
      expect(views.map((v) => [v.address, v.state])).toEqual([
        ['127.0.0.2', 'master'],
        ['127.0.0.3', 'unknown'],
      ]);
      expect(mainPeer(views)?.address).toBe('127.0.0.2');
      advertise([0, 1]);
      await sleep(100);
      expect(stateLines().map((l) => l.obj.peer)).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.3']);
    } finally {
      for (const p of peers) p.close();
      await hb.close();
    }
  });
});
