/**
 * The listeners are bound only once every server has its first health verdict (App.firstVerdicts): the first
 * clients of a fresh balancer reach their brokers instead of being refused (`no_server`) while the first probes
 * are out. Against a broker that takes 1.5 s to answer a CONNECT (loaded or remote; health.timeout 3 s, so it
 * is up): longer than workers take to start, so that with workers too the first clients would come before the
 * verdict (the primary waits for it before it forks them, and they get it before they bind).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/mosquitto.js';
import { lbYaml } from '../helpers/lb-config.js';
import { startLb, stopAllLbs } from '../helpers/lb.js';
import { CONNACK_OK, delayedBroker as broker, firstClients } from '../helpers/delayed-broker.js';

describe('the first clients after start', () => {
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    await stopAllLbs();
    for (const c of closers.splice(0)) await c();
  });

  it.each([
    { name: 'one process', extra: '' },
    { name: 'workers: 2', extra: 'workers: 2\n' },
  ])('reach a healthy but slow broker, not a no_server refusal ($name)', async ({ extra }) => {
    const slow = await broker(1500);
    closers.push(() => slow.close());
    const [port, admin] = [await freePort(), await freePort()];
    const yaml = lbYaml({ port, admin, servers: [{ name: 'b1', port: slow.port }], health: { type: 'mqtt', interval: '5s', timeout: '3s' }, extra });
    const lb = await startLb(yaml);
    expect(await firstClients(port, 4)).toEqual([CONNACK_OK, CONNACK_OK, CONNACK_OK, CONNACK_OK]);
    const line = await lb.waitForLog((l) => l.msg === 'first health checks done');
    expect(line).toMatchObject({ up: 1, down: 0, unknown: 0 });
    expect(line.ms).toBeGreaterThanOrEqual(1400); // it waited for the slow first probe
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    expect(metrics).toMatch(/mqtt_lb_connect_rejected_total\{listener="mqtt",reason="no_server"\} 0\b/);
  });

  it.each([
    { name: 'one process', extra: '' },
    { name: 'workers: 2', extra: 'workers: 2\n' },
  ])('a stop signal during the wait for the first verdicts ends it at once: nothing is bound, exit 0 ($name)', async ({ extra }) => {
    const silent = await broker(null);
    closers.push(() => silent.close());
    const [port, admin] = [await freePort(), await freePort()];
    const yaml = lbYaml({ port, admin, servers: [{ name: 'silent', port: silent.port }], health: { type: 'mqtt', interval: '5s', timeout: '8s' }, extra });
    const lb = await startLb(yaml, { waitPort: admin });
    const readyz = await fetch(`http://127.0.0.1:${admin}/readyz`);
    expect(readyz.status).toBe(503);
    expect(await readyz.text()).toMatch(/^starting: /);
    const stopAt = Date.now();
    lb.proc.kill('SIGTERM');
    expect(await lb.exited).toBe(0);
    expect(Date.now() - stopAt).toBeLessThan(3000); // not the 8 s probe timeout
    const msgs = lb.logs.map((l) => l.msg);
    expect(msgs).not.toContain('listener started');
    expect(msgs).not.toContain('mqtt-lb started');
    expect(msgs).not.toContain('workers started');
    expect(msgs).not.toContain('first health checks done');
    expect(msgs).toContain('first health checks cut short: stopping');
  });

  it('a silent server delays the start by its health.timeout at most; the live one serves the first clients', async () => {
    const [live, silent] = [await broker(0), await broker(null)];
    closers.push(() => live.close(), () => silent.close());
    const [port, admin] = [await freePort(), await freePort()];
    const yaml = lbYaml({
      port,
      admin,
      balance: 'round-robin',
      servers: [
        { name: 'live', port: live.port },
        { name: 'silent', port: silent.port },
      ],
      health: { type: 'mqtt', interval: '2s', timeout: '1s' },
    });
    const lb = await startLb(yaml);
    // Round robin over both would send every second client to the silent one if it counted as up.
    expect(await firstClients(port, 4)).toEqual([CONNACK_OK, CONNACK_OK, CONNACK_OK, CONNACK_OK]);
    const line = await lb.waitForLog((l) => l.msg === 'first health checks done');
    expect(line).toMatchObject({ up: 1, down: 1, unknown: 0 });
    expect(line.ms).toBeGreaterThanOrEqual(900);
    expect(line.ms).toBeLessThan(1500 + 1000); // timeout + the guard's margin, and a loaded CI machine
  });
  it('a pool that no listener uses does not make the balancer unready when its servers are down', async () => {
    const live = await broker(0);
    closers.push(() => live.close());
    const [port, admin, gone] = [await freePort(), await freePort(), await freePort()];
    const spare = `  spare:\n    servers:\n      - { name: gone, address: "127.0.0.1:${gone}" }\n    health: { type: tcp, interval: 500ms, timeout: 400ms }\n`;
    const yaml = lbYaml({ port, admin, servers: [{ name: 'b1', port: live.port }], health: { type: 'mqtt', interval: '500ms', timeout: '400ms' } }).replace(/^admin:\n/m, `${spare}admin:\n`);
    expect(yaml).toContain('  spare:');
    const lb = await startLb(yaml, { waitPort: admin });
    await lb.waitForLog((l) => l.msg === 'mqtt-lb started');
    // The spare pool's only server is refused from the first probe on: /readyz (what an outer load balancer
    // checks) and the ready gauge still say ready, since no client can be sent there.
    const readyz = await fetch(`http://127.0.0.1:${admin}/readyz`);
    expect(`${readyz.status} ${(await readyz.text()).trim()}`).toBe('200 ready');
    expect(await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()).toMatch(/^mqtt_lb_ready 1$/m);
    expect(await firstClients(port, 1)).toEqual([CONNACK_OK]);
  });
});
