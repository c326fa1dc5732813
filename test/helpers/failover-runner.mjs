#!/usr/bin/env node
/**
 * Stand-in for the mqtt-lb process in the netns failover tests: runs the COMPILED failover facade
 * (dist/src/failover/index.js; build with `npx tsc -p .`) plus a tiny TCP listener on 0.0.0.0:<tcpPort>
 * that answers one fixed byte, so a client probing VIP:port can tell which host holds the VIP.
 *
 *   node failover-runner.mjs '<json: { name, reply, tcpPort, failover: FailoverConfig }>'
 *
 * stdout, one JSON object per line: {"ev":"ready"} | {"ev":"state",routerId,from,to,t} | {"ev":"reply",id,result}
 *   | {"ev":"fatal",code,message}.  stdin, one JSON object per line: {id, cmd: status | stats | resign
 *   (timeoutMs) | block (ms: busy-loop the main thread) | tracking (fault, priorityPenalty) | lose-thread (terminate
 *   the heartbeat thread, as a crash) | ip-children (running `ip` children) | close}.
 * SIGTERM: resign (bounded) then close, like mqtt-lb's stop order. Logs (pino) go to stderr.
 */
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import pino from 'pino';

const { Failover } = await import(new URL('../../dist/src/failover/index.js', import.meta.url).href);
const { readProcStat } = await import(new URL('../../dist/src/proc-stat.js', import.meta.url).href);

const opts = JSON.parse(process.argv[2]);
const log = pino({ level: opts.logLevel ?? 'info', base: { host: opts.name } }, pino.destination(2));
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

let server = null;
if (opts.tcpPort) {
  server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.end(opts.reply ?? '?');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.tcpPort, '0.0.0.0', resolve);
  });
}

const failover = new Failover(opts.failover, log);
// t: the transition time taken in the heartbeat thread (causally ordered across hosts on one clock).
failover.on('state', (e) => out({ ev: 'state', ...e, t: e.at }));
try {
  await failover.start();
} catch (err) {
  out({ ev: 'fatal', code: err.code, message: err.message });
  server?.close();
  process.exit(2);
}
out({ ev: 'ready', t: Date.now() });

let stopping = null;
async function stop(resignMs) {
  stopping ??= (async () => {
    if (resignMs > 0) await failover.resign(resignMs);
    await failover.close();
    server?.close();
  })();
  return stopping;
}

const stats = () => {
  const s = failover.stats();
  return { transitions: Object.fromEntries(s.transitions), dropped: s.dropped };
};

/** The pids of this process's running (not zombie) children named `ip` (the heartbeat thread's `ip monitor`). */
function ipChildren() {
  const pids = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readProcStat(Number(name));
    if (stat !== null && stat.comm === 'ip' && stat.ppid === process.pid && stat.state !== 'Z') pids.push(Number(name));
  }
  return pids;
}

createInterface({ input: process.stdin }).on('line', async (line) => {
  let m;
  try {
    m = JSON.parse(line);
  } catch {
    return;
  }
  let result = null;
  switch (m.cmd) {
    case 'status':
      result = { instances: failover.status(), isMaster: failover.isMaster() };
      break;
    case 'stats':
      result = stats();
      break;
    case 'resign': {
      const t0 = Date.now();
      await failover.resign(m.timeoutMs ?? 3000);
      result = { startedAt: t0, resolvedAt: Date.now() };
      break;
    }
    case 'block': {
      // Stall the proxy's event loop (a burst of TLS handshakes): only the main thread, not the worker.
      const until = Date.now() + m.ms;
      while (Date.now() < until) {
        /* busy */
      }
      result = { blockedMs: m.ms };
      break;
    }
    case 'lose-thread': {
      // The heartbeat thread dies without a stop (as a crash would): terminate() skips its close().
      const worker = failover.worker;
      await worker?.terminate();
      result = { terminated: worker != null };
      break;
    }
    case 'ip-children':
      result = { running: ipChildren() };
      break;
    case 'tracking':
      failover.setTracking({ fault: m.fault, priorityPenalty: m.priorityPenalty ?? 0 });
      result = {};
      break;
    case 'close':
      await stop(0);
      out({ ev: 'reply', id: m.id, result: {} });
      process.exit(0);
      return;
    default:
      result = { error: `unknown command ${m.cmd}` };
  }
  out({ ev: 'reply', id: m.id, result });
});

process.on('SIGTERM', () => {
  void stop(opts.resignOnStopMs ?? 3000).then(() => process.exit(0));
});
