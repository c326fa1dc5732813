/**
 * The servers' admin states against `admin.stateFile` (admin-state-file.ts): restored at start, saved after
 * every change and every reload, in the process that owns them (a single process, or the cluster primary,
 * which passes them on to its workers with the health states).
 */
import type { Logger } from 'pino';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { readAdminStateFile, writeAdminStateFile, type AdminStateEntry } from './admin-state-file.js';
import type { Pool } from './pool.js';

/**
 * Applies the file's states to the pools' servers. At start, before the first health checks: a server restored
 * to `maint` is never probed, and one in `drain` never takes a session. A file that cannot be used is logged and
 * left alone (every server starts ready); an entry it cannot use is skipped (said), and entries for servers the config
 * no longer has are dropped.
 */
export function restoreAdminStates(file: string, pools: ReadonlyMap<string, Pool>, log: Logger): void {
  let entries: AdminStateEntry[] | null;
  const skipped: string[] = [];
  try {
    entries = readAdminStateFile(file, skipped);
  } catch (err) {
    log.warn({ file, err: stateFileError(err), code: ErrorCodes.ADMIN_STATE_FILE }, 'admin state file unusable: every server starts ready');
    return;
  }
  if (entries === null) return; // the first start with this file
  if (skipped.length > 0) log.warn({ file, entries: skipped }, 'admin state file entries skipped: the others are restored');
  const restored: string[] = [];
  const unknown: string[] = [];
  for (const e of entries) {
    const server = pools.get(e.pool)?.server(e.server);
    if (server === undefined) {
      unknown.push(`${e.pool}/${e.server}`);
      continue;
    }
    server.setAdmin(e.admin);
    restored.push(`${e.pool}/${e.server}: ${e.admin}`);
  }
  if (restored.length > 0) log.info({ file, servers: restored }, 'server admin states restored');
  if (unknown.length > 0) log.warn({ file, servers: unknown }, 'admin state file names servers the config does not have: dropped');
}

/** Writes every server's admin state that is not `ready`. A failure is logged: the states hold until a restart. */
export function saveAdminStates(file: string, pools: ReadonlyMap<string, Pool>, log: Logger): void {
  const entries: AdminStateEntry[] = [];
  for (const pool of pools.values()) {
    for (const s of pool.servers) if (s.admin !== 'ready') entries.push({ pool: pool.name, server: s.name, admin: s.admin });
  }
  try {
    writeAdminStateFile(file, entries);
  } catch (err) {
    log.error({ file, err: stateFileError(err), code: ErrorCodes.ADMIN_STATE_FILE }, 'cannot save the admin states: a restart will not keep them');
  }
}

/** An expected failure (permissions, a full disk, a foreign file): logged with its code and cause, without a stack. */
function stateFileError(err: unknown): MqttLbError {
  return err instanceof MqttLbError ? err : new MqttLbError(ErrorCodes.ADMIN_STATE_FILE, err instanceof Error ? err.message : String(err), { cause: err });
}
