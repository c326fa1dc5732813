/**
 * The JIT warm-up at start (src/warm-up.ts, `warmUp` in lb.yaml) with the built mqtt-lb and a real mosquitto:
 * it runs before the listeners are bound, leaves nothing behind in the real pool's counters, gives way to a stop
 * signal, and runs in each worker. (Other test files start their balancers with `warmUp: 0`: helpers/lb.ts.)
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { startBrokers, brokerFor, type NamedBroker } from '../helpers/cluster.js';
import { lbYaml } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { startLb, stopAllLbs, sleep, waitReady, type LbProcess } from '../helpers/lb.js';

async function metrics(admin: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${admin}/metrics`);
  return res.text();
}

/** A TCP relay to `target` that counts the connections it accepts: what reaches "the real server". */
async function countingRelay(target: number): Promise<{ port: number; accepted: () => number; close: () => Promise<void> }> {
  let accepted = 0;
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    accepted++;
    const upstream = net.connect({ host: '127.0.0.1', port: target });
    for (const s of [client, upstream]) {
      open.add(s);
      s.on('error', () => {});
      s.on('close', () => open.delete(s));
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    close: () => {
      for (const s of open) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Whether something accepts TCP connections on 127.0.0.1:port now. */
function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('JIT warm-up at start', () => {
  let brokers: NamedBroker[];

  beforeAll(async () => {
    brokers = await startBrokers(['b1']);
  });

  afterEach(async () => {
    await stopAllLbs();
  });

  /** An lb.yaml on fresh ports in front of `brokers`, probed by TCP and up at the first probe, with `extra` keys. */
  async function withBrokers(extra: string): Promise<{ port: number; admin: number; yaml: string }> {
    const port = await freePort();
    const admin = await freePort();
    return { port, admin, yaml: lbYaml({ port, admin, servers: brokers, health: { type: 'tcp', interval: '200ms', rise: 1 }, extra }) };
  }

  afterAll(async () => {
    await Promise.all((brokers ?? []).map((b) => b.stop()));
  });

  it('runs its sessions before the listeners are bound, and none of them reaches the real server or the counters', async () => {
    const port = await freePort();
    const admin = await freePort();
    // The real server is a relay to b1 that counts what reaches it (health `none`: no probe connects to it).
    const relay = await countingRelay(brokers[0]!.port);
    try {
      const yaml = lbYaml({ port, admin, servers: [{ name: 'b1', port: relay.port }], health: { type: 'none' }, extra: 'warmUp: 600\n' });
      const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const ended = await lb.waitForLog((l) => l.msg === 'warm-up ended');
      expect(ended).toMatchObject({ sessions: 600, failed: 0, wanted: 600, ended: 'done' });
      expect(relay.accepted()).toBe(0);
      await checkOrderAndCounters(lb, admin);
      // The real path works afterwards: one connection reaches the server, one session is counted.
      expect(await brokerFor(port, 'after-warm-up')).toBe('b1');
      expect(relay.accepted()).toBe(1);
      expect(await metrics(admin)).toMatch(/^mqtt_lb_connections_total\{listener="mqtt",outcome="proxied"\} 1$/m);
      expect(await lb.stop()).toBe(0);
    } finally {
      await relay.close();
    }
  });

  /** The warm-up's lines come before the listener's, and the real counters saw nothing of it. */
  async function checkOrderAndCounters(lb: LbProcess, admin: number): Promise<void> {
    const at = (msg: string): number => lb.logs.findIndex((l) => l.msg === msg);
    expect(at('warm-up started')).toBeGreaterThanOrEqual(0);
    expect(at('warm-up started')).toBeLessThan(at('warm-up ended'));
    expect(at('warm-up ended')).toBeLessThan(at('listener started'));
    const text = await metrics(admin);
    expect(text).toMatch(/^mqtt_lb_connections_total\{listener="mqtt",outcome="proxied"\} 0$/m);
    expect(text).toMatch(/^mqtt_lb_connections_total\{listener="mqtt",outcome="rejected"\} 0$/m);
    expect(text).not.toMatch(/^mqtt_lb_server_connect_duration_seconds_count\{[^}]*\} [1-9]/m);
    expect(text).not.toContain('warm-up');
  }

  it('is cut short by SIGTERM: the admin port answers meanwhile, the listener is never bound, exit 0', async () => {
    // More than the time bound allows: without the signal it would run for 4 s.
    const { port, admin, yaml } = await withBrokers('warmUp: 20000\n');
    const lb = await startLb(yaml);
    await lb.waitForLog((l) => l.msg === 'warm-up started');
    await sleep(300);
    // Still warming up: the listener is not bound yet; the admin port is, alive but not ready.
    expect(await accepting(port)).toBe(false);
    expect((await fetch(`http://127.0.0.1:${admin}/healthz`)).status).toBe(200);
    const ready = await fetch(`http://127.0.0.1:${admin}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toContain('warming up');
    lb.proc.kill('SIGTERM');
    expect(await lb.exited).toBe(0);
    const ended = lb.logs.find((l) => l.msg === 'warm-up ended');
    // `stop`, not `time`: the signal came well within the 4 s bound.
    expect(ended).toMatchObject({ ended: 'stop' });
    expect(ended!.sessions as number).toBeLessThan(20000);
    // Nothing was bound or started after it: the stop followed at once.
    expect(lb.logs.some((l) => l.msg === 'listener started' || l.msg === 'mqtt-lb started')).toBe(false);
    expect(lb.logs.some((l) => l.msg === 'stopped')).toBe(true);
  });

  it('stops at its time bound when it cannot finish, and the balancer then serves', async () => {
    const { port, admin, yaml } = await withBrokers('warmUp: 20000\n');
    const started = Date.now();
    const lb = await startLb(yaml);
    // A fast machine runs the 20,000 sessions within the 4 s (3.7 s seen): frozen for 2.5 s of them, it cannot.
    await lb.waitForLog((l) => l.msg === 'warm-up started');
    await sleep(200);
    lb.proc.kill('SIGSTOP');
    try {
      await sleep(2_500);
    } finally {
      lb.proc.kill('SIGCONT');
    }
    await waitReady(`http://127.0.0.1:${admin}/readyz`, lb);
    const ended = await lb.waitForLog((l) => l.msg === 'warm-up ended');
    expect(ended).toMatchObject({ ended: 'time' });
    expect(ended.ms as number).toBeGreaterThanOrEqual(4000);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(await brokerFor(port, 'after-time-bound')).toBe('b1');
  });

  it('does not run with warmUp: 0 (no log line, the listener bound at once)', async () => {
    const { admin, yaml } = await withBrokers('warmUp: 0\n');
    const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
    await lb.waitForLog((l) => l.msg === 'mqtt-lb started');
    expect(lb.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('warm-up'))).toBe(false);
  });

  it('reports an address in use at once, before warming up', async () => {
    const port = await freePort();
    const admin = await freePort();
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve));
    try {
      for (const workers of [1, 2]) {
        const lb = await startLb(lbYaml({ port, admin, servers: brokers, extra: `workers: ${workers}\nwarmUp: 20000\n` }));
        expect(await lb.exited).toBe(2);
        expect(lb.logs.some((l) => l.msg === 'warm-up started')).toBe(false);
        expect(lb.stderr.join('')).toContain('EADDRINUSE');
      }
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });

  it('runs in each worker with workers: 2 (the primary holds no session and does not warm up)', async () => {
    const { port, admin, yaml } = await withBrokers('workers: 2\nwarmUp: 600\n');
    const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
    await lb.waitForLog((l) => l.msg === 'mqtt-lb started', 20_000);
    const ends = lb.logs.filter((l) => l.msg === 'warm-up ended');
    expect(ends.map((l) => l.worker).sort()).toEqual([0, 1]);
    for (const e of ends) expect(e).toMatchObject({ sessions: 600, failed: 0, ended: 'done' });
    expect(await brokerFor(port, 'workers-after-warm-up')).toBe('b1');
    // The workers send their counters to the primary every 250 ms.
    const proxiedOne = /^mqtt_lb_connections_total\{listener="mqtt",outcome="proxied"\} 1$/m;
    const until = Date.now() + 5000;
    while (!proxiedOne.test(await metrics(admin)) && Date.now() < until) await sleep(100);
    expect(await metrics(admin)).toMatch(proxiedOne);
  });

  it('with workers: 2, a stop signal during the warm-up cuts it short in every worker', async () => {
    const { yaml } = await withBrokers('workers: 2\nwarmUp: 20000\n');
    const lb = await startLb(yaml);
    const until = Date.now() + 10_000;
    while (lb.logs.filter((l) => l.msg === 'warm-up started').length < 2 && Date.now() < until) await sleep(50);
    await sleep(200);
    lb.proc.kill('SIGTERM');
    expect(await lb.exited).toBe(0);
    const ends = lb.logs.filter((l) => l.msg === 'warm-up ended');
    expect(ends.map((l) => l.worker).sort()).toEqual([0, 1]);
    for (const e of ends) expect(e.ended).toBe('stop');
    // And nothing is bound after it, as with one process (an audit saw each worker bind and proxy for ~70 ms).
    expect(lb.logs.filter((l) => l.msg === 'listener started' || l.msg === 'workers started' || l.msg === 'mqtt-lb started')).toEqual([]);
    expect(lb.logs.some((l) => l.msg === 'stopped')).toBe(true);
  });

  it('a worker started again after a crash does not warm up beside its serving siblings', async () => {
    const { port, admin, yaml } = await withBrokers('workers: 2\nwarmUp: 600\n');
    const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
    await lb.waitForLog((l) => l.msg === 'mqtt-lb started', 20_000);
    const victim = lb.logs.find((l) => l.msg === 'listener started' && l.worker === 1)!.pid as number;
    const startedBefore = lb.logs.filter((l) => l.msg === 'warm-up started').length;
    expect(startedBefore).toBe(2);
    const linesBefore = lb.logs.length;
    process.kill(victim, 'SIGKILL');
    // The replacement binds its listener (a new pid), without a warm-up.
    await lb.waitForLog((l) => l.msg === 'listener started' && l.worker === 1 && l.pid !== victim, 15_000);
    expect(lb.logs.slice(linesBefore).some((l) => l.msg === 'warm-up started')).toBe(false);
    expect(await brokerFor(port, 'after-respawn')).toBe('b1');
  });
});
