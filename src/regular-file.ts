/**
 * Opening a file the running balancer reads again (the admin state file at start, lb.yaml at a reload) without
 * waiting on it: a FIFO with no writer would block the open, and with it the event loop and every session.
 */
import { closeSync, constants, fstatSync, openSync } from 'node:fs';

/**
 * `path` opened for reading, non-blocking, when it is a regular file: its descriptor (the caller closes it) and size.
 * Throws ENOENT and the like as openSync does, an EISDIR error for a directory, and `notRegular` (as an Error's
 * message) for a pipe, a socket or a device.
 */
export function openRegularFile(path: string, notRegular = 'not a regular file'): { fd: number; size: number } {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    if (!st.isFile()) throw new Error(notRegular);
    return { fd, size: st.size };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
