/**
 * Where log lines go: stdout, without ever blocking the balancer on it. With a blocking write, a log reader that
 * stopped reading (a stuck shipper, a pipe nobody drains, a journal that fell behind) stopped every session,
 * health check and heartbeat of the process at the first line that found the pipe full, and kept a stop from
 * ever ending. HAProxy logs into rings and datagrams for the same reason: what the buffer cannot hold is
 * dropped and counted, never waited for.
 *
 * - A pipe, a socket or a terminal is written non-blocking from the event loop (nonBlockingOutput): a line
 *   goes straight out when nothing is waiting (one write, as a synchronous logger does); when the reader is
 *   behind (EAGAIN), lines queue, up to `maxBytes`, and are retried every RETRY_MS. Past `maxBytes` lines are dropped, counted (the metric), and
 *   once the queue is empty again `onDropsEnded` hears how many.
 * - Queued lines go out in chunks of whole lines of at most PIPE_BUF bytes (a longer line alone): the lines of
 *   a cluster's processes, all writing to one inherited pipe, never interleave inside a line.
 * - A regular file is written as before, blocking: a disk does not stop reading.
 * - A stop calls `flush(cb)`: back once the queue is written, or after FLUSH_WAIT_MS. At process exit one more
 *   non-blocking pass writes what it can; nothing at exit can block.
 */
import fs from 'node:fs';
import net from 'node:net';
import { isatty } from 'node:tty';
import { escapeUnsafeInJson } from './unsafe-text.js';

/** Bytes a pipe write is atomic up to on Linux (PIPE_BUF). */
export const ATOMIC_WRITE_BYTES = 4096;
/** How long a stop waits for queued lines to be written. */
export const FLUSH_WAIT_MS = 2000;
/** How often queued lines are retried while the reader is behind. */
const RETRY_MS = 10;

/** fs.writeSync's shape: bytes written; throws EAGAIN when a non-blocking descriptor is full. */
export type WriteSome = (fd: number, data: Buffer | string) => number;

/** Log lines dropped by this process since start, for the metric (process-metrics.ts). */
let droppedLines = 0;
export function droppedLogLines(): number {
  return droppedLines;
}

/**
 * A descriptor to write `fd`'s log lines to without blocking.
 * - A pipe or a terminal is opened anew through /proc/self/fd with O_NONBLOCK: its own open file description, so
 *   whoever else holds it keeps their mode (libuv does the same for terminals). A terminal can stop reading too
 *   (XOFF, a stalled SSH session).
 * - Where that is refused (a pipe created by another user: the permission check is the pipe's, e.g. a container
 *   runtime's stdio pipes for a non-root image user) and for a socket (which cannot be opened anew), the shared
 *   description is made non-blocking the way Node does it for its own stdout: a stream handle on it, kept, never
 *   used, never closed. Others holding it (a cluster's workers, a shell's stderr with `2>&1`) see it non-blocking.
 * - A regular file or /dev/null is returned as it is.
 */
export function nonBlockingOutput(fd: number): number {
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
  } catch {
    return fd;
  }
  const tty = isatty(fd);
  if (st.isFIFO() || tty) {
    try {
      return fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
    } catch {
      if (tty) return fd; // left blocking: no stream handle writes to a terminal without reopening it
    }
  }
  if (st.isFIFO() || st.isSocket()) {
    try {
      keptHandles.push(new net.Socket({ fd, readable: false, writable: true }));
    } catch {
      // Left blocking.
    }
  }
  return fd;
}
const keptHandles: net.Socket[] = [];

export class LogStream {
  /** Lines waiting, from `head` on (taken by moving `head`; the arrays are compacted now and then). */
  private queue: string[] = [];
  private queueBytes: number[] = [];
  private head = 0;
  /** The unwritten rest of a chunk a write took only part of: goes out before the queue. */
  private partial: Buffer | null = null;
  /** Bytes in `partial` and the queue. */
  private queuedBytes = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Lines dropped since the last report. */
  private droppedSinceReport = 0;
  private flushWaiters: Array<() => void> = [];
  /** Told once the queue is empty again after drops (outside any write: it may log). */
  onDropsEnded: ((dropped: number) => void) | null = null;

  constructor(
    private readonly fd: number,
    private readonly maxBytes: number,
    private readonly writeSome: WriteSome = writeSync,
  ) {
    if (streamsAtExit.size === 0) process.once('exit', flushAllAtExit);
    streamsAtExit.add(this);
  }

  /** pino's destination interface: one JSON line per call. */
  write(json: string): void {
    // A client ID or username may hold characters that would make a terminal show the line other than it is.
    const line = escapeUnsafeInJson(json);
    const bytes = Buffer.byteLength(line);
    if (this.queuedBytes === 0) {
      // Nothing waiting: straight out.
      let n: number;
      try {
        n = this.writeSome(this.fd, line);
      } catch (err) {
        if (!isFull(err)) {
          this.drop(1);
          return;
        }
        n = 0;
      }
      if (n === bytes) return;
      if (n > 0) {
        this.partial = Buffer.from(line).subarray(n);
        this.queuedBytes = this.partial.length;
        this.armRetry();
        return;
      }
    }
    if (this.queuedBytes + bytes > this.maxBytes) {
      this.drop(1);
      return;
    }
    this.queue.push(line);
    this.queueBytes.push(bytes);
    this.queuedBytes += bytes;
    this.armRetry();
  }

  /** Calls back once everything queued is written, or after FLUSH_WAIT_MS. */
  flush(cb: (err?: Error) => void): void {
    if (this.queuedBytes === 0) {
      cb();
      return;
    }
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      cb();
    };
    const timer = setTimeout(finish, FLUSH_WAIT_MS);
    this.flushWaiters.push(finish);
  }

  /** Stops retrying and leaves the exit pass (what is queued is dropped). Idempotent. */
  close(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    streamsAtExit.delete(this);
  }

  /** The process is exiting: one more non-blocking pass over the queue (nothing here may block an exit). */
  flushSyncAtExit(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.writeQueued();
  }

  private armRetry(): void {
    if (this.retryTimer === null) this.retryTimer = setTimeout(onRetry, RETRY_MS, this);
  }

  /** Writes the queue until the reader is full again or it is empty. */
  retry(): void {
    this.retryTimer = null;
    this.writeQueued();
    if (this.queuedBytes > 0) {
      this.armRetry();
      return;
    }
    if (this.droppedSinceReport > 0) {
      const dropped = this.droppedSinceReport;
      this.droppedSinceReport = 0;
      this.onDropsEnded?.(dropped);
    }
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    for (const w of waiters) w();
  }

  private writeQueued(): void {
    while (this.queuedBytes > 0) {
      const chunk = this.partial ?? this.takeChunk();
      this.partial = null;
      let n: number;
      try {
        n = this.writeSome(this.fd, chunk);
      } catch (err) {
        if (isFull(err)) {
          this.partial = chunk;
          return;
        }
        // EPIPE (the reader is gone), EBADF, EIO: these lines are lost; later ones are still tried.
        this.queuedBytes -= chunk.length;
        this.drop(countLines(chunk));
        continue;
      }
      this.queuedBytes -= n;
      if (n < chunk.length) {
        this.partial = chunk.subarray(n);
        return;
      }
    }
  }

  /** Takes whole lines from the queue, up to ATOMIC_WRITE_BYTES (one longer line alone), into one write. */
  private takeChunk(): Buffer {
    const from = this.head;
    let end = from + 1;
    let bytes = this.queueBytes[from]!;
    while (end < this.queue.length && bytes + this.queueBytes[end]! <= ATOMIC_WRITE_BYTES) bytes += this.queueBytes[end++]!;
    const text = end === from + 1 ? this.queue[from]! : this.queue.slice(from, end).join('');
    if (end === this.queue.length) {
      this.queue = [];
      this.queueBytes = [];
      this.head = 0;
    } else if (end > 1024 && end * 2 > this.queue.length) {
      this.queue = this.queue.slice(end);
      this.queueBytes = this.queueBytes.slice(end);
      this.head = 0;
    } else {
      this.head = end;
    }
    return Buffer.from(text);
  }

  private drop(lines: number): void {
    this.droppedSinceReport += lines;
    droppedLines += lines;
  }
}

function writeSync(fd: number, data: Buffer | string): number {
  return typeof data === 'string' ? fs.writeSync(fd, data) : fs.writeSync(fd, data);
}

function onRetry(s: LogStream): void {
  s.retry();
}

function isFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EAGAIN' || code === 'EWOULDBLOCK';
}

const streamsAtExit = new Set<LogStream>();
function flushAllAtExit(): void {
  for (const s of streamsAtExit) s.flushSyncAtExit();
}

function countLines(chunk: Buffer): number {
  let lines = 0;
  for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
  return Math.max(lines, 1);
}
