/**
 * "Nothing grows without bound" (design.md §5): a client that stops reading pauses the broker side of its
 * session, so the LB does not buffer what the client does not take. Measured as the LB process's RSS while
 * a publisher pushes far more than any socket buffer holds towards a subscriber that never reads.
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import mqttPacket from 'mqtt-packet';
import { startBrokers, connectVia, type NamedBroker } from '../helpers/cluster.js';
import { lbYaml } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { startLb, stopAllLbs, sleep, SOCKET_ENGINES, socketEngineOf } from '../helpers/lb.js';
import { connectRaw, connectPacket } from '../helpers/raw-client.js';

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

describe.each(SOCKET_ENGINES)('backpressure ($engine sockets)', ({ engine, env }) => {
  let brokers: NamedBroker[] = [];
  afterAll(async () => {
    await stopAllLbs();
    await Promise.all(brokers.map((b) => b.stop()));
  });

  it('a subscriber that stops reading does not make the LB buffer what it is sent', async () => {
    // The broker's own queue for a slow QoS 0 subscriber is large, so the bytes pile up on the way to it.
    brokers = await startBrokers(['bp']);
    const [port, admin] = [await freePort(), await freePort()];
    const yaml = lbYaml({ port, admin, servers: brokers, health: { type: 'tcp', interval: '1s' }, log: '  level: info\n' });
    // Through the launcher, as shipped: with Node's default 16 MiB semi-space the young generation grows by up
    // to 32 MiB at a moment of V8's choosing, which once put the plateau 20-25 MiB below where RSS settled.
    const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz`, env, launcher: true });
    expect(await socketEngineOf(lb)).toBe(engine);
    const pid = lb.proc.pid!;

    // A raw subscriber: CONNECT + SUBSCRIBE, then it never reads again.
    const sub = await connectRaw(port);
    sub.write(connectPacket({ clientId: 'stalled-reader' }));
    sub.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bp/#', qos: 0 }] } as mqttPacket.ISubscribePacket));
    await sleep(300);
    sub.pause();

    const pub = await connectVia(port, { clientId: 'flooder' });
    const payload = Buffer.alloc(64 * 1024, 0x61);
    const push = async (bytes: number): Promise<void> => {
      // Bounded: each publish waits for the publisher's socket to drain.
      for (let sent = 0; sent < bytes; sent += payload.length) {
        await new Promise<void>((resolve) => pub.publish('bp/data', payload, { qos: 0 }, () => resolve()));
      }
      await sleep(1000);
    };
    // Phase 1 fills every buffer on the way (kernel, broker, LB stream highWaterMarks) and lets the
    // allocator reach its working size from moving the publisher's bytes. In two halves, the plateau being the
    // larger RSS of the two: one CI run measured the first half 23 MiB below where RSS then settled.
    await push(32 * 1024 * 1024);
    const firstHalf = rssKiB(pid);
    await push(32 * 1024 * 1024);
    const plateau = Math.max(firstHalf, rssKiB(pid));
    // Phase 2 pushes three times as much again: without backpressure the LB would keep buffering it
    // for the stalled reader and grow by about that much; with it, RSS stays near the plateau.
    const phase2 = 96 * 1024 * 1024;
    await push(phase2);
    const after = rssKiB(pid);
    const grownMiB = (after - plateau) / 1024;
    // eslint-disable-next-line no-console
    console.log(`[backpressure] subscriber not reading: LB RSS after 64 MiB ${plateau} KiB, after 96 MiB more ${after} KiB (+${grownMiB.toFixed(1)} MiB)`);
    expect(grownMiB).toBeLessThan(16);

    // The stalled session is still alive, and the subscriber gets its data once it reads again.
    let received = 0;
    sub.on('data', (d: Buffer) => (received += d.length));
    sub.resume();
    const until = Date.now() + 10_000;
    while (received < 4 * 1024 * 1024 && Date.now() < until) await sleep(50);
    expect(received).toBeGreaterThan(4 * 1024 * 1024);
    sub.destroy();
    await pub.endAsync(true);
  });
});
