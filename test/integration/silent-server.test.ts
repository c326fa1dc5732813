/**
 * A broker that takes TCP but never answers (SIGSTOPped: the kernel still completes handshakes into its backlog):
 * a client that gives up on its CONNACK after a second or more makes the balancer probe that broker at once
 * (session.ts reportSilentServer), instead of at the next health interval. The failover benchmark measured
 * detection only at `fall` x `interval` before (bench/README.md, "Broker b2 SIGSTOPped").
 * Run alone after `npx tsc -p .` (the LB runs from dist/).
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { cleanupsAfterEach } from '../helpers/cleanups.js';
import { brokerFor, clientIdOn, startBrokers } from '../helpers/cluster.js';
import { startLb, sleep } from '../helpers/lb.js';
import { lbYaml } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { msUntilServerState, serverState } from '../helpers/server-state.js';
import { collect, connectPacket, connectRaw } from '../helpers/raw-client.js';

const cleanups = cleanupsAfterEach();


describe('a server that sends nothing in a whole session', () => {
  it('is probed when its client gives up, not at the next interval: marked down within a second of it', async () => {
    const brokers = await startBrokers(['b1', 'b2']);
    cleanups.push(() => Promise.all(brokers.map((b) => b.stop())).then(() => undefined));
    const port = await freePort();
    const admin = await freePort();
    // Probes every 20 s: without the report, the stopped broker would stay up for the whole test.
    const yaml = lbYaml({ port, admin, servers: brokers.map((b) => ({ name: b.name, port: b.port })), health: { type: 'mqtt', interval: '20s', timeout: '400ms', rise: 1, fall: 1 } });
    await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
    const id = await clientIdOn(port, 'b2', 'silent-');

    const b2 = brokers[1]!;
    b2.pause();
    cleanups.push(() => b2.resume());
    // A client waits 1.5 s for its CONNACK, then gives up.
    const s = await connectRaw(port);
    s.write(connectPacket({ clientId: id }));
    const got = await collect(s, 1500);
    expect(got.data.length).toBe(0);
    const downAfter = await msUntilServerState(admin, 'b2', 'down', Date.now());
    console.log(`[silent-server] b2 marked down ${downAfter} ms after its client gave up (probe timeout 400 ms, interval 20 s)`);
    expect(downAfter).toBeGreaterThanOrEqual(0);
    expect(downAfter).toBeLessThan(1500);
    // Its clients go to b1 now.
    expect(await brokerFor(port, id)).toBe('b1');
  });

  it('is probed when it closes a session before sending a byte, at once (as mosquitto at max_connections closes every client)', async () => {
    const brokers = await startBrokers(['b1']);
    cleanups.push(() => Promise.all(brokers.map((b) => b.stop())).then(() => undefined));
    // A stand-in broker: answers CONNACK (probes and clients alike) until told to close every connection at accept.
    let closeAtAccept = false;
    const seenIds: string[] = [];
    const open = new Set<net.Socket>();
    const fake = net.createServer((socket) => {
      open.add(socket);
      socket.on('close', () => open.delete(socket));
      socket.on('error', () => {});
      if (closeAtAccept) {
        socket.end();
        return;
      }
      socket.once('data', (d: Buffer) => {
        seenIds.push(d.toString('latin1'));
        socket.write(Buffer.from([0x20, 0x02, 0x00, 0x00]));
      });
    });
    const fakePort = await freePort();
    await new Promise<void>((resolve) => fake.listen(fakePort, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const c of open) c.destroy();
          fake.close(() => resolve());
        }),
    );
    const [port, admin] = [await freePort(), await freePort()];
    const yaml = lbYaml({ port, admin, servers: [{ name: 'b1', port: brokers[0]!.port }, { name: 'fake', port: fakePort }], health: { type: 'mqtt', interval: '20s', timeout: '400ms', rise: 1, fall: 1 } });
    await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
    for (let i = 0; i < 60 && (await serverState(admin, 'fake')) !== 'up'; i++) await sleep(50);
    let id = '';
    for (let i = 0; i < 40 && id === ''; i++) {
      const candidate = `closer-${i}`;
      const s = await connectRaw(port);
      s.write(connectPacket({ clientId: candidate }));
      await collect(s, 300);
      if (seenIds.some((x) => x.includes(candidate))) id = candidate;
    }
    expect(id).not.toBe('');

    closeAtAccept = true;
    const s = await connectRaw(port);
    s.write(connectPacket({ clientId: id }));
    const got = await collect(s, 1000);
    expect(got.closed).toBe(true);
    expect(got.data.length).toBe(0);
    const downAfter = await msUntilServerState(admin, 'fake', 'down', Date.now());
    // At its 20 s interval otherwise.
    expect(downAfter).toBeGreaterThanOrEqual(0);
    expect(downAfter).toBeLessThan(1500);
  });
});
