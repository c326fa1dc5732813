import { spawn } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readProcStat } from '../../src/proc-stat.js';

describe('readProcStat', () => {
  it('reads name, state and parent, also when the name holds spaces and parentheses; null for no process', async () => {
    expect(readProcStat(process.pid)?.ppid).toBe(process.ppid);
    expect(readProcStat(2 ** 31)).toBeNull();
    const dir = await mkdtemp(join(tmpdir(), 'mqtt-lb-procstat-'));
    const odd = join(dir, 'a) (b ) c');
    await copyFile('/bin/sleep', odd);
    const child = spawn(odd, ['30'], { stdio: 'ignore' });
    try {
      await new Promise((resolve, reject) => child.once('spawn', resolve).once('error', reject));
      const ours = readProcStat(process.pid)!;
      expect(readProcStat(child.pid!)).toEqual({ comm: 'a) (b ) c', state: expect.stringMatching(/^[RS]$/), ppid: process.pid, pgrp: ours.pgrp });
    } finally {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
