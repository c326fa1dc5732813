/**
 * keepalived's `enable_script_security`, for `failover.notify`: the hook runs with this process's capabilities
 * (a systemd unit's ambient CAP_NET_ADMIN passes to children), so a hook that another user can change, or a
 * directory on its path where another user can replace it, hands them those capabilities. Reference catalogue
 * #85: "hook scripts not writable by other users".
 */
import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';

/** Symlinks followed at most (Linux's own limit is 40). */
const MAX_SYMLINKS = 40;

/**
 * Null when everything the kernel goes through to reach the script is owned by root or by this user and
 * writable by no one else (a sticky directory such as /tmp may be: there only its owner can replace an entry);
 * otherwise why not. The path is walked one component at a time as the kernel does: a symlink's target is
 * spliced in before the rest, and `..` goes up from the real directory reached so far, never by text. Every
 * directory entered, every symlink met (whoever may write its directory can re-point it: that directory was
 * entered before it) and the file itself are checked.
 */
export function scriptInsecurity(file: string): string | null {
  const me = process.geteuid?.() ?? 0;
  let real = '/';
  const rootProblem = judge('/', lstatOrNull('/'), null, me);
  if (rootProblem !== null) return rootProblem;
  let rest = components(resolve(file));
  let symlinks = 0;
  while (rest.length > 0) {
    const c = rest.shift()!;
    if (c === '.') continue;
    if (c === '..') {
      real = real === '/' ? '/' : real.slice(0, real.lastIndexOf('/')) || '/';
      continue;
    }
    const p = join(real, c);
    const st = lstatOrNull(p);
    if (st === null) return `cannot check ${p}`;
    const last = rest.length === 0;
    const problem = judge(p, st, last && !st.isSymbolicLink() ? (symlinks === 0 ? 'it' : `the file it runs, ${p},`) : null, me);
    if (problem !== null) return problem;
    if (st.isSymbolicLink()) {
      if (++symlinks > MAX_SYMLINKS) return 'its path has too many symlinks to check';
      const target = readlinkSync(p);
      if (isAbsolute(target)) real = '/';
      rest = [...components(target), ...rest];
      continue;
    }
    real = p;
  }
  return null;
}

/** `script`: how to name the script when `p` is it (null: `p` is on the way to it). */
function judge(p: string, st: Stats | null, script: string | null, me: number): string | null {
  if (st === null) return `cannot check ${p}`;
  const what = script ?? `${st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'file'} ${p} on its path`;
  if (st.uid !== 0 && st.uid !== me) return `${what} is owned by uid ${st.uid}, neither root nor this user (uid ${me})`;
  // A symlink's own mode means nothing; a sticky directory lets only an entry's owner replace it.
  if (st.isSymbolicLink() || (st.isDirectory() && (st.mode & 0o1000) !== 0)) return null;
  if ((st.mode & 0o002) !== 0) return `${what} is writable by others (mode ${(st.mode & 0o777).toString(8)})`;
  if ((st.mode & 0o020) !== 0 && st.gid !== 0) return `${what} is writable by its group (gid ${st.gid}, mode ${(st.mode & 0o777).toString(8)})`;
  return null;
}

function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '');
}

function lstatOrNull(p: string): Stats | null {
  try {
    return lstatSync(p);
  } catch {
    return null;
  }
}
