/**
 * `admin.stateFile`: the servers' admin states (drain, maint) kept across restarts, as HAProxy's
 * `server-state-file` keeps them. Without it a restart (an upgrade, a reboot, a crash) would put a broker under
 * maintenance back into rotation. Read once at start; written whole after every change, to a temporary file
 * renamed over the old one, so that a crash leaves the old file or the new one, never half of one.
 *
 * Only servers not `ready` are listed. The file names servers by pool and server name (their stable identity,
 * design.md §5), never by list position.
 */
import { closeSync, fsyncSync, openSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import type { AdminState } from './server.js';
import { openRegularFile } from '../regular-file.js';

export interface AdminStateEntry {
  pool: string;
  server: string;
  admin: Exclude<AdminState, 'ready'>;
}

const FORMAT_VERSION = 1;
/** A real file is a few hundred bytes; a larger one is not ours (a path pointing at the wrong file). */
const MAX_FILE_BYTES = 1 << 20;

/** The file's text: one JSON object, one server per line (readable with `cat`, diffable). */
export function serializeAdminStates(entries: readonly AdminStateEntry[]): string {
  const lines = entries.map((e) => `    ${JSON.stringify({ pool: e.pool, server: e.server, admin: e.admin })}`);
  return `{\n  "version": ${FORMAT_VERSION},\n  "servers": [${lines.length > 0 ? `\n${lines.join(',\n')}\n  ` : ''}]\n}\n`;
}

/**
 * The entries of a state file's text; throws an Error saying what is wrong with a text that is not a state file.
 * An entry that cannot be used (a hand-written `"admin": "disabled"`, a missing name) is left out and said in
 * `skipped`, the others kept, as HAProxy skips a bad line of its server-state-file; `"ready"` is the default state,
 * nothing to restore; a server named twice takes its last entry (said too). An empty file is a state file with no
 * entries (one created by provisioning with `touch` would otherwise never be written over).
 */
export function parseAdminStates(text: string, skipped: string[] = []): AdminStateEntry[] {
  if (text.trim() === '') return [];
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // Not the parser's message: it quotes the text, and a path naming another file (a secret) must not show it.
    throw new Error('not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error('not a JSON object');
  const { version, servers } = doc as { version?: unknown; servers?: unknown };
  // The file's values are not quoted (it may be another program's, holding secrets): only what was expected.
  if (version !== FORMAT_VERSION) throw new Error(`not version ${FORMAT_VERSION}, the one this mqtt-lb reads`);
  if (!Array.isArray(servers)) throw new Error('`servers` is not a list');
  // pool/server -> where it was named and its entry, or null for `ready` (nothing to restore, but it overrides an
  // earlier entry).
  const byServer = new Map<string, { at: number; entry: AdminStateEntry | null }>();
  servers.forEach((item: unknown, i) => {
    const e = item as Partial<Record<keyof AdminStateEntry, unknown>> | null;
    if (typeof e !== 'object' || e === null || typeof e.pool !== 'string' || typeof e.server !== 'string') {
      skipped.push(`servers[${i}]: needs \`pool\` and \`server\` strings`);
      return;
    }
    const key = `${e.pool}/${e.server}`;
    if (e.admin !== 'drain' && e.admin !== 'maint' && e.admin !== 'ready') {
      skipped.push(`servers[${i}] (${key}): \`admin\` must be "drain", "maint" or "ready"`);
      return;
    }
    const earlier = byServer.get(key);
    if (earlier !== undefined) {
      skipped.push(`servers[${earlier.at}] (${key}): named again in servers[${i}], which counts`);
      byServer.delete(key); // listed where the entry that counts is
    }
    byServer.set(key, { at: i, entry: e.admin === 'ready' ? null : { pool: e.pool, server: e.server, admin: e.admin } });
  });
  return [...byServer.values()].flatMap(({ entry }) => (entry === null ? [] : [entry]));
}

/**
 * The entries in the file, or null when there is no file yet (the first start). Throws when it cannot be used.
 * Judged before it is read: a path naming a device (/dev/zero) or a FIFO would never end or block the start.
 */
export function readAdminStateFile(path: string, skipped?: string[]): AdminStateEntry[] | null {
  let file: { fd: number; size: number };
  try {
    file = openRegularFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const { fd, size } = file;
  try {
    if (size > MAX_FILE_BYTES) throw new Error(`${size} bytes: not an admin state file`);
    return parseAdminStates(readFileSync(fd).toString('utf8'), skipped);
  } finally {
    closeSync(fd);
  }
}

/** Where a write lands: the file a symbolic link names (a rename would replace the link itself), else the path. */
export function adminStateTarget(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/**
 * Replaces the file at `path` with these entries: written and synced beside it, then renamed over it, and the
 * directory synced (the rename itself survives a power loss). Synchronous: admin changes are rare (0.5 ms here, two
 * fsyncs), and two changes in a row must land in their order. A file there that is not a state file is left alone
 * (a path naming another file by mistake must not lose it). Throws on failure; the temporary file is removed then.
 */
export function writeAdminStateFile(path: string, entries: readonly AdminStateEntry[]): void {
  const target = adminStateTarget(path);
  try {
    readAdminStateFile(target);
  } catch (err) {
    // Reading it failed (no descriptor left, no permission): nothing is known about the file, and it is not written.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== undefined && code !== 'EISDIR') throw new Error(`${target} could not be read to check it is an admin state file (${code}): not written`, { cause: err });
    throw new Error(`${target} is not an admin state file (${(err as Error).message}): left alone; move it away to keep the states again`, { cause: err });
  }
  // A name no one can guess, created exclusively (O_EXCL: never through a symbolic link or into a file someone put
  // there): in a directory others can write, a predictable name let a local user have the state written over any
  // file this process may write (a security audit), or own the state file.
  const temporary = `${target}.tmp-${process.pid}-${randomBytes(8).toString('hex')}`;
  let created = false;
  try {
    writeFileSync(temporary, serializeAdminStates(entries), { mode: 0o644, flag: 'wx' });
    created = true;
    syncPath(temporary);
    renameSync(temporary, target);
  } catch (err) {
    try {
      if (created) rmSync(temporary, { force: true });
    } catch {
      // the write's own error is the one to report
    }
    throw err;
  }
  syncPath(dirname(target));
}

function syncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
