import { spawn } from 'node:child_process';
import net from 'node:net';
import { sleep } from './lb.js';

/**
 * A loopback port whose connects hang (SYNs dropped, as by a powered-off host or a firewall): a child process
 * listens with a backlog of 1, blocks its event loop so it never accepts, and three connections fill the queue.
 * What it started goes into `cleanups` (run them even on failure).
 */
export async function synDroppingPort(cleanups: Array<() => Promise<void> | void>): Promise<number> {
  const script = `const s = require('node:net').createServer();
s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
  process.stdout.write(String(s.address().port) + '\\n');
  for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // for good: the cleanup kills it
});`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => {
    child.kill('SIGKILL');
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the SYN-dropping listener did not start')), 5000);
    child.stdout.once('data', (d: Buffer) => {
      clearTimeout(timer);
      resolve(Number(String(d).trim()));
    });
  });
  for (let i = 0; i < 3; i++) {
    const filler = net.connect({ port, host: '127.0.0.1' });
    filler.on('error', () => undefined);
    cleanups.push(() => {
      filler.destroy();
    });
  }
  await sleep(200);
  return port;
}
