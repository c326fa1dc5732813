/**
 * Running the balancer as a process: load the config, start the App, and map signals to reload/stop.
 * Resolves with the process exit code (0 clean stop, 1 config error, 2 cannot start).
 */
import { loadConfig } from './config/load.js';
import { TakeoverHistory } from './config/restart-only.js';
import { ConfigError, ConfigFileError, ErrorCodes, MqttLbError, formatProblem } from './errors.js';
import { createLogger } from './telemetry/logger.js';
import os from 'node:os';
import { App, isReloadWhileStopping } from './app.js';
import { installTestHooks } from './test-hooks.js';
import { ClusterPrimary } from './cluster/primary.js';
import { workerCount } from './cluster/messages.js';
import { workerShareWarnings } from './cluster/share.js';
import { socketEngine } from './proxy/handle-socket.js';
import { watchNpmExec } from './launcher-watch.js';
import { printErr } from './cli-output.js';
import { WarmUp } from './warm-up.js';
import { takeEarlySignals } from './early-signals.js';
import { ignoreForeignSignals, sayForeignSignalsTo } from './foreign-signals.js';

export async function runBalancer(file: string): Promise<number> {
  let config;
  const warnings: string[] = [];
  try {
    config = loadConfig(file, { onWarning: (w) => warnings.push(w), filesAsStartError: true });
  } catch (err) {
    if (err instanceof ConfigError || err instanceof ConfigFileError) {
      printErr(err.problems.map((p) => formatProblem(p) + '\n').join(''));
      if (err instanceof ConfigError) return 1;
      // A valid config naming a missing or unusable file (key, certificate): cannot start (design.md §3), told
      // as every other failed start is: a fatal line in the log, then one line on stderr.
      const log = createLogger(err.log);
      logCannotStart(log, err);
      printErr(`mqtt-lb: cannot start (${err.code}): a file the config names is missing or unusable\n`);
      await flushLogs(log);
      return 2;
    }
    const code = err instanceof MqttLbError ? ` (${err.code})` : '';
    printErr(`${(err as Error).message}${code}\n`);
    return 1;
  }
  const log = createLogger(config.log);
  ignoreForeignSignals(); // already, under cli.ts; the demo (npm start) comes here directly
  sayForeignSignalsTo(log);
  for (const w of warnings) log.warn({ detail: w }, 'config warning');
  const workers = workerCount(config.workers, os.availableParallelism());
  for (const w of workerShareWarnings(config, workers, os.availableParallelism())) log.warn({ detail: w }, 'config warning');
  const app = new App(config, log, workers > 1 ? 'primary' : 'single');
  // With workers, each worker warms itself (worker-main.ts): the primary holds no session.
  const warmUp = workers > 1 || config.warmUp === 0 ? null : new WarmUp(config, log);
  const primary = workers > 1 ? new ClusterPrimary(app, workers, log) : null;
  if (primary !== null) {
    app.stopWorkers = (rate, timeoutMs) => primary.stopWorkers(rate, timeoutMs);
    app.releaseInWorkers = (vips, rate, spreadMs, signal) => primary.releaseVips(vips, rate, spreadMs, signal);
    app.workerLoopLag = () => primary.takeWorkerLag();
    app.workerProcessMetrics = () => primary.processMetrics();
    app.workerCounts = () => primary.workerCounts();
  }
  // Signals count from the first moment. Left to their default action while the workers start (up to seconds),
  // a SIGTERM or a logrotate SIGHUP killed the primary (exit 143/129) and its workers failed writing to it.
  const early: { stop: NodeJS.Signals | null; reload: boolean } = { stop: null, reload: false };
  const stopWhileStarting = (signal: NodeJS.Signals): void => {
    if (early.stop !== null) {
      // A second one: do not wait for a start that may take seconds (workers, failover). The workers are killed
      // first: one whose primary just vanished would log it as a failure ('primary process gone').
      printErr(`mqtt-lb: second ${signal} while starting: exiting now\n`);
      primary?.killWorkers();
      process.exit(1);
    }
    log.info({ signal }, 'stop requested while starting: stopping once started');
    early.stop = signal;
    app.cutStartShort();
    void warmUp?.close();
    primary?.stopWarmUps();
  };
  const reloadWhileStarting = (): void => {
    if (!early.reload) log.info({}, 'config reload requested while starting: applying it once started');
    early.reload = true;
  };
  process.on('SIGTERM', stopWhileStarting);
  process.on('SIGINT', stopWhileStarting);
  process.on('SIGHUP', reloadWhileStarting);
  // What came while the modules loaded and the config was read (cli.ts caught it: early-signals.ts).
  const before = takeEarlySignals();
  if (before.stop !== null) stopWhileStarting(before.stop);
  if (before.reload) reloadWhileStarting();
  const startedOrFailed = (): void => {
    process.removeListener('SIGTERM', stopWhileStarting);
    process.removeListener('SIGINT', stopWhileStarting);
    process.removeListener('SIGHUP', reloadWhileStarting);
  };
  let served = false;
  try {
    const abandon = (): boolean => early.stop !== null;
    served = await app.start(warmUp === null ? { abandon } : { beforeListeners: () => warmUp.run(), abandon });
    // Not when a stop came while starting (nothing was bound): no workers forked only to be stopped.
    if (primary !== null && served) {
      // False: the stop came while the workers started, and one bound nothing; the stop follows.
      served = await primary.start();
    }
  } catch (err) {
    // First what went wrong, then the stop's own lines (what was started is closed again).
    const code = logCannotStart(log, err);
    await app.stop();
    // And one line for whoever started it at a terminal (the JSON line carries the stack).
    printErr(`mqtt-lb: cannot start${code === undefined ? '' : ` (${code})`}: ${(err as Error).message}\n`);
    await flushLogs(log);
    startedOrFailed();
    return 2;
  }
  // Not when a stop signal came during the warm-up or the first health checks: nothing was bound, and the stop follows below.
  if (served) log.info({ version: app.version, config: config.file, sockets: socketEngine() }, 'mqtt-lb started');

  let reloading: Promise<void> = Promise.resolve();
  // pools.<name>.takeover needs a restart (restart-only.ts): what each pool name has run with.
  const takeovers = new TakeoverHistory(config);
  let stopRequested = false;
  let hupIgnoredLogged = false;
  // Said once per stop: a reload loop must not flood the log of a stopping balancer.
  const sayReloadIgnored = (): void => {
    if (!hupIgnoredLogged) log.warn({ code: ErrorCodes.RELOAD_WHILE_STOPPING }, 'config reload ignored: stopping');
    hupIgnoredLogged = true;
  };
  const onHup = (): void => {
    if (stopRequested) {
      // Ignored until the exit (the handler stays: a SIGHUP's default action would kill the process while its last
      // log lines are written).
      sayReloadIgnored();
      return;
    }
    reloading = reloading.then(async () => {
      try {
        const { config: next, kept } = takeovers.keep(loadConfig(file, { onWarning: (w) => log.warn({ detail: w }, 'config warning'), regularOnly: true }));
        // The new file's caps over the running workers, as at start (a workers audit: a cap lowered below the worker
        // count by a reload went unsaid); not again that there are more workers than cores (`workers` needs a restart).
        for (const w of workerShareWarnings(next, workers, Number.POSITIVE_INFINITY)) log.warn({ detail: w }, 'config warning');
        // With workers, the primary prepares the reload everywhere first and applies it only if all can.
        if (primary !== null) await primary.reload(next);
        else await app.reload(next);
        takeovers.record(next);
        for (const k of kept) log.warn(k, 'pools.<name>.takeover change needs a restart');
        app.metrics?.configReload('ok');
        log.info({ config: next.file }, 'config reloaded');
      } catch (err) {
        if (isReloadWhileStopping(err)) {
          sayReloadIgnored();
          return;
        }
        app.metrics?.configReload('error');
        if (err instanceof ConfigError) {
          log.error({ code: err.code, problems: err.problems.map(formatProblem) }, 'config reload rejected: keeping the running config');
        } else {
          log.error({ err }, 'config reload failed: keeping the running config');
        }
      }
    });
  };
  process.on('SIGHUP', onHup);
  installTestHooks(log);

  return new Promise<number>((resolve) => {
    let signals = 0;
    const onStop = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        // A second signal: do not wait for the drain.
        log.warn({ signal }, 'second stop signal: closing sessions now');
        app.destroyAllSessions();
        primary?.destroySessions();
        return;
      }
      log.info({ signal }, 'stop requested');
      stopRequested = true;
      void app.stop().then(async () => {
        await flushLogs(log);
        resolve(0);
      });
    };
    process.on('SIGTERM', onStop);
    process.on('SIGINT', onStop);
    // Not a second signal: a Ctrl-C reaches the balancer and its npx shell alike, and the shell exiting then
    // must not cut the drain short.
    const unwatch = watchNpmExec((what) => {
      if (signals > 0) return;
      log.info({ detail: what }, 'stop requested: the launching process has gone');
      onStop('SIGTERM');
    });
    process.once('exit', unwatch);
    startedOrFailed();
    if (early.stop !== null) onStop(early.stop);
    if (early.reload) onHup(); // after a stop: said to be ignored
    // Failover was held through the start: released now that the proxy serves, after a reload that came while starting
    // (an audit: a priority lowered or preempt turned off by it came too late for the first election, and the host
    // took the VIP from its peer). A stop noted meanwhile keeps it held (releaseFailover).
    if (served) void reloading.then(() => app.releaseFailover());
  });
}

/** Every failed start is told alike: a fatal line with the catalogue code (the JSON carries the stack). */
function logCannotStart(log: ReturnType<typeof createLogger>, err: unknown): string | undefined {
  const code = err instanceof MqttLbError ? err.code : undefined;
  log.fatal({ err, code }, 'cannot start');
  return code;
}

function flushLogs(log: { flush?: (cb?: (err?: Error) => void) => void }): Promise<void> {
  return new Promise((resolve) => {
    if (typeof log.flush !== 'function') return resolve();
    log.flush(() => resolve());
  });
}
