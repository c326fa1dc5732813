/**
 * The heartbeat's lifecycle in this process (no heartbeat thread): on the loopback interface, read with `ip`,
 * its advert socket bound to 127.0.0.1. It never becomes master here, so no address is added.
 */
import dgram from 'node:dgram';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { FailoverConfig } from '../../src/config/types.js';
import { Heartbeat } from '../../src/failover/heartbeat.js';

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

function config(port: number): FailoverConfig {
  return {
    interface: 'lo',
    transport: 'unicast',
    peers: ['127.0.0.2'],
    group: '224.0.0.18',
    port,
    authKeyFile: '',
    advertInterval: 1000,
    preempt: true,
    preemptDelay: 0,
    instances: [{ routerId: 7, priority: 100, vips: ['192.0.2.99/32'] }],
    track: { listeners: false, interface: false, pools: { weight: 50 } },
    garp: { count: 1, interval: 100, repeatAfter: 0 },
    notify: null,
  };
}

describe('Heartbeat lifecycle', () => {
  it('close() while start() runs: the start stops, the close waits for it, and the advert port is free after', async () => {
    const port = await freeUdpPort();
    const hb = new Heartbeat({ config: config(port), key: Buffer.alloc(32, 1), log: pino({ level: 'silent' }), emit: () => undefined, sendGarp: async () => undefined });
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
    const hb = new Heartbeat({ config: config(port), key: Buffer.alloc(32, 1), log: pino({ level: 'silent' }), emit: () => undefined, sendGarp: async () => undefined });
    await hb.start();
    await expect(bindUdp(port)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await hb.close();
    const again = await bindUdp(port);
    await new Promise<void>((r) => again.close(() => r()));
  });
});
