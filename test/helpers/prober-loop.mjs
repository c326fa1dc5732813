/**
 * The measuring loop shared by the netns VIP probers (vip-prober.mjs: TCP, mqtt-vip-prober.mjs: MQTT):
 * every `intervalMs` one probe (a NEW connection); stdout {"ev":"change",t,ok,who} whenever the answer
 * changes; on stdin "report" → {"ev":"report",attempts,oks,maxGapMs,maxGapEndedAt,whoCounts,lastWho}
 * (counters reset), "quit" exits. maxGapMs = the longest time between two consecutive successful probes
 * since the last report: the outage a client saw.
 */
import { createInterface } from 'node:readline';

export const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

/** `probe()` resolves to who answered (a short string) or null for no answer. */
export function runProber(probe, intervalMs) {
  let attempts = 0;
  let oks = 0;
  let lastOkAt = null;
  let maxGapMs = 0;
  let maxGapEndedAt = null;
  let whoCounts = {};
  let lastKey = null;
  let lastWho = null;
  let running = true;

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
}
