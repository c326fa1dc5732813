/**
 * The notify hook runner with a real hook script: calls merged while one runs, and a timeout that kills the
 * hook's children too.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { NotifyRunner } from '../../src/failover/notify.js';
import { runCommand } from '../../src/failover/command.js';
import type { LogSink } from '../../src/failover/log.js';
import { ROOT, ensureDistBuilt } from '../helpers/dist-build.js';
import { isRunning, readPidFile, waitForPidFile } from '../helpers/processes.js';
import { readProcStat } from '../../src/proc-stat.js';

let dir: string;
const errors: string[] = [];
const log: LogSink = { debug() {}, info() {}, warn() {}, error: (_o, msg) => void errors.push(msg) };

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-notify-'));
  errors.length = 0;
});
afterEach(() => {
  // A child the test let loose (the old runner left it running) must not outlive the test.
  // Only a child still running as `sleep`: once gone, its pid may be another process's.
  const pid = readPidFile(join(dir, 'child.pid'));
  if (pid !== null && isRunning(pid) && readProcStat(pid)?.comm === 'sleep') {
    try {
      process.kill(pid, 'SIGKILL');
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

  // spawn() at EMFILE returns a child with no pipes and says so a tick later: the runner threw on the missing pipe,
  // which killed the failover thread, and the notify queue stayed wedged for good.
  it('a hook that cannot be started (no descriptor left) is a logged failure, and the next call runs', () => {
    ensureDistBuilt(['dist/src/failover/notify.js', 'dist/src/failover/command.js']);
    const script = join(dir, 'emfile.mjs');
    writeFileSync(
      script,
      `import { openSync, closeSync } from 'node:fs';
const dist = ${JSON.stringify(join(ROOT, 'dist/src/failover'))};
const { NotifyRunner } = await import(dist + '/notify.js');
const errors = [];
const log = { debug() {}, info() {}, warn() {}, error: (o, m) => errors.push(o.detail) };
process.on('uncaughtException', (e) => errors.push('uncaught ' + (e.code ?? e.message)));
process.on('unhandledRejection', (e) => errors.push('unhandled ' + e?.message));
const calls = ${JSON.stringify(join(dir, 'calls'))};
const runner = new NotifyRunner(${JSON.stringify(hook(`echo "$1" >> ${join(dir, 'calls')}`))}, log, 5000);
const fds = [];
try { for (let i = 0; i < 1000; i++) fds.push(openSync('/dev/null', 'r')); } catch {}
runner.run('master', 51);
await runner.idle();
for (const fd of fds) closeSync(fd);
runner.run('backup', 51);
await runner.idle();
console.log(JSON.stringify(errors));
`,
    );
    const out = execFileSync('/bin/sh', ['-c', `ulimit -n 64 && exec ${JSON.stringify(process.execPath)} ${JSON.stringify(script)}`], { encoding: 'utf8', timeout: 20_000 });
    expect(JSON.parse(out)).toEqual([expect.stringMatching(/notify\.sh master 51: cannot run \(EMFILE\)$/)]);
    expect(readFileSync(join(dir, 'calls'), 'utf8')).toBe('backup\n');
  });

  it("kills the hook's own children at its timeout, so that a hung hook frees the queue at the timeout", async () => {
    const calls = join(dir, 'calls');
    const pidFile = join(dir, 'child.pid');
    // The hook starts a child that holds its output pipe and waits for it (a `curl` that hangs).
    const runner = new NotifyRunner(hook(`echo "$1" >> ${calls}\nif [ "$1" = backup ]; then sleep 30 & echo $! > ${pidFile}; wait; fi`), log, 1500);
    const started = Date.now();
    runner.run('backup', 51);
    runner.run('master', 51);
    await runner.idle();
    const took = Date.now() - started;
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual(['backup', 'master']);
    expect(took).toBeLessThan(5_000);
    expect(errors).toEqual(['failover notify hook failed']);
    const child = readPidFile(pidFile);
    expect(child).not.toBeNull();
    // SIGKILL to the group is delivered at once; allow the kernel a moment to reap.
    for (let i = 0; i < 50 && isRunning(child!); i++) await new Promise((r) => setTimeout(r, 20));
    expect(isRunning(child!)).toBe(false);
  });

  it('a process that left the hook\'s group (setsid) does not hold the result past the timeout', async () => {
    const pidFile = join(dir, 'child.pid');
    const started = Date.now();
    const r = await runCommand('/bin/sh', ['-c', `setsid sleep 30 & echo $! > ${pidFile}; sleep 30`], { timeoutMs: 400, atProcessPriority: true });
    expect(r.timedOut).toBe(true);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  // At a stop that cannot wait: a hung hook was left running after mqtt-lb exited, and `stop` behind it never ran.
  it('cutRunning() kills the running hook with its children; the call queued behind it runs', async () => {
    const calls = join(dir, 'calls');
    const pidFile = join(dir, 'child.pid');
    const runner = new NotifyRunner(hook(`echo "$1" >> ${calls}\nif [ "$1" = backup ]; then sleep 30 & echo $! > ${pidFile}; wait; fi`), log);
    runner.run('backup', 51);
    runner.run('stop', 51);
    // The whole pid, not just the file: the shell creates it before it writes (readPidFile).
    const child = await waitForPidFile(pidFile);
    expect(runner.cutRunning()).toBe(true);
    await runner.idle();
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual(['backup', 'stop']);
    for (let i = 0; i < 50 && isRunning(child); i++) await new Promise((r) => setTimeout(r, 20));
    expect(isRunning(child)).toBe(false);
    expect(errors).toEqual(['failover notify hook failed']); // the cut call, said
    expect(runner.cutRunning()).toBe(false);
  });

  it('close() at the end of a stop: the running hook is killed, even one whose child left its group, and nothing more starts', async () => {
    const calls = join(dir, 'calls');
    const pidFile = join(dir, 'child.pid');
    const runner = new NotifyRunner(hook(`echo "$1 $2" >> ${calls}\nsetsid sleep 30 & echo $! > ${pidFile}\nsleep 30`), log);
    runner.run('stop', 51);
    runner.run('stop', 52);
    await waitForPidFile(pidFile);
    const started = Date.now();
    await runner.close();
    expect(Date.now() - started).toBeLessThan(5_000); // not the 30 s of the escaped child's pipe
    runner.run('stop', 53);
    await runner.idle();
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toEqual(['stop 51']);
    expect(runner.cutRunning()).toBe(false);
  });
});
