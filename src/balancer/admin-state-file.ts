/**
 * `admin.stateFile`: the servers' admin states (drain, maint) kept across restarts, as HAProxy's
 * `server-state-file` keeps them. Without it a restart (an upgrade, a reboot, a crash) would put a broker under
 * maintenance back into rotation. Read once at start; written whole after every change, to a temporary file
 * renamed over the old one, so that a crash leaves the old file or the new one, never half of one.
 *
 * Only servers not `ready` are listed. The file names servers by pool and server name (their stable identity,
 * design.md §5), never by list position.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AdminState } from './server.js';

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

/** The entries of a state file's text; throws an Error saying what is wrong with it. */
export function parseAdminStates(text: string): AdminStateEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON (${(err as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error('not a JSON object');
  const { version, servers } = doc as { version?: unknown; servers?: unknown };
  if (version !== FORMAT_VERSION) throw new Error(`version ${JSON.stringify(version)}: this mqtt-lb reads version ${FORMAT_VERSION}`);
  if (!Array.isArray(servers)) throw new Error('`servers` is not a list');
  return servers.map((item: unknown, i) => {
    const e = item as Partial<Record<keyof AdminStateEntry, unknown>> | null;
    if (typeof e !== 'object' || e === null || typeof e.pool !== 'string' || typeof e.server !== 'string') {
      throw new Error(`servers[${i}]: needs \`pool\` and \`server\` strings`);
    }
    if (e.admin !== 'drain' && e.admin !== 'maint') throw new Error(`servers[${i}]: \`admin\` must be "drain" or "maint" (got ${JSON.stringify(e.admin)})`);
    return { pool: e.pool, server: e.server, admin: e.admin };
  });
}

/** The entries in the file, or null when there is no file yet (the first start). Throws when it cannot be used. */
export function readAdminStateFile(path: string): AdminStateEntry[] | null {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  if (data.length > MAX_FILE_BYTES) throw new Error(`${data.length} bytes: not an admin state file`);
  return parseAdminStates(data.toString('utf8'));
}

/**
 * Replaces the file at `path` with these entries: written and synced beside it, then renamed over it, and the
 * directory synced (the rename itself survives a power loss). Synchronous: admin changes are rare, and two
 * changes in a row must land in their order. Throws on failure; the temporary file is removed then.
 */
export function writeAdminStateFile(path: string, entries: readonly AdminStateEntry[]): void {
  const temporary = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(temporary, serializeAdminStates(entries), { mode: 0o644 });
    syncPath(temporary);
    renameSync(temporary, path);
  } catch (err) {
    rmSync(temporary, { force: true });
    throw err;
  }
  syncPath(dirname(path));
}

function syncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
