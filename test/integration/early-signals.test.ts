/**
 * Signals that come while the balancer is still loading (src/early-signals.ts): a `systemctl reload` or a logrotate
 * SIGHUP right after the start, or a SIGTERM, before run.ts has its handlers. The config file is a FIFO, so the
 * process sits in the config read (after its modules have loaded, before it has an App) for as long as the test
 * wants: the signal is delivered exactly there, deterministically, and only a handler already installed keeps the
 * process alive (before the early handlers: exit 129 or 143, nothing logged). The read being synchronous, the
 * handler that then acts on it is run.ts's; the early module's own noting is tested at the end, in a process of
 * its own.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants, existsSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pathToFileURL } from 'node:url';
import { CLI, collectLogLines, sleep } from '../helpers/lb.js';
import { freePort, startMosquitto, type Broker } from '../helpers/mosquitto.js';
import { connectPacket, exchange } from '../helpers/raw-client.js';

interface Started {
  proc: ChildProcess;
  fifo: string;
  lines: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** mqtt-lb with `--config` a FIFO nobody writes yet: it blocks opening it (wchan `wait_for_partner`). */
async function startOnFifo(): Promise<Started> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-early-'));
  const fifo = path.join(dir, 'lb.yaml');
  expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
  const proc = spawn(process.execPath, [CLI, '--config', fifo], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(() => {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const lines: Array<Record<string, unknown>> = [];
  collectLogLines(proc.stdout!, lines);
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? (signal === null ? null : -1))));
  const wchan = `/proc/${proc.pid}/wchan`;
  for (let i = 0; i < 200; i++) {
    if (existsSync(wchan) && readFileSync(wchan, 'utf8').includes('partner')) return { proc, fifo, lines, exited };
    await sleep(50);
  }
  throw new Error('mqtt-lb did not reach the config read within 10 s');
}

/** Write the config into the FIFO once the process opens it for reading (bounded: never blocks the test). */
async function feed(fifo: string, yaml: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    let fd: number;
    try {
      // Non-blocking: ENXIO while no reader has it open.
      fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
      await sleep(50);
      continue;
    }
    try {
      writeSync(fd, yaml); // a few hundred bytes: fits the pipe at once
    } finally {
      closeSync(fd);
    }
    return;
  }
  throw new Error('nobody opened the config FIFO for reading within 10 s');
}

async function waitForLine(s: Started, msg: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  for (let waited = 0; waited < timeoutMs; waited += 50) {
    const found = s.lines.find((l) => l.msg === msg);
    if (found !== undefined) return found;
    await sleep(50);
  }
  throw new Error(`'${msg}' not logged within ${timeoutMs} ms; got: ${s.lines.map((l) => String(l.msg)).join(' | ')}`);
}

describe('signals while the balancer is still loading its config', () => {
  let broker: Broker | null = null;
  afterEach(async () => {
    await broker?.stop();
    broker = null;
  });

  async function config(): Promise<{ yaml: string; port: number }> {
    broker ??= await startMosquitto();
    const port = await freePort();
    const yaml = `listeners:
  - { name: mqtt, bind: 127.0.0.1:${port}, pool: p }
pools:
  p:
    servers: [{ name: m1, address: 127.0.0.1:${broker.port} }]
admin: { bind: 127.0.0.1:${await freePort()} }
warmUp: 0
`;
    return { yaml, port };
  }

  it('a SIGHUP is not its death: it is applied once the balancer serves', async () => {
    const { yaml } = await config();
    const s = await startOnFifo();
    s.proc.kill('SIGHUP');
    await sleep(200); // delivered and noted (or, without the early handler, fatal)
    expect(s.proc.exitCode).toBe(null);
    expect(s.proc.signalCode).toBe(null);
    await feed(s.fifo, yaml);
    // The reload reads the file again, and a reload takes only a regular file (a FIFO would wait for its writer with
    // every session: proxy.test.ts): the same text, renamed over the FIFO while the start is still under way.
    writeFileSync(`${s.fifo}.new`, yaml);
    renameSync(`${s.fifo}.new`, s.fifo);
    await waitForLine(s, 'config reload requested while starting: applying it once started');
    await waitForLine(s, 'mqtt-lb started');
    await waitForLine(s, 'config reloaded');
    s.proc.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('a SIGTERM stops it cleanly (exit 0) without binding its listeners', async () => {
    const { yaml } = await config();
    const s = await startOnFifo();
    s.proc.kill('SIGTERM');
    await sleep(200);
    expect(s.proc.signalCode).toBe(null);
    await feed(s.fifo, yaml);
    expect(await s.exited).toBe(0);
    const msgs = s.lines.map((l) => l.msg);
    expect(msgs).toContain('stop requested while starting: stopping once started');
    expect(msgs).not.toContain('listener started');
  });
});

describe('signals other daemons use, while the balancer serves (src/foreign-signals.ts)', () => {
  it('a SIGUSR1 before mqtt-lb could handle it opened the inspector: it is closed again, and said', async () => {
    const broker = await startMosquitto();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-inspector-'));
    const [port, admin, inspectPort] = [await freePort(), await freePort(), await freePort()];
    const file = path.join(dir, 'lb.yaml');
    writeFileSync(file, `listeners:\n  - { name: mqtt, bind: 127.0.0.1:${port}, pool: p }\npools:\n  p:\n    servers: [{ name: m1, address: 127.0.0.1:${broker.port} }]\nadmin: { bind: 127.0.0.1:${admin} }\nwarmUp: 0\n`);
    // Delivered before the first line of mqtt-lb, from a preloaded module that waits for the inspector to open.
    const preload = path.join(dir, 'usr1-first.mjs');
    writeFileSync(preload, `import inspector from 'node:inspector';\nprocess.kill(process.pid, 'SIGUSR1');\nfor (let i = 0; i < 100 && inspector.url() === undefined; i++) await new Promise((r) => setTimeout(r, 20));\n`);
    const proc = spawn(process.execPath, [CLI, '--config', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: `--inspect-port=127.0.0.1:${inspectPort} --import=${pathToFileURL(preload).href}` },
    });
    const s: Started = { proc, fifo: file, lines: [], exited: new Promise((resolve) => proc.on('exit', (code, signal) => resolve(code ?? (signal === null ? null : -1)))) };
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    collectLogLines(proc.stdout!, s.lines);
    cleanups.push(async () => {
      proc.kill('SIGKILL');
      await broker.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    await waitForLine(s, 'mqtt-lb started', 20_000);
    expect(stderr).toContain(`Debugger listening on ws://127.0.0.1:${inspectPort}/`);
    expect(stderr).toContain("mqtt-lb: SIGUSR1 ignored: SIGUSR1 came before mqtt-lb could handle it and opened Node's inspector: closed again");
    const listening = spawnSync('ss', ['-tlnH', `( sport = :${inspectPort} )`], { encoding: 'utf8', timeout: 5000 }).stdout.trim();
    expect(listening).toBe('');
    proc.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  }, 40_000);

  it('with workers, SIGUSR1, SIGUSR2, SIGQUIT and SIGALRM to the process group: no inspector, nobody dies, said once each', async () => {
    const broker = await startMosquitto();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-foreign-'));
    const [port, admin] = [await freePort(), await freePort()];
    const file = path.join(dir, 'lb.yaml');
    writeFileSync(file, `listeners:
  - { name: mqtt, bind: 127.0.0.1:${port}, pool: p }
pools:
  p:
    servers: [{ name: m1, address: 127.0.0.1:${broker.port} }]
admin: { bind: 127.0.0.1:${admin} }
workers: 2
warmUp: 0
`);
    // A process group of its own, as under systemd: a signal to the group reaches the primary and every worker.
    const proc = spawn(process.execPath, [CLI, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const s: Started = { proc, fifo: file, lines: [], exited: new Promise((resolve) => proc.on('exit', (code, signal) => resolve(code ?? (signal === null ? null : -1)))) };
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    collectLogLines(proc.stdout!, s.lines);
    cleanups.push(async () => {
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        // gone
      }
      await broker.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    await waitForLine(s, 'mqtt-lb started', 20_000);
    const workerPids = s.lines.filter((l) => l.msg === 'listener started').map((l) => l.pid);
    expect(workerPids).toHaveLength(2);
    for (const signal of ['SIGUSR1', 'SIGUSR2', 'SIGQUIT', 'SIGALRM'] as const) process.kill(-proc.pid!, signal);
    await sleep(500);
    expect(proc.exitCode).toBe(null);
    for (const pid of workerPids) expect(() => process.kill(pid as number, 0)).not.toThrow();
    const said = s.lines.filter((l) => l.msg === 'signal ignored');
    expect(said.map((l) => l.signal).sort()).toEqual(['SIGALRM', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']);
    expect(said.every((l) => l.level === 40 && l.worker === undefined)).toBe(true);
    expect(stderr).not.toContain('Debugger listening');
    // Still serving, through both workers' shared listener.
    for (let i = 0; i < 4; i++) {
      const r = await exchange(port, [connectPacket({ clientId: `after-signals-${i}` })], { waitMs: 1000 });
      expect([...r.data.subarray(0, 4)]).toEqual([0x20, 0x02, 0x00, 0x00]);
    }
    process.kill(-proc.pid!, 'SIGTERM');
    expect(await s.exited).toBe(0);
  }, 40_000);
});

/**
 * The module itself (dist/src/early-signals.js) in a process of its own: what it notes is what run.ts replays. (In
 * the FIFO cases above the config read is synchronous, so the signal's handler runs after run.ts's own are in
 * place; here it runs while only the early ones are.)
 */
describe('early-signals.ts', () => {
  const EARLY = pathToFileURL(path.join(path.dirname(CLI), 'early-signals.js')).href;

  function runScript(body: string, args: string[] = []): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-early-'));
    try {
      const script = path.join(dir, 'probe.mjs');
      writeFileSync(script, `const early = await import(${JSON.stringify(EARLY)});\nconst tick = () => new Promise((r) => setTimeout(r, 100));\n${body}\n`);
      const r = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 10_000 });
      return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('notes a SIGHUP and a SIGTERM for run.ts, and stops noting once taken', () => {
    const r = runScript(`process.kill(process.pid, 'SIGHUP'); await tick(); process.kill(process.pid, 'SIGTERM'); await tick();
console.log(JSON.stringify(early.takeEarlySignals()));
process.on('SIGHUP', () => console.log('run.ts handler')); process.kill(process.pid, 'SIGHUP'); await tick();`);
    expect(r.signal).toBe(null);
    expect(r.stdout.trim().split('\n')).toEqual(['{"stop":"SIGTERM","reload":true}', 'run.ts handler']);
  });

  it('a second stop signal before the balancer has its handlers exits at once (1)', () => {
    const r = runScript(`process.kill(process.pid, 'SIGINT'); await tick(); process.kill(process.pid, 'SIGTERM'); await tick(); console.log('still here');`);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('mqtt-lb: second SIGTERM while starting: exiting now\n');
    expect(r.stdout).toBe('');
  });

  it('SIGUSR1 opens no inspector, and SIGUSR2, SIGQUIT, SIGALRM do not kill: ignored and said, for every command', () => {
    for (const args of [[], ['check', '--config', 'x.yaml']]) {
      const r = runScript(
        `for (const s of ['SIGUSR1', 'SIGUSR2', 'SIGQUIT', 'SIGALRM']) { process.kill(process.pid, s); await tick(); }
process.kill(process.pid, 'SIGUSR1'); await tick(); console.log('still here');`,
        args,
      );
      expect(r.signal, args.join(' ')).toBe(null);
      expect(r.stdout.trim()).toBe('still here');
      expect(r.stderr).not.toContain('Debugger listening');
      // Each once: the second SIGUSR1 within 10 s is not said again.
      expect(r.stderr.split('\n').filter((l) => l !== '').map((l) => /^mqtt-lb: (SIG\w+) ignored: /.exec(l)?.[1])).toEqual(['SIGUSR1', 'SIGUSR2', 'SIGQUIT', 'SIGALRM']);
    }
  });

  it('other commands keep the default actions', () => {
    for (const args of [['check', '--config', 'x.yaml'], ['status'], ['--version'], ['keygen']]) {
      const r = runScript(`process.kill(process.pid, 'SIGTERM'); await tick(); console.log('not stopped');`, args);
      expect(r.signal, args.join(' ')).toBe('SIGTERM');
    }
    expect(runScript(`console.log(JSON.stringify(early.runsBalancer(['run', '--config', 'a.yaml'])))`).stdout.trim()).toBe('true');
  });
});
