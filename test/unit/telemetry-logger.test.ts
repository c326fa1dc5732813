import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/telemetry/logger.js';

function sink(): { stream: Writable; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return { stream, lines: () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('createLogger', () => {
  it('writes JSON lines at the configured level and above', () => {
    const { stream, lines } = sink();
    const log = createLogger({ level: 'info', sessions: false, bufferBytes: 65_536 }, stream);
    log.debug('hidden');
    log.info({ server: 'b1', from: 'up', to: 'down' }, 'server state changed');
    log.child({ component: 'health' }).warn({ err: new Error('boom') }, 'probe failed');
    const got = lines();
    expect(got).toHaveLength(2);
    expect(got[0]).toMatchObject({ level: 30, name: 'mqtt-lb', msg: 'server state changed', server: 'b1', from: 'up', to: 'down' });
    expect(typeof got[0]!.time).toBe('string');
    expect(new Date(got[0]!.time as string).toISOString()).toBe(got[0]!.time);
    expect(got[1]).toMatchObject({ level: 40, component: 'health', msg: 'probe failed' });
    expect((got[1]!.err as { message: string; stack: string }).message).toBe('boom');
  });

  it('honours silent and debug', () => {
    const quiet = sink();
    createLogger({ level: 'silent', sessions: false, bufferBytes: 65_536 }, quiet.stream).error('nothing');
    expect(quiet.lines()).toEqual([]);
    const loud = sink();
    const log = createLogger({ level: 'debug', sessions: false, bufferBytes: 65_536 }, loud.stream);
    log.debug('shown');
    expect(log.isLevelEnabled('trace')).toBe(false);
    expect(loud.lines()).toHaveLength(1);
  });

  it('never writes a password', () => {
    const { stream, lines } = sink();
    const log = createLogger({ level: 'info', sessions: false, bufferBytes: 65_536 }, stream);
    log.info({ password: 'hunter2', probe: { username: 'u', password: 'hunter2' } }, 'probe config');
    const line = JSON.stringify(lines());
    expect(line).not.toContain('hunter2');
    expect(line).toContain('[redacted]');
  });
});
