/**
 * Real Mosquitto brokers for tests, on free loopback ports, each in its own temp dir.
 *   const broker = await startMosquitto();            // listener 127.0.0.1:<free port>, anonymous
 *   ... broker.pause() / resume() (SIGSTOP/SIGCONT), broker.restart() (same port), broker.kill()
 *   await broker.stop();                              // always, e.g. in afterEach / finally
 * Every broker still running when the test process exits is SIGKILLed and its temp dir removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Broker {
  port: number;
  host: '127.0.0.1';
  pid: number;
  stop(): Promise<void>;
  kill(signal?: NodeJS.Signals): void;
  pause(): void;
  resume(): void;
  restart(): Promise<void>;
}

const MOSQUITTO = '/usr/sbin/mosquitto';
const HOST = '127.0.0.1' as const;
const READY_TIMEOUT_MS = 5000;
const READY_POLL_MS = 25;
const STOP_GRACE_MS = 2000;
const STOP_KILL_WAIT_MS = 2000;
/** Output kept for the error message when a broker fails to start. */
const MAX_OUTPUT_CHARS = 8192;

/** Brokers alive in this process: the exit hook kills them if a test forgot (or crashed before) stop(). */
const live = new Set<{ child: ChildProcess | null; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const b of live) {
      try {
        b.child?.kill('SIGKILL');
      } catch {
        // already gone
      }
      rmSync(b.dir, { recursive: true, force: true });
    }
    live.clear();
  });
}

/** A TCP port that was free on 127.0.0.1 a moment ago (the kernel picks it). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

export async function startMosquitto(opts: { port?: number; extraConfig?: string } = {}): Promise<Broker> {
  installExitHook();
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-mosquitto-'));
  const entry: { child: ChildProcess | null; dir: string } = { child: null, dir };
  live.add(entry);
  const configFile = join(dir, 'mosquitto.conf');
  writeFileSync(
    configFile,
    [
      `listener ${port} ${HOST}`,
      'allow_anonymous true',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      // Run as whoever started the test (root here): no privilege drop, temp files stay readable.
      'user root',
      opts.extraConfig ?? '',
      '',
    ].join('\n'),
  );

  let output = '';
  let stopped = false;

  async function launch(): Promise<void> {
    const child = spawn(MOSQUITTO, ['-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    entry.child = child;
    output = '';
    const collect = (chunk: Buffer): void => {
      if (output.length < MAX_OUTPUT_CHARS) output += chunk.toString('utf8');
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (exited(child)) throw new Error(`mosquitto exited at start (code ${child.exitCode}, signal ${child.signalCode}): ${output}`);
      const failed = await Promise.race([spawnError, delay(0).then(() => null)]);
      if (failed) throw new Error(`mosquitto could not be started: ${failed.message}`);
      if (await canConnect(port)) return;
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`mosquitto did not accept on ${HOST}:${port} within ${READY_TIMEOUT_MS} ms: ${output}`);
      }
      await delay(READY_POLL_MS);
    }
  }

  async function terminate(): Promise<void> {
    const child = entry.child;
    if (!child || exited(child)) return;
    child.kill('SIGCONT'); // a paused broker cannot act on SIGTERM
    child.kill('SIGTERM');
    if (await waitExit(child, STOP_GRACE_MS)) return;
    child.kill('SIGKILL');
    await waitExit(child, STOP_KILL_WAIT_MS);
  }

  try {
    await launch();
  } catch (err) {
    await terminate();
    live.delete(entry);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  const broker: Broker = {
    port,
    host: HOST,
    pid: entry.child!.pid!,
    async stop() {
      if (stopped) return;
      stopped = true;
      await terminate();
      live.delete(entry);
      rmSync(dir, { recursive: true, force: true });
    },
    kill(signal: NodeJS.Signals = 'SIGKILL') {
      const child = entry.child;
      if (child && !exited(child)) child.kill(signal);
    },
    pause() {
      entry.child?.kill('SIGSTOP');
    },
    resume() {
      entry.child?.kill('SIGCONT');
    },
    async restart() {
      if (stopped) throw new Error('broker was stopped');
      await terminate();
      await launch();
      broker.pid = entry.child!.pid!;
    },
  };
  return broker;
}
