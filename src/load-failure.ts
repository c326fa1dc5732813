/**
 * A start that fails while Node loads mqtt-lb's own modules: each is a file to open, so an open-file limit of a few
 * dozen fails there, before the budget check (fd-budget.ts) that names the limit needed. Said in its words, exit 2,
 * not as a stack trace and exit 1 (which means a configuration error): an audit saw both at `ulimit -n 20`, from the
 * entry's own import of the command (cli.ts) and from the command's (cli-main.ts). Imports only cli-output.ts (which
 * early-signals.ts loaded) and Node's built-ins, which need no descriptor; cli.ts says the same should even this fail.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { printErr } from './cli-output.js';

/** The message for `err` when the open-file limit caused it, else null. */
export function loadFailureMessage(err: unknown): string | null {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  // Node reports it as EMFILE, or as a module not found when the lookup itself hit the limit (seen in CI: reading
  // pino's package.json failed, so its main was looked for as index.js): a module said missing that is there, or
  // whose package is (a stat needs no descriptor).
  const missing = code === 'ERR_MODULE_NOT_FOUND' ? /Cannot find (?:package|module) '([^']+)'/.exec((err as Error).message)?.[1] : undefined;
  const spurious = missing !== undefined && (existsSync(missing) || existsSync(join(dirname(missing), 'package.json')));
  if (code !== 'EMFILE' && code !== 'ENFILE' && !spurious) return null;
  // A spurious "not found" is named for its cause: the code Node gave reads like a broken install.
  const cause = code === 'ENFILE' ? 'ENFILE' : 'EMFILE';
  return `mqtt-lb: cannot start (MQLB_START_FD_LIMIT): the open-file limit is too low even to load mqtt-lb (${cause}): raise it (ulimit -n, systemd LimitNOFILE) to a few thousand at least\n`;
}

/** Print why the start failed (in its words when the open-file limit caused it) and exit 2. */
export function exitOnStartFailure(err: unknown): never {
  printErr(loadFailureMessage(err) ?? `mqtt-lb: ${(err as Error | null)?.stack ?? String(err)}\n`);
  process.exit(2);
}
