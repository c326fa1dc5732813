/**
 * What the command line prints (config problems, usage, status tables), written synchronously to the end.
 * process.stderr on a pipe writes what fits (64 KiB) and queues the rest, which the exit then discards: 2,000
 * config problems piped into a slow reader came out as 595 lines. Not for the running balancer's logs
 * (telemetry/log-stream.ts, which must never block).
 */
import { writeSync } from 'node:fs';

const SLEEP = new Int32Array(new SharedArrayBuffer(4));
const RETRY_MS = 5;
/** A reader that takes no byte for this long is given up on (the exit must come). */
const GIVE_UP_MS = 60_000;

function printSync(fd: number, text: string): void {
  const data = Buffer.from(text, 'utf8');
  let offset = 0;
  let waited = 0;
  while (offset < data.length) {
    try {
      offset += writeSync(fd, data, offset);
      waited = 0;
    } catch (err) {
      // A descriptor shared with a process that made it non-blocking: wait for the reader, as a blocking write would.
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN' && waited < GIVE_UP_MS) {
        Atomics.wait(SLEEP, 0, 0, RETRY_MS);
        waited += RETRY_MS;
        continue;
      }
      return; // EPIPE (the reader is gone), EBADF (closed): nobody to tell
    }
  }
}

export function printOut(text: string): void {
  printSync(1, text);
}

export function printErr(text: string): void {
  printSync(2, text);
}
