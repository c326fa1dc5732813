import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, MqttLbError } from '../../src/errors.js';
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

  it("gives a line the code of an MqttLbError logged as err, and keeps a cause apart from the message", () => {
    const { stream, lines } = sink();
    const log = createLogger({ level: 'info', sessions: false, bufferBytes: 65_536 }, stream);
    const cause = Object.assign(new Error("ENOENT: no such file or directory, open 'lb.yaml'"), { code: 'ENOENT' });
    log.error({ err: new MqttLbError(ErrorCodes.CONFIG_READ, `cannot read config file lb.yaml: ${cause.message}`, { cause }) }, 'config reload failed');
    log.error({ err: cause }, 'not ours');
    log.error({ code: ErrorCodes.START_BIND, err: new MqttLbError(ErrorCodes.CONFIG_READ, 'x') }, 'explicit code wins');
    const dns = Object.assign(new Error('getaddrinfo ENOTFOUND broker.invalid'), { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname: 'broker.invalid' });
    log.warn({ err: dns }, 'the operating system\'s');
    const [ours, theirs, explicit, system] = lines();
    expect(ours).toMatchObject({ code: 'MQLB_CONFIG_READ', msg: 'config reload failed' });
    const err = ours!.err as { message: string; cause: { code: string } };
    expect(err.message).toBe("cannot read config file lb.yaml: ENOENT: no such file or directory, open 'lb.yaml'");
    expect(err.cause.code).toBe('ENOENT');
    expect(theirs!.code).toBeUndefined();
    expect(explicit!.code).toBe('MQLB_START_BIND');
    // Ours is an operator's error, said whole by its message: no stack trace, nor its cause's. Any other error is a
    // bug to report, and keeps its stack.
    expect(Object.keys(err)).not.toContain('stack');
    expect(Object.keys(err.cause)).not.toContain('stack');
    expect(typeof (theirs!.err as { stack?: unknown }).stack).toBe('string');
    // An OS error (syscall + errno code: a name that does not resolve) is an operator's too: said by its fields.
    expect(system!.err).toEqual({ type: 'Error', message: 'getaddrinfo ENOTFOUND broker.invalid', code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname: 'broker.invalid' });
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
