/**
 * Whether this process can still open a file descriptor. A listener out of descriptors does not say so: libuv
 * answers EMFILE/ENFILE at accept by accepting each waiting connection on a descriptor it keeps in reserve and
 * closing it at once (its "EMFILE trick"), so Node's server emits no 'error', every client is reset, and failover's
 * `track.listeners` saw a healthy listener (a failover audit: a master out of descriptors stayed master for 12 s,
 * moved only because its interface poll failed as well). One open and close of /dev/null per tracking tick tells.
 */
import { closeSync, openSync } from 'node:fs';

/** null when a descriptor could be opened; else why not (EMFILE: this process's limit, ENFILE: the system's). */
export function descriptorShortage(): 'EMFILE' | 'ENFILE' | null {
  try {
    closeSync(openSync('/dev/null', 'r'));
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EMFILE' || code === 'ENFILE' ? code : null;
  }
}
