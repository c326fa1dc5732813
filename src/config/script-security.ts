/**
 * keepalived's `enable_script_security`, for `failover.notify`: the hook runs with this process's capabilities
 * (a systemd unit's ambient CAP_NET_ADMIN passes to children), so a hook that another user can change, or a
 * directory on its path where another user can replace it, hands them those capabilities. Reference catalogue
 * #85: "hook scripts not writable by other users".
 */
import { lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Null when the script and every directory above it are owned by root or by this user and writable by no one
 * else (a sticky directory such as /tmp may be: there only its owner can replace the file); otherwise why not.
 * Every symlink met on the way (the file, a directory) is followed, and both its directory and its target are
 * checked: whoever may write the directory of a symlink can re-point it, whatever its target's modes.
 */
export function scriptInsecurity(file: string): string | null {
  const me = process.geteuid?.() ?? 0;
  const script = resolve(file);
  const pending = [script];
  const seen = new Set<string>();
  while (pending.length > 0) {
    const start = pending.pop()!;
    for (let p = start, top = false; !top; top = p === dirname(p), p = dirname(p)) {
      if (seen.has(p)) continue;
      seen.add(p);
      if (seen.size > MAX_PATHS) return 'its path has too many symlinks to check';
      let st;
      try {
        st = lstatSync(p);
      } catch (err) {
        return `cannot check ${p} (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
      }
      const what = p === script ? 'it' : `${st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'file'} ${p} on its path`;
      if (st.uid !== 0 && st.uid !== me) return `${what} is owned by uid ${st.uid}, neither root nor this user (uid ${me})`;
      if (st.isSymbolicLink()) {
        // Its own mode means nothing; its directory (next) decides who may re-point it, and its target is run:
        // a relative target from the directory the kernel resolves it in, the real one (`..` included).
        let from: string;
        try {
          from = realpathSync(dirname(p));
        } catch (err) {
          return `cannot check ${dirname(p)} (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
        }
        pending.push(resolve(from, readlinkSync(p)));
        continue;
      }
      if (st.isDirectory() && (st.mode & 0o1000) !== 0) continue; // sticky: only a file's owner may replace it
      if ((st.mode & 0o002) !== 0) return `${what} is writable by others (mode ${(st.mode & 0o777).toString(8)})`;
      if ((st.mode & 0o020) !== 0 && st.gid !== 0) return `${what} is writable by its group (gid ${st.gid}, mode ${(st.mode & 0o777).toString(8)})`;
    }
  }
  return null;
}

/** Bounds the walk (a symlink loop, a hostile tree); a real hook path has a few dozen components at most. */
const MAX_PATHS = 256;
