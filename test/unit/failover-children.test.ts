/** The failover thread's children told to a watcher (src/failover/children.ts), as runCommand starts them. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { watchChildren, type RunningChild } from '../../src/failover/children.js';
import { runCommand } from '../../src/failover/command.js';

afterEach(() => watchChildren(null));

function recorder(): { events: string[]; running: Map<number, RunningChild> } {
  const events: string[] = [];
  const running = new Map<number, RunningChild>();
  watchChildren({
    started: (c) => {
      events.push(`started ${c.command}`);
      running.set(c.pid, c);
    },
    ended: (pid) => {
      events.push(running.has(pid) ? 'ended' : `ended unknown ${pid}`);
      running.delete(pid);
    },
  });
  return { events, running };
}

describe('watchChildren', () => {
  it('is told of each command run, with its pid, while it runs and when it ends', async () => {
    const { events, running } = recorder();
    const plain = runCommand('sh', ['-c', 'exit 3'], { timeoutMs: 5000 });
    expect([...running.values()].map((c) => c.command)).toEqual(['sh']); // known at once, before it ends
    expect((await plain).code).toBe(3);
    const hook = await runCommand('sh', ['-c', 'exit 0'], { timeoutMs: 5000, atProcessPriority: true });
    expect(hook.code).toBe(0);
    expect(events).toEqual(['started sh', 'ended', 'started sh', 'ended']);
    expect(running.size).toBe(0);
  });

  it('a command killed at its timeout, or that cannot run, leaves nothing running behind', async () => {
    const { events, running } = recorder();
    const r = await runCommand('sleep', ['5'], { timeoutMs: 100 });
    expect(r.timedOut).toBe(true);
    expect((await runCommand('/nonexistent/command', [], { timeoutMs: 1000 })).spawnError).toBe('ENOENT');
    expect((await runCommand('/nonexistent/command', [], { timeoutMs: 1000, atProcessPriority: true })).spawnError).toBe('ENOENT');
    expect(events.filter((e) => e.startsWith('started'))).toEqual(['started sleep']);
    expect(running.size).toBe(0);
    expect(events.some((e) => e.startsWith('ended unknown'))).toBe(false);
  });

  it('each command leads a process group of its own: a hang-up sent to mqtt-lb\'s group does not end an `ip` half way', async () => {
    // Field 5 of /proc/PID/stat is the process group, counted after the command name's closing parenthesis.
    const r = await runCommand('sh', ['-c', 'echo $$ $(sed "s/.*) //" /proc/$$/stat | cut -d" " -f3)'], { timeoutMs: 5000 });
    const [pid, pgrp] = r.stdout.trim().split(' ');
    expect(Number(pid)).toBeGreaterThan(0);
    expect(pgrp).toBe(pid);
  });

  // A signal sent to mqtt-lb's group between the fork and the child's setsid() ends the child before its exec (a
  // re-audit's SIGHUP storm): stood in for by a command that sends itself the signal as soon as it runs, with the
  // window stretched so that a loaded machine's scheduling cannot make it look as if it had run a while.
  it('a command ended by a group signal at once is run again (three runs at most); one that ran a while, or that we killed, is not', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqlb-cmd-'));
    try {
      const once = join(dir, 'once');
      const r = await runCommand('sh', ['-c', `if [ ! -e '${once}' ]; then : > '${once}'; kill -HUP $$; fi; echo ran`], { timeoutMs: 5000, preExecDeathMs: 3000 });
      expect(r).toMatchObject({ code: 0, signal: null, stdout: 'ran\n' });
      const runs = join(dir, 'runs');
      const always = await runCommand('sh', ['-c', `echo run >> '${runs}'; kill -TERM $$`], { timeoutMs: 5000, preExecDeathMs: 3000 });
      expect(always).toMatchObject({ code: null, signal: 'SIGTERM' });
      expect(readFileSync(runs, 'utf8')).toBe('run\nrun\nrun\n');
      // It ran (a hook's side effects may have happened): never again (a re-audit saw a hook's `stop` run twice).
      const ranFirst = join(dir, 'ran-first');
      const late = await runCommand('sh', ['-c', `echo run >> '${ranFirst}'; sleep 0.2; kill -TERM $$`], { timeoutMs: 5000 });
      expect(late.signal).toBe('SIGTERM');
      expect(readFileSync(ranFirst, 'utf8')).toBe('run\n');
      const slow = await runCommand('sleep', ['5'], { timeoutMs: 100 });
      expect(slow.timedOut).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('without a watcher (the main thread), commands run as before', async () => {
    expect((await runCommand('true', [], { timeoutMs: 1000 })).code).toBe(0);
  });
});
