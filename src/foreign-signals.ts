/**
 * Signals that other daemons give a meaning and Node.js a dangerous default. Left alone, SIGUSR1 opened Node's
 * inspector on 127.0.0.1:9229, where any local user could then run code in the balancer, with the unit's
 * CAP_NET_ADMIN (an audit did); SIGUSR2 (HAProxy's reload), SIGQUIT (a core dump holding TLS keys and the admin
 * token) and SIGALRM killed it at once, every session cut and, with failover, its VIP left on the interface. A
 * listener of our own replaces each default: the signal is ignored and said (the balancer's one reload is
 * SIGHUP, its stop SIGTERM). Installed first thing by cli.ts, and by every cluster worker (a signal to the process
 * group reaches them too): Node's own bootstrap, before any of our code runs, is the only window left.
 */
import inspector from 'node:inspector';
import { printErr } from './cli-output.js';

interface SignalLog {
  warn(obj: object, msg: string): void;
}

const WHAT_INSTEAD: Readonly<Record<string, string>> = {
  SIGUSR1: 'not a stop (HAProxy\'s soft stop is SIGTERM here) nor a dump (keepalived\'s: GET /api/status); Node\'s inspector stays closed',
  SIGUSR2: 'not a reload (HAProxy\'s): send SIGHUP',
  SIGQUIT: 'no core dump: SIGTERM stops gracefully',
  SIGALRM: 'nothing to do',
};

/** The signals handled here; SIGUSR2 stays with the test hooks when they are on (test-hooks.ts). */
export function foreignSignals(env: NodeJS.ProcessEnv = process.env): NodeJS.Signals[] {
  const all = Object.keys(WHAT_INSTEAD) as NodeJS.Signals[];
  return env['MQTT_LB_TEST_HOOKS'] === '1' ? all.filter((s) => s !== 'SIGUSR2') : all;
}

let signalLog: SignalLog | null = null;
let quiet = false;
const lastSaidAt = new Map<string, number>();
const SAY_EVERY_MS = 10_000;

function onForeignSignal(signal: NodeJS.Signals): void {
  if (quiet) return;
  // At most once per 10 s per signal: a loop sending them must not flood the log.
  const now = performance.now();
  const last = lastSaidAt.get(signal);
  if (last !== undefined && now - last < SAY_EVERY_MS) return;
  lastSaidAt.set(signal, now);
  const detail = WHAT_INSTEAD[signal] ?? '';
  if (signalLog !== null) signalLog.warn({ signal, detail }, 'signal ignored');
  else printErr(`mqtt-lb: ${signal} ignored: ${detail}\n`);
}

let installed = false;

/** Replaces the default action of each foreign signal; idempotent. `silent`: ignore without a word (workers). */
export function ignoreForeignSignals(options: { silent?: boolean } = {}): void {
  if (options.silent === true) quiet = true;
  if (!installed) {
    installed = true;
    for (const s of foreignSignals()) process.on(s, onForeignSignal);
  }
  closeUnaskedInspector();
}

/** From now on an ignored signal is a log line (before a logger exists it is a line on stderr). */
export function sayForeignSignalsTo(log: SignalLog): void {
  signalLog = log;
  lastSaidAt.clear(); // what was said on stderr is said once more where the operator now looks
  closeUnaskedInspector();
}

/**
 * A SIGUSR1 in the few dozen milliseconds before our first line opens Node's inspector, and it would stay open for
 * the process's life (a re-audit): closed again here, unless the operator asked for it (`--inspect…` in the flags
 * or NODE_OPTIONS). Checked when the handlers are installed and again once the log exists.
 */
function closeUnaskedInspector(): void {
  if (inspector.url() === undefined) return;
  // `--inspect`, `--inspect=…`, `--inspect-brk…`, `--inspect-wait…` open it; `--inspect-port` only says where.
  const flags = [...process.execArgv, ...(process.env['NODE_OPTIONS'] ?? '').split(/\s+/)];
  const asked = flags.some((a) => /^--inspect(?:-brk|-wait)?(?:=|$)/.test(a));
  if (asked) return;
  inspector.close();
  if (quiet) return;
  const detail = 'SIGUSR1 came before mqtt-lb could handle it and opened Node\'s inspector: closed again';
  if (signalLog !== null) signalLog.warn({ signal: 'SIGUSR1', detail }, 'signal ignored');
  else printErr(`mqtt-lb: SIGUSR1 ignored: ${detail}\n`);
}
