/**
 * Runs one external command (`ip`, `arping`, the notify hook, a track script): no shell, arguments passed as an
 * array, a hard kill timeout (SIGKILL), optional cancellation, and the C locale so that the error texts we match
 * ("File exists", "Address not found") are the English ones. Never rejects: the caller decides.
 *
 * Each runs in a process group of its own. A signal sent to mqtt-lb's group (a terminal's hang-up, `kill -HUP
 * -PGID`) is mqtt-lb's to handle (SIGHUP reloads): it must not end an `ip addr add` or an `arping` half way, as it
 * did while they shared the group (keepalived talks netlink itself, and has no child to lose). And the timeout or a
 * cancellation kills what a command started as well (a hook's `sleep` or `curl` would otherwise outlive it, holding
 * its output pipe open, and the result with it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
   * Run it at the process's own priority (the operator's scripts: the notify hook, track scripts), not at the
   * failover thread's, which may be raised (nice -10) and which a child inherits. `ip` and `arping` keep the raised
   * one: they are the takeover.
   */
  atProcessPriority?: boolean;
  /**
   * The result is the command's own exit; what it leaves running then (a background job holding its output) is
   * killed with the group, instead of the run lasting until the timeout (the track scripts: keepalived waits for the
   * script's exit only).
   */
  endsAtExit?: boolean;
  /** Output kept per stream, in characters (UTF-16 code units; default 4 Mi). */
  maxOutputChars?: number;
  /** How soon a group signal's end counts as a death before the exec (PRE_EXEC_DEATH_MS); tests stretch it. */
  preExecDeathMs?: number;
}

/** The C locale for every command we run: the texts we match are the English ones. */
export const COMMAND_ENV = { ...process.env, LC_ALL: 'C', LANG: 'C' };

const MAX_OUTPUT_CHARS = 4 * 1024 * 1024;
/** After an endsAtExit command's exit, how long its pipes may stay open (held by a process outside its group). */
const EXIT_PIPES_GRACE_MS = 200;
/** describeResult quotes at most this much of the first line of stderr: a log line, not a dump. */
const DETAIL_STDERR_CHARS = 200;

/** Signals a terminal or a group `kill` sends to a whole process group. */
const GROUP_SIGNALS: ReadonlySet<string> = new Set(['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGQUIT']);
/**
 * A command whose exit, ended by one of them (not by us), is seen this soon after spawn() returned died before its
 * exec (runCommand). spawn() returns once the child has exec'd or died (libuv waits on its exec pipe), so such a
 * death is seen within a turn of the loop; a command that ran and then was killed, by itself or by a signal to its
 * pid, seldom ends this soon, and is not run again (a re-audit: a hook killing itself after 0.2 s ran twice, `stop`
 * included, under a 1 s window).
 */
const PRE_EXEC_DEATH_MS = 50;
/** Runs of one command, all ended so: a storm of group signals every few ms may catch a retry too. */
const MAX_RUNS = 3;

/**
 * Runs it again when a group signal ended it before its exec. A signal sent to mqtt-lb's process group between the
 * fork and the child's setsid() (libuv blocks signals in the child until it has reset them) reaches the child too,
 * which dies of it before its exec: a re-audit's SIGHUP storm saw 7 % of a fast track script's runs and three notify
 * hooks end so. Nothing ran then, so running it again is safe.
 */
export async function runCommand(file: string, args: readonly string[], opts: CommandOptions): Promise<CommandResult> {
  for (let run = 1; ; run++) {
    const [r, livedMs] = await runOnce(file, args, opts);
    const preExec = r.signal !== null && GROUP_SIGNALS.has(r.signal) && !r.timedOut && !r.aborted && livedMs < (opts.preExecDeathMs ?? PRE_EXEC_DEATH_MS);
    if (!preExec || run === MAX_RUNS || opts.signal?.aborted === true) return r;
  }
}

/** One run: its result, and how long after spawn() returned its exit was seen (Infinity: no exit seen). */
function runOnce(file: string, args: readonly string[], opts: CommandOptions): Promise<[CommandResult, number]> {
  return new Promise((resolve) => {
    const output = { stdout: '', stderr: '' };
    let timedOut = false;
    let aborted = false;
    let spawnError: string | null = null;
    let timer: NodeJS.Timeout | undefined;
    let child: ChildProcess | undefined;
    // A process that left the group (setsid: a daemon the hook started) may still hold the pipes: 'close' would
    // wait for it. Ours are closed instead once the command is killed.
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
    let spawnedAt = 0;
    let exitedAt = Number.POSITIVE_INFINITY;
    const settle = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      clearTimeout(exitFallback);
      if (child !== undefined) childEnded(child);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve([{ code: spawnError === null ? code : null, signal, ...output, timedOut, aborted, spawnError: aborted || timedOut ? null : spawnError }, exitedAt - spawnedAt]);
    };
    try {
      // detached: a process group of its own (execFile does not pass `detached` on).
      child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: COMMAND_ENV, windowsHide: true });
      spawnedAt = performance.now();
      child.once('exit', () => {
        exitedAt = performance.now();
      });
    } catch (err) {
      spawnError = (err as NodeJS.ErrnoException).code ?? 'error';
      settle(null, null);
      return;
    }
    childStarted(child, file);
    if (opts.atProcessPriority === true && child.pid !== undefined) {
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
    const maxOutput = opts.maxOutputChars ?? MAX_OUTPUT_CHARS;
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
