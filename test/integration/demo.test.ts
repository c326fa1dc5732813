/**
 * `npm start` (src/demo/start.ts): embedded demo brokers on the config's loopback servers, then the balancer.
 * A client reaches a demo broker through it; a config of real brokers, or a loopback server already taken, is
 * told to use `npx mqtt-lb --config FILE` instead of starting half a demo.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectVia } from '../helpers/cluster.js';
import { ROOT } from '../helpers/dist-build.js';
import { freePort } from '../helpers/mosquitto.js';
import { isRunning, startedPid, waitGone } from '../helpers/processes.js';

const DEMO = path.join(ROOT, 'dist/src/demo/start.js');
const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-demo-'));
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function config(name: string, listen: number, admin: number, servers: string[]): string {
  const file = path.join(dir, name);
  const list = servers.map((a, i) => `      - { name: s${i}, address: "${a}" }`).join('\n');
  writeFileSync(file, `listeners:\n  - { name: mqtt, bind: "127.0.0.1:${listen}", pool: p }\npools:\n  p:\n    servers:\n${list}\nadmin: { bind: "127.0.0.1:${admin}" }\nwarmUp: 0\n`);
  return file;
}

describe('npm start (the demo)', () => {
  it('starts demo brokers on the loopback servers and the balancer in front of them; SIGTERM stops both, exit 0', async () => {
    const [listen, admin, a, b] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const child = spawn(process.execPath, [DEMO, config('demo.yaml', listen, admin, [`127.0.0.1:${a}`, `127.0.0.1:${b}`])], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const until = Date.now() + 20_000;
    while (!out.includes('"mqtt-lb started"') && Date.now() < until && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    expect(err).toContain(`demo: 2 embedded aedes brokers (MQTT 3.1/3.1.1, one shared bus) on 127.0.0.1:${a}, 127.0.0.1:${b}`);
    // stdout is the JSON log alone.
    for (const line of out.split('\n').filter((l) => l !== '')) expect(() => JSON.parse(line), line).not.toThrow();
    expect(out).toContain('"mqtt-lb started"');
    const client = await connectVia(listen, { clientId: 'demo-client' });
    await client.endAsync();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Both demo brokers are gone with it.
    for (const port of [a, b]) {
      const refused = await new Promise<boolean>((r) => net.connect(port, '127.0.0.1').once('connect', () => r(false)).once('error', () => r(true)));
      expect(refused).toBe(true);
    }
  }, 40_000);

  it('run by `npm start`: a SIGTERM to npm alone (which forwards it to its shell only) stops the balancer, not orphans it on its ports', async () => {
    const [listen, admin, a] = [await freePort(), await freePort(), await freePort()];
    const yaml = config('npm-demo.yaml', listen, admin, [`127.0.0.1:${a}`]);
    // A package of its own whose start script runs the demo, as the repository's does (after its tsc).
    const pkg = mkdtempSync(path.join(dir, 'pkg-'));
    writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: 'demo-under-npm', version: '1.0.0', private: true, scripts: { start: `true && node ${JSON.stringify(DEMO)} ${JSON.stringify(yaml)}` } }));
    const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` };
    const npm = spawn('npm', ['start'], { cwd: pkg, env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(npm);
    let out = '';
    npm.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    npm.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    let pid = 0;
    try {
      pid = await startedPid(() => out, 20_000);
      expect(pid, out).toBeGreaterThan(0);
      npm.kill('SIGTERM');
      expect(await waitGone(pid, 10_000), out).toBe(true);
      expect(out).toContain('"msg":"stop requested: the launching process has gone"');
      const refused = await new Promise<boolean>((r) => net.connect(listen, '127.0.0.1').once('connect', () => r(false)).once('error', () => r(true)));
      expect(refused).toBe(true);
    } finally {
      npm.kill('SIGKILL');
      if (pid > 0 && isRunning(pid)) process.kill(pid, 'SIGKILL');
    }
  }, 60_000);

  it('a config with no loopback server (real brokers) is not a demo: exit 1, pointing at `npx mqtt-lb --config`', async () => {
    const file = config('real.yaml', await freePort(), await freePort(), ['10.0.0.11:1883']);
    const r = spawnSync(process.execPath, [DEMO, file], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`names no loopback server, so there is nothing for \`npm start\` (the demo) to embed: run it with \`npx mqtt-lb --config ${file}\``);
  });

  it('a loopback server already taken (a real broker there): exit 2, saying so and what to run instead', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const file = config('taken.yaml', await freePort(), await freePort(), [`127.0.0.1:${port}`]);
      const r = spawnSync(process.execPath, [DEMO, file], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`EADDRINUSE`);
      expect(r.stderr).toContain(`with real brokers there, run \`npx mqtt-lb --config ${file}\``);
    } finally {
      taken.close();
    }
  });
});
