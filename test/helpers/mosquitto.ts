/**
 * Real Mosquitto brokers for tests, on free loopback ports, each in its own temp dir.
 *   const broker = await startMosquitto();            // listener 127.0.0.1:<free port>, anonymous
 *   ... broker.pause() / resume() (SIGSTOP/SIGCONT), broker.restart() (same port), broker.kill()
 *   await broker.stop();                              // always, e.g. in afterEach / finally
 * Every broker still running when the test process exits is SIGKILLed and its temp dir removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventWithin } from './events.js';

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
/**
 * A port to hand to a process that binds it later (a broker, an LB). Chosen BELOW the kernel's ephemeral
 * range: a port from listen(0) comes from that range, and until the other process binds it, any outgoing
 * connection (the storm tests open thousands) may take it as its source port. Each port is tried with a
 * real bind, and never handed out twice by this process.
 */
const handedOut = new Set<number>();

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 2048 ? low : 32768;
  } catch {
    return 32768;
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

/**
 * The part of the range this process draws from. vitest runs files in parallel worker processes, each with its
 * own `handedOut`: two workers could draw the same port, both see it bindable, and the second process to bind
 * it fails (seen once: an LB exiting 2 at start). Each worker (VITEST_POOL_ID 1..maxWorkers) gets its own slice.
 */
const PORT_SLICES = 8;

function portRange(): { low: number; high: number } {
  const top = ephemeralLow() - 1;
  const bottom = Math.max(1024, top - 20_000);
  const pool = Number(process.env.VITEST_POOL_ID);
  if (!Number.isInteger(pool) || pool < 1) return { low: bottom, high: top };
  const size = Math.floor((top - bottom + 1) / PORT_SLICES);
  const low = bottom + ((pool - 1) % PORT_SLICES) * size;
  return { low, high: low + size - 1 };
}

export async function freePort(): Promise<number> {
  const { low, high } = portRange();
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (handedOut.has(port)) continue;
    if (await bindable(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found in ${low}-${high} after 200 attempts`);
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
  return exited(child) ? Promise.resolve(true) : eventWithin(child, 'exit', ms);
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
