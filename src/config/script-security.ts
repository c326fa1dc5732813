/**
 * keepalived's `enable_script_security`, for `failover.notify`: the hook runs with this process's capabilities
 * (a systemd unit's ambient CAP_NET_ADMIN passes to children), so a hook that another user can change, or a
 * directory on its path where another user can replace it, hands them those capabilities. Reference catalogue
 * #85: "hook scripts not writable by other users".
 */
import { realpathSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Null when the script and every directory above it are owned by root or by this user and writable by no one
 * else (a sticky directory such as /tmp may be: there only its owner can replace the file); otherwise why not.
 */
export function scriptInsecurity(file: string): string | null {
  const me = process.geteuid?.() ?? 0;
  let path: string;
  try {
    path = realpathSync(file);
  } catch (err) {
    return `cannot resolve it (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
  }
  for (let p = path, top = false; !top; top = p === dirname(p), p = dirname(p)) {
    const st = statSync(p);
    const what = p === path ? 'it' : `directory ${p} on its path`;
    if (st.uid !== 0 && st.uid !== me) return `${what} is owned by uid ${st.uid}, neither root nor this user (uid ${me})`;
    const shielded = st.isDirectory() && (st.mode & 0o1000) !== 0; // sticky: only a file's owner may replace it
    if (shielded) continue;
    if ((st.mode & 0o002) !== 0) return `${what} is writable by others (mode ${(st.mode & 0o777).toString(8)})`;
    if ((st.mode & 0o020) !== 0 && st.gid !== 0) return `${what} is writable by its group (gid ${st.gid}, mode ${(st.mode & 0o777).toString(8)})`;
  }
  return null;
}
