#!/usr/bin/env node
/**
 * The entry point of the mqtt-lb command. Only this is loaded before the early signal handlers are in place
 * (early-signals.ts: a SIGHUP or SIGTERM right after the start must not kill the balancer); the command itself,
 * with the config parser and everything it loads, comes after them (cli-main.ts).
 *
 * No static import of our own modules: each is a file to open, and at an open-file limit of about twenty one of them
 * failed before any code here ran (a stack trace and exit 1: a re-audit). Loaded here, a failure is said in the
 * balancer's words (load-failure.ts), or, when even that module cannot be opened, in the same words from here.
 */
import { writeSync } from 'node:fs';

try {
  await import('./early-signals.js');
  await import('./cli-main.js');
} catch (err) {
  const loaded = await import('./load-failure.js').catch(() => null);
  if (loaded !== null) loaded.exitOnStartFailure(err);
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const fdLimit = code === 'EMFILE' || code === 'ENFILE';
  try {
    writeSync(2, fdLimit ? `mqtt-lb: cannot start (MQLB_START_FD_LIMIT): the open-file limit is too low even to load mqtt-lb (${code}): raise it (ulimit -n, systemd LimitNOFILE) to a few thousand at least\n` : `mqtt-lb: ${String((err as Error | null)?.stack ?? err)}\n`);
  } catch {
    // stderr closed: the exit status says it
  }
  process.exit(2);
}
