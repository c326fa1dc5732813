/**
 * The mqtt-lb command (design.md §3), loaded by cli.ts once the early signal handlers are in place:
 *   mqtt-lb [--config lb.yaml]          run the balancer
 *   mqtt-lb check --config FILE         validate, print every problem as FILE:LINE:COL key.path: message
 *   mqtt-lb status [--admin URL]        show a running instance
 *   mqtt-lb keygen                      print a new failover key
 */
import os from 'node:os';
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseConfig, readConfigFile, type ConfigText, type ParseOutcome } from './config/load.js';
import { formatProblem } from './errors.js';
import { VERSION } from './version.js';
import { printErr, printOut } from './cli-output.js';
import { exitOnStartFailure } from './load-failure.js';
import { budgetForConfig, openFileLimit } from './proxy/fd-budget.js';
import { workerCount } from './cluster/messages.js';
import { workerShare, workerShareWarnings } from './cluster/share.js';
import { resolveFindings, type Finding } from './config/resolve-check.js';

const USAGE = `usage:
  mqtt-lb [run] [--config FILE]         run the balancer (default ./lb.yaml)
  mqtt-lb check [--config FILE]         validate a configuration
  mqtt-lb status [--admin URL | --config FILE]
                                        status of a running instance (default http://127.0.0.1:9883;
                                        with --config, the file's admin.bind)
  mqtt-lb keygen                        print a new failover key (base64 of 32 random bytes)
  mqtt-lb help | --help                 this text
  mqtt-lb --version
  (-c FILE is --config FILE; --config=FILE and --admin=URL work too)

exit codes: 0 a clean stop, 1 a configuration or usage error, 2 cannot start (a port in use, a missing key file);
  status: 0 printed, 1 a usage or config error, 2 the admin server cannot be reached or answered an error
signals: SIGHUP reloads lb.yaml; SIGTERM / SIGINT stop gracefully (a second one closes the sessions at once); SIGUSR1, SIGUSR2, SIGQUIT, SIGALRM are ignored
docs: docs/configuration.md (every key), docs/operations.md (signals, logs, failover), docs/migration.md
  (from HAProxy + keepalived); node flags: MQTT_LB_NODE_FLAGS replaces bin/mqtt-lb's own
`;

interface Args {
  command: 'run' | 'check' | 'status' | 'keygen' | 'help' | 'version';
  config: string;
  /** --config was given (status reads admin.bind from it only then). */
  configGiven: boolean;
  admin: string | null;
}

/** A config file given without `--config` (`mqtt-lb check lb.yaml`: a new user's audit): say how to give it. */
function configHint(arg: string): string {
  return /\.ya?ml$/i.test(arg) || arg.includes('/') ? ` (a config file is given as \`--config ${arg}\`)` : '';
}

function parseArgs(argv: string[]): Args | string {
  const args: Args = { command: 'run', config: 'lb.yaml', configGiven: false, admin: null };
  const seen = new Set<string>();
  let i = 0;
  if (argv[0] !== undefined && !argv[0].startsWith('-')) {
    const c = argv[0];
    if (c !== 'check' && c !== 'status' && c !== 'keygen' && c !== 'run' && c !== 'help') return `unknown command: ${c}${configHint(c)}`;
    args.command = c;
    i = 1;
  }
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    const inline = eq > 0 ? a.slice(eq + 1) : undefined;
    const value = (): string | undefined => inline ?? argv[++i];
    // Given twice, which one counts is a guess: the operator may be reading the other.
    const canonical = name === '-c' ? '--config' : name;
    if (canonical.startsWith('--') && seen.has(canonical)) return `${canonical} given twice`;
    seen.add(canonical);
    switch (name) {
      case '--config':
      case '-c': {
        const v = value();
        if (v === undefined || v === '') return '--config needs a file';
        args.config = v;
        args.configGiven = true;
        break;
      }
      case '--admin': {
        const v = value();
        if (v === undefined || v === '') return '--admin needs a URL';
        args.admin = v;
        break;
      }
      case '--help':
      case '-h':
        args.command = 'help';
        break;
      case '--version':
      case '-v':
        args.command = 'version';
        break;
      default:
        return `unknown option: ${a}${a.startsWith('-') ? '' : configHint(a)}`;
    }
  }
  // An option the command does not use is a mistake the operator should hear of: `status --config lb.yaml` would
  // otherwise ask the default address instead of the file's admin.bind.
  if (args.command === 'status' && seen.has('--config') && seen.has('--admin')) return 'status takes --admin URL or --config FILE (its admin.bind), not both';
  if ((args.command === 'run' || args.command === 'check') && seen.has('--admin')) return '--admin is for `mqtt-lb status`';
  if (args.command === 'keygen' && (seen.has('--config') || seen.has('--admin'))) return 'keygen takes no options';
  return args;
}

/**
 * `status --config FILE`: http://HOST:PORT of the file's admin.bind; a wildcard bind is asked on loopback. Problems
 * (unreadable, invalid) come back as the text `check` would print.
 */
function adminUrlFromConfig(file: string): { url: string; problems: null } | { url: null; problems: string } {
  const outcome = parseFile(file, false);
  if (typeof outcome === 'string') return { url: null, problems: outcome };
  if (outcome.config === null) return { url: null, problems: problemLines(outcome) };
  const { host, port } = outcome.config.admin.address;
  const reachable = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return { url: `http://${reachable.includes(':') ? `[${reachable}]` : reachable}:${port}`, problems: null };
}

/** The file read and validated; a file that cannot be read is the line to print instead. */
function parseFile(file: string, checkFiles: boolean): ParseOutcome | string {
  let read: ConfigText;
  try {
    read = readConfigFile(file);
  } catch (err) {
    // The same words as a start's (`cannot read config file …: ENOENT: no such file or directory, …`).
    return `${file}: cannot read: ${(err as Error).message}\n`;
  }
  return parseConfig(read.text, file, { checkFiles, notUtf8At: read.notUtf8At });
}

/** Every problem as `FILE:LINE:COL key.path: message`, a line each. */
function problemLines(outcome: ParseOutcome): string {
  return outcome.problems.map((p) => formatProblem(p) + '\n').join('');
}

/**
 * Who besides root and this user may change the config file (a security audit): its group or others by its mode, an
 * owner who is neither, or anyone who may replace it in its directory (writable by others, not sticky). Null: no one.
 */
function configWriters(file: string): string | null {
  try {
    const me = process.geteuid?.() ?? 0;
    const st = statSync(file);
    const mode = (st.mode & 0o777).toString(8);
    if ((st.mode & 0o002) !== 0) return `others (mode ${mode})`;
    if ((st.mode & 0o020) !== 0) return `its group (mode ${mode})`;
    if (st.uid !== 0 && st.uid !== me) return `its owner, uid ${st.uid}, neither root nor this user`;
    const dir = statSync(dirname(resolve(file)));
    if ((dir.mode & 0o002) !== 0 && (dir.mode & 0o1000) === 0) return `anyone who replaces it in its directory (mode ${(dir.mode & 0o7777).toString(8)})`;
    return null;
  } catch {
    return null;
  }
}

async function check(file: string): Promise<number> {
  const outcome = parseFile(file, true);
  if (typeof outcome === 'string') {
    printErr(outcome);
    return 1;
  }
  printErr(problemLines(outcome) + outcome.warnings.map((w) => `warning: ${w}\n`).join(''));
  if (outcome.problems.length > 0) return 1;
  if (outcome.config !== null) {
    // The caps a balancer started from this shell would run with (same open-file limit): a warning, not an error.
    // With workers, each worker has the limit for its share of the caps.
    const workers = workerCount(outcome.config.workers, os.availableParallelism());
    const perProcess = workers > 1 ? workerShare(outcome.config, workers, 0) : outcome.config;
    const prefix = workers > 1 ? `each of ${workers} workers: ` : '';
    const budget = budgetForConfig(perProcess, openFileLimit());
    if (budget.noRoom !== null) {
      // Not a problem of the file, but the balancer would not start from this shell (exit 2, MQLB_START_FD_LIMIT).
      // With no room at all, the clamps to 0 or next to nothing are beside the point: no warnings.
      printErr(`error: ${prefix}${budget.noRoom}\n`);
      return 1;
    }
    for (const c of budget.clamps) printErr(`${c.written ? 'warning' : 'note'}: ${prefix}${c.warning}\n`);
    for (const w of workerShareWarnings(outcome.config, workers, os.availableParallelism())) printErr(`warning: ${w}\n`);
    const writers = configWriters(file);
    if (writers !== null) printErr(`warning: ${file} is writable by ${writers}: whoever can write it controls this balancer, and runs commands with its rights (failover.notify, track scripts) at the next reload (chmod go-w)\n`);
    // Host names, resolved here as a start would: binds that would fail, servers that would be down.
    const resolved = await resolveFindings(outcome.config);
    // Said as the problems and warnings above are: FILE:LINE:COL path: message.
    const at = (f: Finding): string => `${outcome.locate?.(f.path) ?? file} ${f.path}: ${f.message}`;
    for (const w of resolved.warnings) printErr(`warning: ${at(w)}\n`);
    if (resolved.errors.length > 0) {
      printErr(resolved.errors.map((e) => `${at(e)}\n`).join(''));
      return 1;
    }
  }
  printOut(`${file}: ok\n`);
  return 0;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (typeof args === 'string') {
    printErr(`mqtt-lb: ${args}\n${USAGE}`);
    return 1;
  }
  switch (args.command) {
    case 'help':
      printOut(USAGE);
      return 0;
    case 'version':
      printOut(`${VERSION}\n`);
      return 0;
    case 'check':
      return await check(args.config);
    case 'keygen': {
      const { generateKey } = await import('./failover/key.js');
      printOut(generateKey() + '\n');
      return 0;
    }
    case 'status': {
      const { DEFAULT_ADMIN_URL, fetchReadiness, fetchStatus, fetchWorkers, formatStatus, statusUrl } = await import('./telemetry/status-client.js');
      let fromConfig: string | null = null;
      if (args.configGiven) {
        // The running instance's admin address, as its lb.yaml says (what HAProxy users get from `stats socket`).
        const bind = adminUrlFromConfig(args.config);
        if (bind.problems !== null) {
          printErr(bind.problems);
          return 1;
        }
        fromConfig = bind.url;
      }
      const admin = args.admin ?? fromConfig ?? DEFAULT_ADMIN_URL;
      try {
        statusUrl(admin);
      } catch (err) {
        // A URL that cannot be an admin server's is a usage error (exit 1), not an unreachable server (exit 2).
        printErr(`mqtt-lb: ${(err as Error).message}\n${USAGE}`);
        return 1;
      }
      let text: string;
      try {
        const status = await fetchStatus(admin);
        const readiness = await fetchReadiness(admin);
        const workers = await fetchWorkers(admin);
        try {
          text = formatStatus(status, readiness, workers);
        } catch {
          // Fields of another shape than ours (another program, another version): said, not a TypeError.
          throw new Error(`${statusUrl(admin).href} answered a status document this mqtt-lb cannot show`);
        }
      } catch (err) {
        // Asked at the default address: a balancer with another admin.bind is found through its file (a new user's
        // audit: the message did not say so).
        const hint = args.admin === null && fromConfig === null && (err as Error).message.startsWith('cannot reach') ? ' (is it running? with another admin.bind, give `--config FILE` or `--admin URL`)' : '';
        printErr(`mqtt-lb status: ${(err as Error).message}${hint}\n`);
        return 2;
      }
      printOut(text);
      return 0;
    }
    case 'run': {
      const { runBalancer } = await import('./run.js');
      return runBalancer(args.config);
    }
  }
}

main().then(
  (code) => {
    process.exitCode = code;
    // Exit explicitly: a stopped balancer may still hold unref'd handles we do not want to wait for.
    setImmediate(() => process.exit(code));
  },
  exitOnStartFailure,
);
