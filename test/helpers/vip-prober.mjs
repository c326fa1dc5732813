#!/usr/bin/env node
/**
 * Client-side probe for the netns failover tests: every `intervalMs`, a NEW TCP connection to host:port
 * (abandoned after `timeoutMs`, so a SYN towards a stale MAC never waits for the kernel's 1 s retransmit).
 * A probe succeeds when the listener's one-byte answer arrives; the byte says which LB host answered.
 *
 *   node vip-prober.mjs HOST PORT [intervalMs=5] [timeoutMs=50]
 *
 * stdout JSON lines: {"ev":"change",t,ok,who} whenever the answer changes; on stdin "report":
 * {"ev":"report",attempts,oks,maxGapMs,maxGapEndedAt,whoCounts,lastWho} (then counters reset); "quit" exits.
 * maxGapMs = the longest time between two consecutive successful probes since the last report: the outage.
 */
import net from 'node:net';
import { runProber } from './prober-loop.mjs';

const [host, portS, intervalS, timeoutS] = process.argv.slice(2);
const port = Number(portS);
const intervalMs = Number(intervalS ?? 5);
const timeoutMs = Number(timeoutS ?? 50);


function probe() {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let done = false;
    const finish = (who) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(who);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    sock.on('data', (d) => finish(d.toString('latin1', 0, 1)));
    sock.on('error', () => finish(null));
    sock.on('end', () => finish(null));
  });
}

runProber(probe, intervalMs);
