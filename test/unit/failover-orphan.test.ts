import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { killOrphanedGroup, stopOrphan } from '../../src/failover/orphan.js';
import { isRunning } from '../helpers/processes.js';

describe('killOrphanedGroup (a notify hook that hangs, or the ip monitor, when its thread dies)', () => {
  it("kills the group a child of ours leads, what the hook started too, and nothing that is not such a group", async () => {
    // A hook as runCommand starts it: a group of its own, with a child of its own (`sleep &`).
    const hook = spawn('sh', ['-c', 'sleep 30 & echo $!; wait'], { detached: true, stdio: ['ignore', 'pipe', 'ignore'] });
    const plain = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const grandchild = Number(await new Promise<string>((resolve) => hook.stdout!.once('data', (d: Buffer) => resolve(String(d).trim()))));
      expect(grandchild).toBeGreaterThan(0);
      const hookExited = new Promise<NodeJS.Signals | null>((resolve) => hook.once('exit', (_code, signal) => resolve(signal)));
      expect(killOrphanedGroup(plain.pid!)).toBe(false); // our child, but in our group
      expect(killOrphanedGroup(process.pid)).toBe(false);
      expect(killOrphanedGroup(0)).toBe(false);
      expect(killOrphanedGroup(2 ** 31)).toBe(false);
      expect(killOrphanedGroup(hook.pid!)).toBe(true);
      expect(await hookExited).toBe('SIGKILL');
      // The hook's own child went with the group (reparented and reaped, or a zombie on its way out).
      await expect.poll(() => isRunning(grandchild), { timeout: 2000, interval: 20 }).toBe(false);
      expect(plain.exitCode).toBeNull();
    } finally {
      hook.kill('SIGKILL');
      plain.kill('SIGKILL');
    }
  });

  it('stopOrphan stops a child as runCommand starts it (its own group), and not one in our group', async () => {
    const plain = spawn('sleep', ['30'], { stdio: 'ignore' });
    const own = spawn('sleep', ['30'], { detached: true, stdio: 'ignore' });
    try {
      const exited = new Promise<NodeJS.Signals | null>((resolve) => own.once('exit', (_code, signal) => resolve(signal)));
      expect(stopOrphan({ pid: plain.pid!, command: '/bin/sleep' })).toBe(false); // not a group leader
      expect(stopOrphan({ pid: own.pid!, command: 'ip' })).toBe(true); // the name is not checked
      expect(await exited).toBe('SIGKILL');
      expect(plain.exitCode).toBeNull();
    } finally {
      plain.kill('SIGKILL');
      own.kill('SIGKILL');
    }
  });
});
