/**
 * Worker-thread entry of the failover heartbeat (started by the Failover facade in index.ts). Adverts, the
 * state machines and the VIP/GARP commands live here so that the proxy's event loop — busy with thousands of
 * TLS handshakes — can stall without delaying a single advert.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { watchChildren } from './children.js';
import { Heartbeat } from './heartbeat.js';
import { cloneableFields, type LogLevel, type LogSink } from './log.js';
import type { MainToWorker, WorkerInit, WorkerToMain } from './messages.js';

/** Nice value of the heartbeat thread (the proxy threads stay at 0). */
const HEARTBEAT_NICE = -10;

const port = parentPort;
if (port === null) throw new Error('failover/worker.js must run as a worker thread');

const post = (m: WorkerToMain): void => port.postMessage(m);
const forward =
  (level: LogLevel) =>
  (obj: object, msg: string): void =>
    post({ type: 'log', level, obj: cloneableFields(obj), msg });
const log: LogSink = { debug: forward('debug'), info: forward('info'), warn: forward('warn'), error: forward('error') };

// Every child this thread runs, told to the main thread: it stops those still running should this thread die.
watchChildren({ started: (child) => post({ type: 'child', ...child }), ended: (pid) => post({ type: 'child-ended', pid }) });

const init = workerData as WorkerInit;
raiseThreadPriority();
let heartbeat: Heartbeat | null = null;

try {
  heartbeat = new Heartbeat({ config: init.config, key: Buffer.from(init.key), held: init.held, log, emit: post });
} catch (err) {
  fatal(err);
}

port.on('message', (m: MainToWorker) => {
  if (heartbeat === null) return;
  switch (m.type) {
    case 'tracking':
      heartbeat.setTracking(m.fault, m.priorityPenalty);
      break;
    case 'serving':
      heartbeat.serving();
      break;
    case 'reconfigure':
      heartbeat.reconfigure(m.config);
      break;
    case 'resign':
      heartbeat.resign(m.seq);
      break;
    case 'released':
      heartbeat.released(m.seq);
      break;
    case 'close':
      void heartbeat.close().then(() => {
        post({ type: 'closed' });
        port.close();
      });
      break;
  }
});

if (heartbeat !== null) {
  heartbeat.start().then(
    () => post({ type: 'ready' }),
    (err: unknown) => {
      fatal(err);
      // Nothing was started that needs a graceful stop beyond closing what exists.
      void heartbeat?.close();
    },
  );
}

function fatal(err: unknown): void {
  const code = err instanceof MqttLbError ? err.code : ErrorCodes.FAILOVER_START;
  post({ type: 'fatal', code, message: err instanceof Error ? err.message : String(err) });
}

/**
 * keepalived runs its VRRP process at a raised (realtime) priority so that a busy host does not delay
 * adverts (vrrp-facts §3.10). On Linux, setpriority() on a thread id affects only that thread: lower this
 * thread's nice value (needs CAP_SYS_NICE; without it we keep the default and say so at debug level).
 */
function raiseThreadPriority(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return;
    setPriority(tid, HEARTBEAT_NICE);
  } catch (err) {
    log.debug({ err }, 'failover heartbeat thread keeps the default priority');
  }
}
