import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { killOrphanedChild } from '../../src/failover/orphan.js';

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
