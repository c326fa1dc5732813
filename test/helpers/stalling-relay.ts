import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep } from './lb.js';

/**
 * A TCP relay to a broker on loopback whose handshakes can be made to hang, for a dial that must still be in flight
 * when something happens: `stall()` blocks the relay's event loop (a child process, so that the test's own loop runs
 * on) and fills its accept queue (backlog 1), so a connect's SYNs are dropped; `release()` lets it accept again, and a
 * dial made meanwhile completes at its next SYN retransmit (1 s, then 3 s, after its first SYN). What it started goes
 * into `cleanups` (run them even on failure).
 */
export interface StallingRelay {
  port: number;
  stall(): Promise<void>;
  release(): void;
}

export async function stallingRelay(targetPort: number, cleanups: Array<() => Promise<void> | void>): Promise<StallingRelay> {
  const dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-relay-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const releaseFlag = join(dir, 'release');
  const script = `const net = require('node:net');
const fs = require('node:fs');
const [target, flag] = [Number(process.argv[1]), process.argv[2]];
const s = net.createServer((c) => {
  const u = net.connect(target, '127.0.0.1');
  c.on('error', () => u.destroy());
  u.on('error', () => c.destroy());
  c.pipe(u).pipe(c);
});
s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => process.stdout.write(String(s.address().port) + '\\n'));
process.stdin.on('data', () => {
  process.stdout.write('stalled\\n');
  const cell = new Int32Array(new SharedArrayBuffer(4));
  // Blocked (no accept) until the flag file appears; bounded, as every wait in a test.
  for (let i = 0; i < 600 && !fs.existsSync(flag); i++) Atomics.wait(cell, 0, 0, 50);
  fs.rmSync(flag, { force: true });
});`;
  const child = spawn(process.execPath, ['-e', script, String(targetPort), releaseFlag], { stdio: ['pipe', 'pipe', 'inherit'] });
  cleanups.push(() => {
    child.kill('SIGKILL');
  });
  const lines: string[] = [];
  let waiter: (() => void) | null = null;
  child.stdout.on('data', (d: Buffer) => {
    lines.push(...String(d).split('\n').filter((l) => l !== ''));
    waiter?.();
  });
  const nextLine = async (what: string): Promise<string> => {
    for (let i = 0; i < 100 && lines.length === 0; i++) {
      await new Promise<void>((resolve) => {
        waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
    waiter = null;
    const line = lines.shift();
    if (line === undefined) throw new Error(`the stalling relay did not say ${what}`);
    return line;
  };
  const port = Number(await nextLine('its port'));
  const fillers: net.Socket[] = [];
  return {
    port,
    async stall() {
      child.stdin.write('stall\n');
      await nextLine('it stalled');
      for (let i = 0; i < 3; i++) {
        const filler = net.connect({ port, host: '127.0.0.1' });
        filler.on('error', () => undefined);
        fillers.push(filler);
        cleanups.push(() => {
          filler.destroy();
        });
      }
      await sleep(200);
    },
    release() {
      for (const f of fillers.splice(0)) f.destroy();
      writeFileSync(releaseFlag, '');
    },
  };
}
