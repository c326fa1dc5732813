/**
 * Runs one external command (`ip`, `arping`, the notify hook) with execFile: no shell, arguments passed as an
 * array, a hard kill timeout (SIGKILL), optional cancellation, and the C locale so that the error texts we
 * match ("File exists", "Address not found") are the English ones. Never rejects: the caller decides.
 */
import { execFile } from 'node:child_process';

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
}

const ENV = { ...process.env, LC_ALL: 'C', LANG: 'C' };

export function runCommand(file: string, args: readonly string[], opts: CommandOptions): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: opts.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 * 1024 * 1024, env: ENV, windowsHide: true, signal: opts.signal },
      (err, stdout, stderr) => {
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
  });
}

/** One line for logs and error messages. */
export function describeResult(file: string, args: readonly string[], r: CommandResult): string {
  const what = `${file} ${args.join(' ')}`;
  if (r.spawnError !== null) return `${what}: cannot run (${r.spawnError})`;
  if (r.timedOut) return `${what}: killed after timeout`;
  if (r.aborted) return `${what}: cancelled`;
  const err = r.stderr.trim().split('\n')[0] ?? '';
  return `${what}: exit ${r.code ?? r.signal}${err === '' ? '' : `: ${err}`}`;
}
