/**
 * The notify hook runner with a real hook script: calls merged while one runs, and a timeout that kills the
 * hook's children too.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NotifyRunner } from '../../src/failover/notify.js';
import type { LogSink } from '../../src/failover/log.js';

let dir: string;
const errors: string[] = [];
const log: LogSink = { debug() {}, info() {}, warn() {}, error: (_o, msg) => void errors.push(msg) };

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-notify-'));
  errors.length = 0;
});
afterEach(() => {
  // A child the test let loose (the old runner left it running) must not outlive the test.
  const pidFile = join(dir, 'child.pid');
  if (existsSync(pidFile)) {
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
    } catch {
      // gone, as it should be
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

function hook(body: string): string {
  const file = join(dir, 'notify.sh');
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

/** Running: a process that exists and is not a zombie (an orphan waits for its reaper, pid 1 here). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe('NotifyRunner', () => {
  it('runs calls one at a time, in order, merging those that wait behind a running hook into the latest state', async () => {
    const calls = join(dir, 'calls');
    const runner = new NotifyRunner(hook(`echo "$1 $2" >> ${calls}; sleep 0.3`), log);
    // A flap while the first call runs: router 51 ends at master, router 52 at backup.
    runner.run('backup', 51);
    for (const s of ['master', 'backup', 'master', 'fault', 'master'] as const) runner.run(s, 51);
    runner.run('master', 52);
    runner.run('backup', 52);
    await runner.idle();
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual(['backup 51', 'master 51', 'backup 52']);
    // Back to the state the hook was last told while the merged call waited: nothing more to tell.
    runner.run('backup', 51);
    runner.run('master', 51);
    runner.run('backup', 51);
    await runner.idle();
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual(['backup 51', 'master 51', 'backup 52', 'backup 51']);
    expect(errors).toEqual([]);
  });

  it("kills the hook's own children at its timeout, so that a hung hook frees the queue at the timeout", async () => {
    const calls = join(dir, 'calls');
    const pidFile = join(dir, 'child.pid');
    // The hook starts a child that holds its output pipe and waits for it (a `curl` that hangs).
    const runner = new NotifyRunner(hook(`echo "$1" >> ${calls}\nif [ "$1" = backup ]; then sleep 30 & echo $! > ${pidFile}; wait; fi`), log, 400);
    const started = Date.now();
    runner.run('backup', 51);
    runner.run('master', 51);
    await runner.idle();
    const took = Date.now() - started;
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual(['backup', 'master']);
    expect(took).toBeLessThan(5_000);
    expect(errors).toEqual(['failover notify hook failed']);
    const child = Number(readFileSync(pidFile, 'utf8'));
    // SIGKILL to the group is delivered at once; allow the kernel a moment to reap.
    for (let i = 0; i < 50 && alive(child); i++) await new Promise((r) => setTimeout(r, 20));
    expect(alive(child)).toBe(false);
  });
});
