/**
 * Start the BUILT mqtt-lb (dist/src/cli.js, as users run it) on a temp config, wait until it serves,
 * stop it, and read its logs. `npm test` builds first; run `npx tsc -p .` before running a file alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/src/cli.js');
export const LAUNCHER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/mqtt-lb');

export interface LbProcess {
  proc: ChildProcess;
  dir: string;
  configFile: string;
  /** Every log line (JSON parsed when possible). */
  logs: Array<Record<string, unknown>>;
  stderr: string[];
  writeConfig(yaml: string): void;
  reload(): void;
  /** SIGTERM and wait for exit (bounded); returns the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
  waitForLog(match: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

const live = new Set<LbProcess>();

// A test worker that ends without its cleanups (vitest kills a file's worker at a hook timeout) takes its balancers
// with it, as mosquitto.ts does its brokers.
process.once('exit', () => {
  for (const lb of live) {
    try {
      lb.proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/**
 * Test balancers start without the JIT warm-up (src/warm-up.ts: a few seconds of CPU per start, hundreds of starts
 * here on two cores) unless the file sets `warmUp` itself (test/integration/warm-up.test.ts does). A file without a
 * top-level `listeners:` line (empty, or a deliberate error) is left as it is.
 */
export function withoutWarmUp(yaml: string): string {
  if (/^warmUp\s*:/m.test(yaml) || !/^listeners\s*:/m.test(yaml)) return yaml;
  return `${yaml}${yaml.endsWith('\n') ? '' : '\n'}warmUp: 0\n`;
}

/**
 * `launcher`: start through bin/mqtt-lb (what `npx mqtt-lb` and the systemd unit run: the shipped Node and
 * malloc settings; same PID, it execs node) instead of plain `node dist/src/cli.js`.
 */
export async function startLb(yaml: string, opts: { waitPort?: number; waitReady?: string; env?: NodeJS.ProcessEnv; args?: string[]; launcher?: boolean; fileLimit?: number } = {}): Promise<LbProcess> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-test-'));
  const configFile = path.join(dir, 'lb.yaml');
  writeFileSync(configFile, withoutWarmUp(yaml));
  const args = ['--config', configFile, ...(opts.args ?? [])];
  // The launcher runs `node` from PATH: put this Node first.
  const env = { ...process.env, ...opts.env, ...(opts.launcher === true ? { PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` } : {}) };
  const [command, commandArgs] = opts.launcher === true ? [LAUNCHER, args] : [process.execPath, [CLI, ...args]];
  // An open-file limit of its own (the test process keeps its own): the shell sets it and becomes the LB (exec: same PID).
  const proc =
    opts.fileLimit === undefined
      ? spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'], env })
      : spawn('sh', ['-c', `ulimit -n ${opts.fileLimit} && exec "$0" "$@"`, command, ...commandArgs], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const logs: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  collectLogLines(proc.stdout!, logs, () => {
    for (const w of waiters) w();
  });
  proc.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const lb: LbProcess = {
    proc,
    dir,
    configFile,
    logs,
    stderr,
    exited,
    writeConfig(y) {
      // Written beside and renamed into place, as operations.md tells operators: a reload never reads half a file.
      writeFileSync(`${configFile}.new`, withoutWarmUp(y));
      renameSync(`${configFile}.new`, configFile);
    },
    reload() {
      proc.kill('SIGHUP');
    },
    async stop(timeoutMs = 15_000) {
      live.delete(lb);
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
        const code = await exited;
        clearTimeout(t);
        rmSync(dir, { recursive: true, force: true });
        return code;
      }
      rmSync(dir, { recursive: true, force: true });
      return proc.exitCode;
    },
    waitForLog(match, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const found = logs.find(match);
        if (found) return resolve(found);
        const check = (): void => {
          const f = logs.find(match);
          if (f) {
            waiters.delete(check);
            clearTimeout(t);
            resolve(f);
          }
        };
        const t = setTimeout(() => {
          waiters.delete(check);
          const recent = logs.slice(-20).map((l) => JSON.stringify(l).slice(0, 300));
          reject(new Error(`log line not seen within ${timeoutMs} ms; stderr: ${stderr.join('')}\nlast log lines:\n${recent.join('\n')}`));
        }, timeoutMs);
        waiters.add(check);
      });
    },
  };
  live.add(lb);
  if (opts.waitReady !== undefined) await waitReady(opts.waitReady, lb);
  else if (opts.waitPort !== undefined) await waitPort(opts.waitPort, lb);
  return lb;
}

/** Each line of `stream` into `into`: parsed as JSON (pino), else as `{ msg: line }`; `onLine` after each. */
export function collectLogLines(stream: Readable, into: Array<Record<string, unknown>>, onLine?: () => void): void {
  let buf = '';
  stream.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        into.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        into.push({ msg: line });
      }
      onLine?.();
    }
  });
}

/** Kill whatever a failed test left running. */
export async function stopAllLbs(): Promise<void> {
  await Promise.all([...live].map((l) => l.stop()));
}

export async function waitPort(port: number, lb?: LbProcess, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (lb !== undefined && lb.proc.exitCode !== null) throw new Error(`mqtt-lb exited with ${lb.proc.exitCode}: ${lb.stderr.join('')}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`port ${port} not accepting within ${timeoutMs} ms`);
}

/** Wait until GET url answers 200 (e.g. the admin /readyz). */
export async function waitReady(url: string, lb?: LbProcess, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    if (lb !== undefined && lb.proc.exitCode !== null) throw new Error(`mqtt-lb exited with ${lb.proc.exitCode}: ${lb.stderr.join('')}`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      last = `${r.status} ${await r.text()}`;
      if (r.status === 200) return;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`${url} not ready within ${timeoutMs} ms (last: ${last})`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `cond` every 20 ms until true; throws `timed out waiting for <what>` after `timeoutMs`. */
export async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * The two socket engines of the proxy (src/proxy/handle-socket.ts): Node's handles for plain TCP, which the
 * LB picks on this Node, and net.Socket (MQTT_LB_SOCKETS=net, also the fallback). Tests of the data path run
 * against both; `socketEngineOf` reads which one the LB really uses (its start log, level info).
 */
export const SOCKET_ENGINES: ReadonlyArray<{ engine: 'handles' | 'net'; env: NodeJS.ProcessEnv }> = [
  { engine: 'handles', env: { MQTT_LB_SOCKETS: '' } },
  { engine: 'net', env: { MQTT_LB_SOCKETS: 'net' } },
];

export async function socketEngineOf(lb: LbProcess): Promise<unknown> {
  const started = await lb.waitForLog((l) => l.msg === 'mqtt-lb started');
  return started.sockets;
}
