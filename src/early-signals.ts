/**
 * Signals that reach `mqtt-lb` (the `run` command) before run.ts has its own handlers: while Node loads the
 * modules and the config is read (0.1-0.8 s). Left to their default action, a `systemctl reload` or a logrotate
 * SIGHUP right after the start killed the balancer (exit 129, nothing logged), and a SIGTERM did the same (143).
 * Imported first by cli.ts, so its handlers are in place before any other module loads; run.ts takes what they
 * noted (takeEarlySignals) once its own are installed, and replays it: a stop cuts the start short, a reload is
 * applied once the balancer serves. Other commands (check, status, keygen) keep the default actions.
 */
import { printErr } from './cli-output.js';
import { ignoreForeignSignals } from './foreign-signals.js';

export interface EarlySignals {
  stop: NodeJS.Signals | null;
  reload: boolean;
}

const noted: EarlySignals = { stop: null, reload: false };
let installed = false;

function onStop(signal: NodeJS.Signals): void {
  if (noted.stop !== null) {
    // A second one before anything started: nothing to wait for.
    printErr(`mqtt-lb: second ${signal} while starting: exiting now\n`);
    process.exit(1);
  }
  noted.stop = signal;
}

function onReload(): void {
  noted.reload = true;
}

/** The command line runs the balancer: no command or `run`, and neither --help nor --version (cli.ts parseArgs). */
export function runsBalancer(argv: readonly string[]): boolean {
  const first = argv[0];
  if (first !== undefined && !first.startsWith('-') && first !== 'run') return false;
  return !argv.some((a) => a === '--help' || a === '-h' || a === '--version' || a === '-v');
}

export function installEarlySignals(): void {
  if (installed) return;
  installed = true;
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onReload);
}

/** What arrived so far; the early handlers are removed (call it after installing the ones that take over). */
export function takeEarlySignals(): EarlySignals {
  if (installed) {
    installed = false;
    process.removeListener('SIGTERM', onStop);
    process.removeListener('SIGINT', onStop);
    process.removeListener('SIGHUP', onReload);
  }
  return { ...noted };
}

// SIGUSR1 (Node's inspector), SIGUSR2, SIGQUIT, SIGALRM: for every command, from the first moment.
ignoreForeignSignals();
if (runsBalancer(process.argv.slice(2))) installEarlySignals();
