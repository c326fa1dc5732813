import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ATOMIC_WRITE_BYTES, FLUSH_WAIT_MS, LogStream, droppedLogLines, type WriteSome } from '../../src/telemetry/log-stream.js';

type Mode = 'ok' | 'full' | 'half' | 'epipe';

/** A stand-in for a non-blocking fs.writeSync: writes, is full (EAGAIN), takes half, or the reader is gone. */
function reader(): { write: WriteSome; chunks: string[]; setMode(m: Mode): void } {
  const chunks: string[] = [];
  let mode: Mode = 'ok';
  const write: WriteSome = (_fd, data) => {
    if (mode === 'full') throw Object.assign(new Error('write EAGAIN'), { code: 'EAGAIN' });
    if (mode === 'epipe') throw Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
    const buf = Buffer.from(data);
    const n = mode === 'half' ? Math.ceil(buf.length / 2) : buf.length;
    chunks.push(buf.subarray(0, n).toString('latin1'));
    return n;
  };
  return { write, chunks, setMode: (m) => (mode = m) };
}

const line = (i: number, size = 100): string => JSON.stringify({ i, pad: 'x'.repeat(Math.max(0, size - 20)) }) + '\n';
/** Lets the retry timer run until the queue is written or `rounds` retries have passed. */
const retries = (rounds = 200): void => {
  for (let i = 0; i < rounds && vi.getTimerCount() > 0; i++) vi.advanceTimersToNextTimer();
};

const streams: LogStream[] = [];
function stream(maxBytes: number, write: WriteSome): LogStream {
  const s = new LogStream(99, maxBytes, write);
  streams.push(s);
  return s;
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  for (const s of streams.splice(0)) s.close();
  vi.useRealTimers();
});

describe('LogStream', () => {
  it('writes a line straight out when nothing waits: one write per line, no timer', () => {
    const r = reader();
    const s = stream(1 << 20, r.write);
    const lines = [line(1), line(2, 9000), line(3)];
    for (const l of lines) s.write(l);
    expect(r.chunks).toEqual(lines);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('queues while the reader is full and writes it in order, in chunks of whole lines of at most PIPE_BUF (a longer line alone)', () => {
    const r = reader();
    const s = stream(1 << 20, r.write);
    r.setMode('full');
    const lines = [...Array.from({ length: 100 }, (_, i) => line(i)), line(100, 10_000), ...Array.from({ length: 100 }, (_, i) => line(101 + i, 333))];
    for (const l of lines) s.write(l);
    expect(r.chunks).toEqual([]);
    r.setMode('ok');
    retries();
    expect(r.chunks.join('')).toBe(lines.join(''));
    expect(r.chunks.length).toBeLessThan(lines.length / 4);
    for (const c of r.chunks) {
      expect(c.endsWith('\n')).toBe(true);
      if (Buffer.byteLength(c) > ATOMIC_WRITE_BYTES) expect(c).toBe(lines[100]);
    }
  });

  it('finishes partial writes before anything else, in order', () => {
    const r = reader();
    const s = stream(1 << 20, r.write);
    r.setMode('half');
    const lines = Array.from({ length: 50 }, (_, i) => line(i, 250));
    for (const l of lines) s.write(l);
    retries(1000);
    expect(r.chunks.join('')).toBe(lines.join(''));
  });

  it('drops lines past maxBytes while the reader is full, counts them, and reports them once the queue is written', () => {
    const r = reader();
    const s = stream(1000, r.write);
    const reports: number[] = [];
    s.onDropsEnded = (n) => reports.push(n);
    const before = droppedLogLines();
    r.setMode('full');
    const lines = Array.from({ length: 20 }, (_, i) => line(i)); // 100 bytes each: 10 fit
    for (const l of lines) s.write(l);
    expect(droppedLogLines() - before).toBe(10);
    vi.advanceTimersToNextTimer();
    expect(reports).toEqual([]); // still full: nothing written, nothing reported
    r.setMode('ok');
    retries();
    expect(r.chunks.join('')).toBe(lines.slice(0, 10).join(''));
    expect(reports).toEqual([10]);
    s.write(line(99));
    retries();
    expect(reports).toEqual([10]);
  });

  it('counts the lines of a failed write (EPIPE) as dropped, queued or not, and goes on with later lines', () => {
    const r = reader();
    const s = stream(1 << 20, r.write);
    const before = droppedLogLines();
    r.setMode('epipe');
    s.write(line(1));
    expect(droppedLogLines() - before).toBe(1);
    r.setMode('full');
    s.write(line(2));
    s.write(line(3));
    r.setMode('epipe');
    retries();
    expect(droppedLogLines() - before).toBe(3);
    r.setMode('ok');
    s.write(line(4));
    expect(r.chunks).toEqual([line(4)]);
  });

  it('calls a flush back once the queue is written, and after FLUSH_WAIT_MS at most when the reader stays full', () => {
    const r = reader();
    const s = stream(1 << 20, r.write);
    let flushed = 0;
    s.flush(() => flushed++);
    expect(flushed).toBe(1); // nothing queued
    r.setMode('full');
    s.write(line(1));
    s.flush(() => flushed++);
    vi.advanceTimersByTime(FLUSH_WAIT_MS - 1);
    expect(flushed).toBe(1);
    vi.advanceTimersByTime(1);
    expect(flushed).toBe(2);
    s.flush(() => flushed++);
    r.setMode('ok');
    retries();
    expect(flushed).toBe(3);
    vi.advanceTimersByTime(FLUSH_WAIT_MS); // called back once only
    expect(flushed).toBe(3);
  });

  it('at exit writes what the reader takes, and never waits for one that is full', () => {
    const r = reader();
    const s = stream(1 << 20, r.write);
    r.setMode('full');
    s.write(line(1));
    s.write(line(2));
    s.flushSyncAtExit(); // full: returns at once
    expect(r.chunks).toEqual([]);
    r.setMode('ok');
    s.flushSyncAtExit();
    expect(r.chunks.join('')).toBe(line(1) + line(2));
  });

  it('writes the characters that would make a terminal show a line other than it is as JSON escapes: the parsed line keeps them, the bytes do not', () => {
    const written: Buffer[] = [];
    const s = stream(1 << 20, (_fd, data) => {
      const buf = Buffer.from(data);
      written.push(buf);
      return buf.length;
    });
    // A client's choice of client ID: a right-to-left override, a line separator, a zero-width space, a C1 CSI, DEL.
    const clientId = 'good\u202e\u2028evil\u200b\u009b2J\u007f\u00ad\u180e\ufff9\u{e0041} é 日本 🙂';
    pino({ base: null, timestamp: false }, s).info({ clientId }, 'session closed');
    const text = Buffer.concat(written).toString('utf8');
    expect(text).toBe('{"level":30,"clientId":"good\\u202e\\u2028evil\\u200b\\u009b2J\\u007f\\u00ad\\u180e\\ufff9\\udb40\\udc41 é 日本 🙂","msg":"session closed"}\n');
    expect(JSON.parse(text).clientId).toBe(clientId);
  });
});
