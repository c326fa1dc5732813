/**
 * A server given by host name when the resolver fails (src/proxy/server-name-cache.ts): the balancer runs in a
 * mount namespace of its own (`unshare --mount`, root) whose /etc/hosts and /etc/resolv.conf are files of this test,
 * so the name can be made to stop resolving without touching the machine's. Its network is the machine's loopback.
 * A failed lookup keeps the last answer for the sessions and for the health probes (30 s), so the server stays up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectVia } from '../helpers/cluster.js';
import { CLI, collectLogLines, sleep } from '../helpers/lb.js';
import { freePort, startMosquitto, type Broker } from '../helpers/mosquitto.js';
import { netnsAvailable } from '../helpers/netns.js';

// Skipped only off CI, where a developer lacks root (netnsAvailable throws in CI).
const canRun = netnsAvailable();

describe.skipIf(!canRun)('a server by host name while the resolver fails (own /etc/hosts in a mount namespace)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-names-'));
  let broker: Broker | undefined;
  let lb: ChildProcess | undefined;
  afterAll(async () => {
    if (lb !== undefined && lb.exitCode === null && lb.signalCode === null) {
      lb.kill('SIGTERM');
      const t = setTimeout(() => lb!.kill('SIGKILL'), 5000);
      await new Promise((r) => lb!.once('exit', r));
      clearTimeout(t);
    }
    await broker?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sessions and probes keep the last answer: the server stays up and clients connect; the warn line says why', async () => {
    broker = await startMosquitto();
    const hosts = path.join(dir, 'hosts');
    const resolv = path.join(dir, 'resolv.conf');
    writeFileSync(hosts, '127.0.0.1 localhost\n127.0.0.1 broker.test\n');
    // Nothing listens on 127.0.0.1:53: a name not in the hosts file fails at once (no query leaves the machine).
    writeFileSync(resolv, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
    const [port, admin] = [await freePort(), await freePort()];
    const config = path.join(dir, 'lb.yaml');
    writeFileSync(
      config,
      `listeners:\n  - { name: mqtt, bind: "127.0.0.1:${port}", pool: p }\npools:\n  p:\n    servers: [{ name: b, address: "broker.test:${broker.port}" }]\n` +
        `    health: { type: tcp, interval: 300ms, timeout: 250ms, rise: 1, fall: 2 }\nadmin: { bind: "127.0.0.1:${admin}" }\nlog: { level: info }\nwarmUp: 0\n`,
    );
    const script = 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"';
    lb = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', hosts, resolv, process.execPath, CLI, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    const logs: Array<Record<string, unknown>> = [];
    collectLogLines(lb.stdout!, logs);
    const ready = async (): Promise<number> => {
      try {
        return (await fetch(`http://127.0.0.1:${admin}/readyz`)).status;
      } catch {
        return 0;
      }
    };
    const until = Date.now() + 15_000;
    while ((await ready()) !== 200 && Date.now() < until) await sleep(100);
    expect(await ready()).toBe(200);
    await (await connectVia(port, { clientId: 'before' })).endAsync();

    // The name stops resolving.
    const mark = logs.length;
    writeFileSync(hosts, '127.0.0.1 localhost\n');
    for (let i = 0; i < 8; i++) {
      await sleep(300);
      expect(await ready()).toBe(200); // the probes reach the held address: the server stays up
      await (await connectVia(port, { clientId: `during-${i}` })).endAsync();
    }
    expect(logs.find((l) => l.msg === 'server name lookup failed: the last answer is used meanwhile (up to 30 s after it came)')).toMatchObject({ level: 40, host: 'broker.test' });
    expect(logs.slice(mark).filter((l) => l.msg === 'server state changed')).toEqual([]);

    // A reload during the outage asks the resolver anew, and keeps the held answer when it cannot answer.
    lb.kill('SIGHUP');
    const reloadedBy = Date.now() + 10_000;
    while (!logs.some((l) => l.msg === 'config reloaded') && Date.now() < reloadedBy) await sleep(50);
    expect(logs.some((l) => l.msg === 'config reloaded')).toBe(true);
    for (let i = 0; i < 4; i++) {
      await (await connectVia(port, { clientId: `after-reload-${i}` })).endAsync();
      await sleep(300);
      expect(await ready()).toBe(200);
    }
    expect(logs.slice(mark).filter((l) => l.msg === 'server state changed')).toEqual([]);
  }, 40_000);
});
