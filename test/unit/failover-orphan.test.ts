import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { killOrphanedChild, killOrphanedGroup, stopOrphan } from '../../src/failover/orphan.js';
import { isRunning } from '../helpers/processes.js';

describe('killOrphanedChild (a dead failover thread left its ip monitor running)', () => {
  it('signals a running child of this process with that name, and only such a one', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
      expect(child.pid).toBeGreaterThan(0);
      expect(killOrphanedChild(child.pid!, 'ip')).toBe(false); // another command
      expect(killOrphanedChild(process.pid, 'node')).toBe(false); // not our child
      expect(killOrphanedChild(1, 'systemd')).toBe(false);
      expect(killOrphanedChild(0, 'sleep')).toBe(false);
      expect(killOrphanedChild(-1, 'sleep')).toBe(false);
      expect(killOrphanedChild(2 ** 31, 'sleep')).toBe(false); // no such process
      expect(killOrphanedChild(child.pid!, 'sleep')).toBe(true);
      expect(await exited).toBe('SIGTERM');
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('killOrphanedGroup (a notify hook that hangs when its thread dies)', () => {
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

  it('stopOrphan picks by how the child was started', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
      expect(stopOrphan({ pid: child.pid!, command: '/bin/sleep', group: true })).toBe(false); // not a group leader
      expect(stopOrphan({ pid: child.pid!, command: '/bin/sleep', group: false })).toBe(true); // by its basename
      expect(await exited).toBe('SIGTERM');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
