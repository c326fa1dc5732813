/**
 * The shared failover key: `mqtt-lb keygen` prints base64 of 32 random bytes; `failover.authKeyFile` holds
 * exactly that one line. Anything else is refused with a message that says what was found and how to fix it.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ErrorCodes, MqttLbError } from '../errors.js';

export const FAILOVER_KEY_BYTES = 32;
/** 32 bytes in standard base64 = 43 characters + one '=' of padding. */
const KEY_LINE_RE = /^[A-Za-z0-9+/]{43}=$/;

/** A new key, as the key file holds it (without the trailing newline). */
export function generateKey(): string {
  return randomBytes(FAILOVER_KEY_BYTES).toString('base64');
}

/**
 * The advice when a key file holds something else: no `keygen > FILE`, since the file may be the wrong one (a TLS
 * key named by mistake) and overwriting it would lose it.
 */
const NEW_KEY_HINT = ' (is it the right file? `mqtt-lb keygen` prints a new key: put the same one on both hosts)';

/** Parses the key file's content. `file` only names the source in error messages. */
export function parseKey(text: string, file: string): Buffer {
  const problem = keyProblem(text);
  if (problem !== null) throw keyError(file, problem);
  return Buffer.from(text.trim(), 'base64');
}

/**
 * What is wrong with a key file's content, or null when it is one base64 line of 32 bytes (what `mqtt-lb check`
 * reports at the key, and what parseKey throws).
 */
export function keyProblem(text: string): string | null {
  const lines = text.split(/\r?\n/);
  // One line, optionally followed by a newline (a trailing empty element after split).
  while (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
  if (lines.length !== 1 || lines[0]!.trim() === '') {
    return `must hold exactly one base64 line of ${FAILOVER_KEY_BYTES} bytes (found ${lines[0]!.trim() === '' && lines.length === 1 ? 'an empty file' : `${lines.length} lines`})${NEW_KEY_HINT}`;
  }
  const line = lines[0]!.trim();
  if (!KEY_LINE_RE.test(line)) {
    const decoded = /^[A-Za-z0-9+/]+={0,2}$/.test(line) ? Buffer.from(line, 'base64').length : null;
    const found = decoded === null ? 'text that is not base64' : `${decoded} bytes`;
    return `must hold one base64 line of ${FAILOVER_KEY_BYTES} bytes, found ${found}${NEW_KEY_HINT}`;
  }
  const key = Buffer.from(line, 'base64');
  if (key.length !== FAILOVER_KEY_BYTES) return `decodes to ${key.length} bytes, expected ${FAILOVER_KEY_BYTES}`;
  return null;
}

/** (A file readable by group or others is warned about by the config check: src/config/load.ts.) */
export interface KeyFile {
  key: Buffer;
}

export async function readKeyFile(file: string): Promise<KeyFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new MqttLbError(ErrorCodes.FAILOVER_KEY, `failover.authKeyFile ${file}: cannot read (${code}); create it with \`mqtt-lb keygen > ${file}\``, { cause: err });
  }
  return { key: parseKey(text, file) };
}

function keyError(file: string, what: string): MqttLbError {
  return new MqttLbError(ErrorCodes.FAILOVER_KEY, `failover.authKeyFile ${file}: ${what}`);
}
