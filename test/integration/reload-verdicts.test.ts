/**
 * After a reload, clients wait for the first health verdict of the servers it adds or moves instead of being
 * refused or placed elsewhere (Pool.verdictWaitUntil, src/proxy/verdict-wait.ts): a pool that comes with its own
 * listener serves its first clients although its broker takes 800 ms to answer the first probe, and a client
 * whose key belongs to a server the reload moved reaches that server's new place, not a neighbour. The brokers
 * are stand-ins that answer a CONNECT after a delay and record who sent it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/mosquitto.js';
import { lbYaml } from '../helpers/lb-config.js';
import { sleep, startLb, stopAllLbs } from '../helpers/lb.js';
import { CONNACK_OK, delayedBroker, firstClients } from '../helpers/delayed-broker.js';

const HEALTH = { type: 'mqtt' as const, interval: '5s', timeout: '3s' };

describe('the first clients after a reload', () => {
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    await stopAllLbs();
    for (const c of closers.splice(0)) await c();
  });

  it.each([
    { name: 'one process', extra: '' },
    { name: 'workers: 2', extra: 'workers: 2\n' },
  ])('of a pool the reload adds with its own listener reach its slow broker, not a no_server refusal ($name)', async ({ extra }) => {
    const [fast, slow] = [await delayedBroker(0), await delayedBroker(800)];
    closers.push(() => fast.close(), () => slow.close());
    const [port, sidePort, admin] = [await freePort(), await freePort(), await freePort()];
    const base = lbYaml({ port, admin, servers: [{ name: 'b1', port: fast.port }], health: HEALTH, extra });
    const lb = await startLb(base, { waitReady: `http://127.0.0.1:${admin}/readyz` });
    const side = `  side:\n    servers:\n      - name: s1\n        address: 127.0.0.1:${slow.port}\n    health:\n      type: mqtt\n      interval: 5s\n      timeout: 3s\n`;
    const withSide = base
      .replace('pools:\n', `  - name: side\n    bind: 127.0.0.1:${sidePort}\n    pool: side\npools:\n`)
      .replace('admin:\n', `${side}admin:\n`);
    lb.writeConfig(withSide);
    lb.reload();
    const answers = await firstClients(sidePort, 4, { answerMs: 5000 });
    expect(answers).toEqual([CONNACK_OK, CONNACK_OK, CONNACK_OK, CONNACK_OK]);
    expect(slow.clientIds.filter((id) => id.startsWith('first-')).sort()).toEqual(['first-0', 'first-1', 'first-2', 'first-3']);
    await lb.waitForLog((l) => l.msg === 'config reloaded');
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    expect(metrics).not.toMatch(/mqtt_lb_connect_rejected_total\{listener="side",reason="no_server"\} [1-9]/);
  });

  it('whose key belongs to a server the reload moved reach its new place, not a neighbour', async () => {
    const [f1, f2, moved] = [await delayedBroker(0), await delayedBroker(0), await delayedBroker(800)];
    closers.push(() => f1.close(), () => f2.close(), () => moved.close());
    const [port, admin] = [await freePort(), await freePort()];
    const yamlFor = (b2Port: number): string =>
      lbYaml({
        port,
        admin,
        servers: [
          { name: 'b1', port: f1.port },
          { name: 'b2', port: b2Port },
        ],
        health: HEALTH,
      });
    const lb = await startLb(yamlFor(f2.port), { waitReady: `http://127.0.0.1:${admin}/readyz` });
    // Which client IDs b2 owns: those its broker received.
    const ids = Array.from({ length: 30 }, (_, i) => `sticky-${i}`);
    expect(await firstClients(port, ids.length, { ids })).toEqual(ids.map(() => CONNACK_OK));
    const owned = ids.filter((id) => f2.clientIds.includes(id)).slice(0, 6);
    expect(owned.length).toBeGreaterThanOrEqual(3);

    lb.writeConfig(yamlFor(moved.port));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded');
    const before = f1.clientIds.length;
    // At once, while b2's first probe at its new place takes 800 ms: they wait for it, then go there.
    expect(await firstClients(port, owned.length, { ids: owned, answerMs: 5000 })).toEqual(owned.map(() => CONNACK_OK));
    expect(moved.clientIds.filter((id) => id.startsWith('sticky-')).sort()).toEqual([...owned].sort());
    expect(f1.clientIds.slice(before).filter((id) => id.startsWith('sticky-'))).toEqual([]);
  });

  it('waiting for a server that the next reload removes: placed at that reload, not at the end of the window', async () => {
    const [f1, f2, silent] = [await delayedBroker(0), await delayedBroker(0), await delayedBroker(null)];
    closers.push(() => f1.close(), () => f2.close(), () => silent.close());
    const [port, admin] = [await freePort(), await freePort()];
    const yamlWith = (b2Port: number | null): string =>
      lbYaml({ port, admin, servers: [{ name: 'b1', port: f1.port }, ...(b2Port === null ? [] : [{ name: 'b2', port: b2Port }])], health: HEALTH });
    const lb = await startLb(yamlWith(f2.port), { waitReady: `http://127.0.0.1:${admin}/readyz` });
    const ids = Array.from({ length: 30 }, (_, i) => `gone-${i}`);
    expect(await firstClients(port, ids.length, { ids })).toEqual(ids.map(() => CONNACK_OK));
    const owned = ids.filter((id) => f2.clientIds.includes(id)).slice(0, 3);
    expect(owned.length).toBeGreaterThanOrEqual(1);
    // b2 moves to a broker that never answers: its clients wait for a verdict due in health.timeout (3 s) ...
    lb.writeConfig(yamlWith(silent.port));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded');
    const asked = Date.now();
    const answers = firstClients(port, owned.length, { ids: owned, answerMs: 8000 });
    await sleep(300);
    // ... until a reload removes b2: they are placed on b1 at once.
    lb.writeConfig(yamlWith(null));
    lb.reload();
    expect(await answers).toEqual(owned.map(() => CONNACK_OK));
    expect(Date.now() - asked).toBeLessThan(2500);
    expect(f1.clientIds.filter((id) => id.startsWith('gone-')).sort()).toEqual(expect.arrayContaining([...owned].sort()));
  });
});
