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
import { createInterface } from 'node:readline';

const [host, portS, intervalS, timeoutS] = process.argv.slice(2);
const port = Number(portS);
const intervalMs = Number(intervalS ?? 5);
const timeoutMs = Number(timeoutS ?? 50);
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

let attempts = 0;
let oks = 0;
let lastOkAt = null;
let maxGapMs = 0;
let maxGapEndedAt = null;
let whoCounts = {};
let lastKey = null;
let lastWho = null;
let running = true;

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

async function loop() {
  while (running) {
    attempts++;
    const who = await probe();
    const now = Date.now();
    if (who !== null) {
      oks++;
      whoCounts[who] = (whoCounts[who] ?? 0) + 1;
      if (lastOkAt !== null && now - lastOkAt > maxGapMs) {
        maxGapMs = now - lastOkAt;
        maxGapEndedAt = now;
      }
      lastOkAt = now;
      lastWho = who;
    }
    const key = who === null ? 'fail' : `ok:${who}`;
    if (key !== lastKey) {
      lastKey = key;
      out({ ev: 'change', t: now, ok: who !== null, who });
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'report') {
    out({ ev: 'report', attempts, oks, maxGapMs, maxGapEndedAt, whoCounts, lastWho });
    attempts = 0;
    oks = 0;
    maxGapMs = 0;
    maxGapEndedAt = null;
    whoCounts = {};
  } else if (cmd === 'quit') {
    running = false;
    process.exit(0);
  }
});
process.stdin.on('end', () => process.exit(0));
void loop();
