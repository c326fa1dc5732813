/**
 * The error catalogue: every error mqtt-lb raises on purpose has a stable code here.
 * Match on `code`, never on message text (undici's rule). Codes are never reused.
 */
import type { LogConfig } from './config/types.js';

export const ErrorCodes = {
  CONFIG_INVALID: 'MQLB_CONFIG_INVALID', // lb.yaml has problems (see .problems)
  CONFIG_READ: 'MQLB_CONFIG_READ', // the file cannot be read
  START_BIND: 'MQLB_START_BIND', // a listener, the admin port, a worker or the failover UDP port cannot bind
  START_FILE: 'MQLB_START_FILE', // a file named by the config (key, cert) cannot be read at start
  START_FD_LIMIT: 'MQLB_START_FD_LIMIT', // the open-file limit leaves room for no client session
  SERVER_CONNECT_TIMEOUT: 'MQLB_SERVER_CONNECT_TIMEOUT', // a dial took longer than serverConnectTimeout (logged as its code)
  SERVER_RESOLVE_TIMEOUT: 'MQLB_SERVER_RESOLVE_TIMEOUT', // a dial's name lookup took all of serverConnectTimeout (not the server's fault)
  FAILOVER_COMMAND: 'MQLB_FAILOVER_COMMAND', // ip/arping failed
  FAILOVER_INTERFACE: 'MQLB_FAILOVER_INTERFACE', // failover.interface absent or without an IPv4 address: failover waits for it
  FAILOVER_START: 'MQLB_FAILOVER_START', // the heartbeat thread exited or did not start in time, or met a setting it cannot use
  FAILOVER_KEY: 'MQLB_FAILOVER_KEY', // authKeyFile missing or malformed
  RELOAD_WHILE_STOPPING: 'MQLB_RELOAD_WHILE_STOPPING', // SIGHUP after SIGTERM: the reload is ignored
  RELOAD_WORKER: 'MQLB_RELOAD_WORKER', // a worker could not take the reload (none applied it)
  LOG_LINES_DROPPED: 'MQLB_LOG_LINES_DROPPED', // log lines beyond log.bufferBytes were dropped (a slow log reader)
  ADMIN_STATE_FILE: 'MQLB_ADMIN_STATE_FILE', // admin.stateFile could not be written (the admin states hold until a restart)
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class MqttLbError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MqttLbError';
    this.code = code;
  }
}

/** One problem found in lb.yaml, printed as `FILE:LINE:COL key.path: message`. */
export interface ConfigProblem {
  file: string;
  line: number; // 1-based
  col: number; // 1-based
  path: string; // "pools.brokers.servers[0].address"
  message: string;
}

/** One line per problem, whatever the file held: control characters (a CR, a newline in a key) are escaped. */
export function formatProblem(p: ConfigProblem): string {
  return `${escapeControls(p.file)}:${p.line}:${p.col} ${escapeControls(p.path)}: ${escapeControls(p.message)}`;
}

function escapeControls(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const named = JSON.stringify(c).slice(1, -1); // \n, \r, \t ... or \u00XX
    return named.length > 1 ? named : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/** An error made of config problems, each printed as `FILE:LINE:COL key.path: message`. */
abstract class ProblemsError extends MqttLbError {
  readonly problems: ConfigProblem[];
  constructor(code: ErrorCode, problems: ConfigProblem[]) {
    super(code, problems.map(formatProblem).join('\n'));
    this.problems = problems;
  }
}

export class ConfigError extends ProblemsError {
  constructor(problems: ConfigProblem[]) {
    super(ErrorCodes.CONFIG_INVALID, problems);
    this.name = 'ConfigError';
  }
}

/**
 * The config is valid but a file it names is missing or unusable: at start that means "cannot start" (exit 2,
 * design.md §3: "missing key file"), while `mqtt-lb check` and a reload report it like any config problem.
 */
export class ConfigFileError extends ProblemsError {
  /** The log settings of the config, which is valid: the start's `fatal` line goes where the operator looks. */
  readonly log: LogConfig;
  constructor(problems: ConfigProblem[], log: LogConfig) {
    super(ErrorCodes.START_FILE, problems);
    this.name = 'ConfigFileError';
    this.log = log;
  }
}

/**
 * What to do about an address that cannot be bound, after its OS error code (a new user's audit: a second instance on
 * one config, or a port someone else holds, said `EADDRINUSE` and no more). '' when there is nothing to add.
 */
export function bindHint(code: string | undefined, port: number): string {
  if (code === 'EADDRINUSE') return ` (something already listens there: another mqtt-lb on this config? \`ss -ltnp 'sport = :${port}'\` names it)`;
  if (code === 'EADDRNOTAVAIL') return ' (not an address of this host: bind 0.0.0.0, or a VIP only where failover holds it)';
  if (code === 'EACCES') return ' (a port below 1024 needs CAP_NET_BIND_SERVICE or root)';
  return '';
}
