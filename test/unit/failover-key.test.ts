import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, MqttLbError } from '../../src/errors.js';
import { generateKey, keyProblem, parseKey, readKeyFile } from '../../src/failover/key.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mqtt-lb-key-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function expectKeyError(fn: () => unknown, pattern: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MqttLbError);
    expect((err as MqttLbError).code).toBe(ErrorCodes.FAILOVER_KEY);
    expect((err as Error).message).toMatch(pattern);
    return;
  }
  throw new Error('expected a FAILOVER_KEY error');
}

describe('failover key', () => {
  it('generateKey: base64 of 32 random bytes, different each time', () => {
    const a = generateKey();
    expect(a).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(a, 'base64')).toHaveLength(32);
    expect(generateKey()).not.toBe(a);
  });

  it('parses one line, with or without a trailing newline (LF or CRLF)', () => {
    const k = generateKey();
    expect(parseKey(k, 'f')).toEqual(Buffer.from(k, 'base64'));
    expect(parseKey(`${k}\n`, 'f')).toEqual(Buffer.from(k, 'base64'));
    expect(parseKey(`${k}\r\n`, 'f')).toEqual(Buffer.from(k, 'base64'));
  });

  it('refuses anything else with a clear message naming the file', () => {
    const k = generateKey();
    expectKeyError(() => parseKey('', '/etc/k'), /\/etc\/k: .*empty file.*mqtt-lb keygen/);
    expectKeyError(() => parseKey(`${k}\n${k}\n`, '/etc/k'), /exactly one base64 line .*2 lines/);
    expectKeyError(() => parseKey(Buffer.alloc(16).toString('base64'), '/etc/k'), /found 16 bytes/);
    expectKeyError(() => parseKey('not base64 at all!', '/etc/k'), /not base64/);
  });

  it('never advises `keygen > FILE` for a file that exists: it may be a TLS key named by mistake', () => {
    const pem = '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB7W\n-----END PRIVATE KEY-----\n';
    for (const text of [pem, '', 'c2hvcnQ=']) {
      expect(keyProblem(text)).toMatch(/is it the right file\? `mqtt-lb keygen` prints a new key/);
      expect(keyProblem(text)).not.toMatch(/keygen >/);
    }
    expect(keyProblem(generateKey())).toBeNull();
  });

  it('readKeyFile: reads, and reports a missing file', async () => {
    const file = join(dir, 'failover.key');
    const k = generateKey();
    await writeFile(file, `${k}\n`);
    await chmod(file, 0o600);
    expect(await readKeyFile(file)).toEqual({ key: Buffer.from(k, 'base64') });
    await expect(readKeyFile(join(dir, 'missing.key'))).rejects.toMatchObject({
      code: ErrorCodes.FAILOVER_KEY,
      message: expect.stringMatching(/missing\.key: cannot read \(ENOENT\)/),
    });
  });
});
