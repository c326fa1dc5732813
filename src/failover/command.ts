/**
 * Runs one external command (`ip`, `arping`, the notify hook) with execFile (the hook: spawn, in a process group
 * of its own): no shell, arguments passed as an array, a hard kill timeout (SIGKILL), optional cancellation, and
 * the C locale so that the error texts we match ("File exists", "Address not found") are the English ones. Never
 * rejects: the caller decides.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { getPriority, setPriority } from 'node:os';
import { childEnded, childStarted } from './children.js';

export interface CommandResult {
  /** Exit code; null when killed or not started. */
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  aborted: boolean;
  /** Why it could not run at all (ENOENT, EACCES...). */
  spawnError: string | null;
}

export interface CommandOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /**
   * Run it in a process group of its own and kill the whole group at the timeout (the notify hook: a script's
   * `sleep` or `curl` would otherwise outlive it, holding its output pipe open, and the result with it).
   */
  processGroup?: boolean;
  /**
   * With processGroup: the result is the command's own exit; what it leaves running then (a background job holding
   * its output) is killed with the group, instead of the run lasting until the timeout (the track scripts: keepalived
   * waits for the script's exit only).
   */
  endsAtExit?: boolean;
  /** Output kept per stream, in characters (UTF-16 code units; default 4 Mi). */
  maxOutputChars?: number;
}

/** The C locale for every command we run: the texts we match are the English ones. */
export const COMMAND_ENV = { ...process.env, LC_ALL: 'C', LANG: 'C' };

const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;
/** After an endsAtExit command's exit, how long its pipes may stay open (held by a process outside its group). */
const EXIT_PIPES_GRACE_MS = 200;
/** describeResult quotes at most this much of the first line of stderr: a log line, not a dump. */
const DETAIL_STDERR_CHARS = 200;

export function runCommand(file: string, args: readonly string[], opts: CommandOptions): Promise<CommandResult> {
  if (opts.processGroup === true) return runInProcessGroup(file, args, opts);
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: opts.timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT_BYTES, env: COMMAND_ENV, windowsHide: true, signal: opts.signal },
      (err, stdout, stderr) => {
        childEnded(child);
        const e = err as (NodeJS.ErrnoException & { killed?: boolean; signal?: string | null }) | null;
        const aborted = e?.name === 'AbortError';
        const spawnError = e !== null && typeof e.code === 'string' && !aborted ? e.code : null;
        resolve({
          code: e === null ? 0 : typeof e.code === 'number' ? e.code : null,
          signal: e?.signal ?? null,
          stdout: String(stdout),
          stderr: String(stderr),
          timedOut: e !== null && e.killed === true && !aborted,
          aborted,
          spawnError,
        });
      },
    );
    childStarted(child, file, false);
  });
}

/**
 * As runCommand, in a process group of its own (spawn: execFile does not pass `detached` on), so that the
 * timeout or a cancellation kills what the command started as well.
 */
function runInProcessGroup(file: string, args: readonly string[], opts: CommandOptions): Promise<CommandResult> {
  return new Promise((resolve) => {
    const output = { stdout: '', stderr: '' };
    let timedOut = false;
    let aborted = false;
    let spawnError: string | null = null;
    let timer: NodeJS.Timeout | undefined;
    let child: ChildProcess | undefined;
    // A process that left the group (setsid: a daemon the hook started) may still hold the pipes: 'close' would
    // wait for it. Ours are closed instead once the hook is killed.
    const closePipes = (): void => {
      child?.stdout?.destroy();
      child?.stderr?.destroy();
    };
    const killGroup = (): void => {
      if (child?.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const onAbort = (): void => {
      aborted = true;
      killGroup();
      closePipes();
    };
    let exitFallback: NodeJS.Timeout | undefined;
    const settle = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      clearTimeout(exitFallback);
      if (child !== undefined) childEnded(child);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve({ code: spawnError === null ? code : null, signal, ...output, timedOut, aborted, spawnError: aborted || timedOut ? null : spawnError });
    };
    try {
      child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: COMMAND_ENV, windowsHide: true });
    } catch (err) {
      spawnError = (err as NodeJS.ErrnoException).code ?? 'error';
      settle(null, null);
      return;
    }
    childStarted(child, file, true);
    // At the process's own priority: the failover thread may run raised (nice -10), and a child inherits it.
    if (child.pid !== undefined) {
      try {
        setPriority(child.pid, getPriority(process.pid));
      } catch {
        // gone already, or not ours to change: it runs as it is
      }
    }
    // First: a spawn that fails (EMFILE, ENOENT) says so here, on the next tick, and may have made no pipes.
    child.on('error', (err: NodeJS.ErrnoException) => {
      spawnError = err.code ?? 'error';
    });
    child.on('close', settle);
    if (opts.endsAtExit === true) {
      child.on('exit', () => {
        if (timedOut || aborted) return;
        clearTimeout(timer);
        // Its leftovers go; their end closes the pipes, and 'close' follows with all the output read. One that left
        // the group (setsid) may still hold them: closed after a moment all the same.
        killGroup();
        exitFallback = setTimeout(closePipes, EXIT_PIPES_GRACE_MS);
      });
    }
    const maxOutput = opts.maxOutputChars ?? MAX_OUTPUT_BYTES;
    for (const name of ['stdout', 'stderr'] as const) {
      const stream = child[name];
      stream?.setEncoding('utf8');
      stream?.on('data', (text: string) => {
        if (output[name].length < maxOutput) output[name] += text.length <= maxOutput - output[name].length ? text : text.slice(0, maxOutput - output[name].length);
      });
    }
    timer = setTimeout(() => {
      timedOut = true;
      killGroup();
      closePipes();
    }, opts.timeoutMs);
    if (opts.signal?.aborted === true) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** One line for logs and error messages. */
export function describeResult(file: string, args: readonly string[], r: CommandResult): string {
  const what = [file, ...args].join(' ');
  if (r.spawnError !== null) return `${what}: cannot run (${r.spawnError})`;
  if (r.timedOut) return `${what}: killed after timeout`;
  if (r.aborted) return `${what}: cancelled`;
  const first = r.stderr.trim().split('\n', 1)[0] ?? '';
  const err = first.length > DETAIL_STDERR_CHARS ? `${first.slice(0, DETAIL_STDERR_CHARS)}...` : first;
  return `${what}: exit ${r.code ?? r.signal}${err === '' ? '' : `: ${err}`}`;
}
