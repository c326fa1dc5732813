/**
 * A server given by host name when the resolver fails (src/proxy/server-name-cache.ts): the balancer runs in a
 * mount namespace of its own (`unshare --mount`, root) whose /etc/hosts and /etc/resolv.conf are files of this test,
 * so the name can be made to stop resolving without touching the machine's. Its network is the machine's loopback.
 * A failed lookup keeps the last answer for the sessions and for the health probes (30 s), so the server stays up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { connectVia } from '../helpers/cluster.js';
import { CLI, collectLogLines, sleep } from '../helpers/lb.js';
import { freePort, startMosquitto, type Broker } from '../helpers/mosquitto.js';
import { netnsAvailable } from '../helpers/netns.js';

// Skipped only off CI, where a developer lacks root (netnsAvailable throws in CI).
const canRun = netnsAvailable();

interface NamedLb {
  proc: ChildProcess;
  logs: Array<Record<string, unknown>>;
  ready(): Promise<number>;
  waitForLog(pred: (l: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown> | undefined>;
}

describe.skipIf(!canRun)('a server by host name while the resolver fails (own /etc/hosts in a mount namespace)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-names-'));
  const hosts = path.join(dir, 'hosts');
  const resolv = path.join(dir, 'resolv.conf');
  let broker: Broker | undefined;
  const lbs: ChildProcess[] = [];
  const cleanups: Array<() => void> = [];

  afterEach(async () => {
    for (const c of cleanups.splice(0)) c();
    for (const lb of lbs.splice(0)) {
      if (lb.exitCode !== null || lb.signalCode !== null) continue;
      lb.kill('SIGTERM');
      const t = setTimeout(() => lb.kill('SIGKILL'), 5000);
      await new Promise((r) => lb.once('exit', r));
      clearTimeout(t);
    }
  });
  afterAll(async () => {
    await broker?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** mqtt-lb on 127.0.0.1:`port` with one server `address`, tcp probes every 300 ms, seeing `hosts` and `resolv` as /etc's. */
  async function startLb(port: number, address: string): Promise<NamedLb> {
    const admin = await freePort();
    const config = path.join(dir, `lb-${port}.yaml`);
    writeFileSync(
      config,
      `listeners:\n  - { name: mqtt, bind: "127.0.0.1:${port}", pool: p }\npools:\n  p:\n    servers: [{ name: b, address: "${address}" }]\n` +
        `    health: { type: tcp, interval: 300ms, timeout: 250ms, rise: 1, fall: 2 }\nadmin: { bind: "127.0.0.1:${admin}" }\nlog: { level: info }\nwarmUp: 0\n`,
    );
    const script = 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"';
    const proc = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', hosts, resolv, process.execPath, CLI, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    lbs.push(proc);
    const logs: Array<Record<string, unknown>> = [];
    collectLogLines(proc.stdout!, logs);
    const lb: NamedLb = {
      proc,
      logs,
      async ready() {
        try {
          return (await fetch(`http://127.0.0.1:${admin}/readyz`)).status;
        } catch {
          return 0;
        }
      },
      async waitForLog(pred, timeoutMs) {
        const until = Date.now() + timeoutMs;
        while (!logs.some(pred) && Date.now() < until) await sleep(50);
        return logs.find(pred);
      },
    };
    // Serving: /readyz answers (200 with a server up, 503 without).
    const until = Date.now() + 15_000;
    while ((await lb.ready()) === 0 && Date.now() < until) await sleep(100);
    return lb;
  }

  it('sessions and probes keep the last answer: the server stays up and clients connect; the warn line says why', async () => {
    broker = await startMosquitto();
    writeFileSync(hosts, '127.0.0.1 localhost\n127.0.0.1 broker.test\n');
    // Nothing listens on 127.0.0.1:53: a name not in the hosts file fails at once (no query leaves the machine).
    writeFileSync(resolv, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
    const port = await freePort();
    const lb = await startLb(port, `broker.test:${broker.port}`);
    const until = Date.now() + 15_000;
    while ((await lb.ready()) !== 200 && Date.now() < until) await sleep(100);
    expect(await lb.ready()).toBe(200);
    await (await connectVia(port, { clientId: 'before' })).endAsync();

    // The name stops resolving.
    const mark = lb.logs.length;
    writeFileSync(hosts, '127.0.0.1 localhost\n');
    for (let i = 0; i < 8; i++) {
      await sleep(300);
      expect(await lb.ready()).toBe(200); // the probes reach the held address: the server stays up
      await (await connectVia(port, { clientId: `during-${i}` })).endAsync();
    }
    expect(lb.logs.find((l) => l.msg === 'server name lookup failed: the last answer is used meanwhile (up to 30 s after it came)')).toMatchObject({ level: 40, host: 'broker.test' });
    expect(lb.logs.slice(mark).filter((l) => l.msg === 'server state changed')).toEqual([]);

    // A reload during the outage asks the resolver anew, and keeps the held answer when it cannot answer.
    lb.proc.kill('SIGHUP');
    expect(await lb.waitForLog((l) => l.msg === 'config reloaded', 10_000)).toBeDefined();
    for (let i = 0; i < 4; i++) {
      await (await connectVia(port, { clientId: `after-reload-${i}` })).endAsync();
      await sleep(300);
      expect(await lb.ready()).toBe(200);
    }
    expect(lb.logs.slice(mark).filter((l) => l.msg === 'server state changed')).toEqual([]);
  }, 40_000);

  it('a name the resolver does not answer for (no answer held): the probe says so instead of blaming the network', async () => {
    // A resolver that takes queries and never answers: 127.0.0.1:53, on this machine's loopback.
    const silent = dgram.createSocket('udp4');
    const bound = await new Promise<boolean>((resolve) => {
      silent.once('error', () => resolve(false));
      silent.bind(53, '127.0.0.1', () => resolve(true));
    });
    cleanups.push(() => silent.close());
    expect(bound, '127.0.0.1:53 is taken on this machine').toBe(true);
    writeFileSync(hosts, '127.0.0.1 localhost\n');
    writeFileSync(resolv, 'nameserver 127.0.0.1\noptions timeout:3 attempts:1\n');
    const lb = await startLb(await freePort(), 'never.test:1883');
    const down = await lb.waitForLog((l) => l.msg === 'server state changed' && l.to === 'down', 10_000);
    expect(down).toMatchObject({ result: 'timeout', detail: 'no address for never.test within 250 ms (the resolver did not answer)' });
  }, 30_000);
});
