/**
 * failover.track.scripts (src/failover/track-scripts.ts): rise/fall over the runs, what a failing script asks for
 * (FAULT with weight 0, a priority penalty otherwise), the schedule, a reload, the stop. A manual clock and a
 * scripted runner; the real runner runs real executables in the last block.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TrackScripts, type ScriptResult } from '../../src/failover/track-scripts.js';
import type { TrackScriptConfig } from '../../src/config/types.js';
import type { LogSink } from '../../src/failover/log.js';
import { waitForPidFile } from '../helpers/processes.js';

function script(name: string, over: Partial<TrackScriptConfig> = {}): TrackScriptConfig {
  return { name, command: `/bin/${name}`, args: [], interval: 1000, timeout: 500, rise: 1, fall: 1, weight: 0, ...over };
}

class Harness {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 1;
  /** Per script name: the results its next runs give (the last one repeats). */
  readonly results = new Map<string, boolean[]>();
  readonly runs: Array<{ name: string; at: number }> = [];
  readonly lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> = [];
  changes = 0;
  /** Runs that have not answered yet, when `hold` is set. */
  hold = false;
  readonly pending: Array<{ finish: (passed: boolean) => void; signal: AbortSignal }> = [];
  readonly scripts: TrackScripts;

  constructor(list: TrackScriptConfig[]) {
    const sink = (level: string) => (obj: object, msg: string) => this.lines.push({ level, msg, obj: obj as Record<string, unknown> });
    const log: LogSink = { debug: sink('debug'), info: sink('info'), warn: sink('warn'), error: sink('error') };
    this.scripts = new TrackScripts(list, log, () => this.changes++, {
      now: () => this.t,
      setTimer: (fn, ms) => {
        const id = this.nextId++;
        this.timers.push({ at: this.t + ms, fn, id });
        return id;
      },
      clearTimer: (h) => {
        this.timers = this.timers.filter((x) => x.id !== h);
      },
      run: (cfg, signal) => {
        this.runs.push({ name: cfg.name, at: this.t });
        if (this.hold) return new Promise<ScriptResult>((resolve) => this.pending.push({ finish: (passed) => resolve({ passed, detail: passed ? '' : `${cfg.command}: exit 1` }), signal }));
        const queue = this.results.get(cfg.name) ?? [true];
        const passed = queue.length > 1 ? queue.shift()! : queue[0]!;
        return Promise.resolve({ passed, detail: passed ? '' : `${cfg.command}: exit 1` });
      },
    });
  }

  /** Moves the clock, firing due timers in order and letting each run's promise settle. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (next === undefined || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      for (let i = 0; i < 5; i++) await Promise.resolve();
    }
    this.t = end;
  }

  get timerCount(): number {
    return this.timers.length;
  }
}

describe('TrackScripts', () => {
  it('the first run decides at once; then it fails after `fall` failures in a row and passes after `rise` passes', async () => {
    const h = new Harness([script('gw', { fall: 2, rise: 3 })]);
    expect(h.scripts.fault).toBe(false); // no result yet: counts as passing...
    expect(h.scripts.settled).toBe(false); // ...but the host may not become master before it has one
    h.results.set('gw', [true, false, true, false, false, true, true, true]);
    await h.advance(0);
    expect(h.runs).toEqual([{ name: 'gw', at: 0 }]);
    expect(h.scripts.settled).toBe(true);
    expect(h.changes).toBe(1); // settled
    await h.advance(1000); // fail
    await h.advance(1000); // pass: the streak starts over
    await h.advance(1000); // fail
    expect(h.scripts.fault).toBe(false);
    await h.advance(1000); // fail: two in a row
    expect(h.scripts.fault).toBe(true);
    expect(h.scripts.failing()).toEqual(['gw']);
    expect(h.changes).toBe(2);
    expect(h.lines.filter((l) => l.level === 'warn')).toEqual([
      { level: 'warn', msg: 'failover track script failing', obj: { script: 'gw', weight: 0, effect: 'fault', detail: '/bin/gw: exit 1' } },
    ]);
    await h.advance(2000); // two passes: not yet
    expect(h.scripts.fault).toBe(true);
    await h.advance(1000); // the third
    expect(h.scripts.fault).toBe(false);
    expect(h.changes).toBe(3);
    expect(h.lines.at(-1)).toMatchObject({ level: 'info', msg: 'failover track script passing', obj: { script: 'gw' } });
    expect(h.runs.map((r) => r.at)).toEqual([0, 1000, 2000, 3000, 4000, 5000, 6000, 7000]);
    h.scripts.close();
  });

  it('a first run that fails is a failing script at once, whatever `fall` says (no moment as master at start)', async () => {
    const h = new Harness([script('gw', { fall: 3 }), script('up', { weight: 40, fall: 3 })]);
    h.results.set('gw', [false]);
    h.results.set('up', [false]);
    await h.advance(0);
    expect(h.scripts.settled).toBe(true);
    expect(h.scripts.fault).toBe(true);
    expect(h.scripts.priorityPenalty).toBe(40);
  });

  it('scripts without a first result hold mastership, whatever their weight: at start, and when a reload adds one', async () => {
    const h = new Harness([script('up', { weight: 40 })]);
    expect(h.scripts.settled).toBe(false); // a weight too: preempting, then handing back a second later, is a flap
    h.hold = true;
    await h.advance(0);
    h.pending.shift()!.finish(true);
    for (let i = 0; i < 5; i++) await Promise.resolve();
    expect(h.scripts.settled).toBe(true);
    // A reload that replaces a failing check with another (a rename): the new one holds until its first result, so a
    // host in FAULT for the old one does not take the VIP in between.
    const changes = h.changes;
    h.scripts.reconfigure([script('up', { weight: 40 }), script('gw')]);
    expect(h.scripts.settled).toBe(false);
    expect(h.changes).toBe(changes + 1);
    await h.advance(0);
    h.pending.at(-1)!.finish(false);
    for (let i = 0; i < 5; i++) await Promise.resolve();
    expect(h.scripts.settled).toBe(true);
    expect(h.scripts.fault).toBe(true);
    // One dropped before its first result holds no longer.
    const g = new Harness([script('gw', { weight: 20 })]);
    g.hold = true;
    await g.advance(0);
    expect(g.scripts.settled).toBe(false);
    g.scripts.reconfigure([]);
    expect(g.scripts.settled).toBe(true);
  });

  it('a weight lowers the priority instead of FAULT; the weights of the failing scripts add up', async () => {
    const h = new Harness([script('a', { weight: 20 }), script('b', { weight: 30 }), script('c', { weight: 0 })]);
    h.results.set('a', [false]);
    h.results.set('b', [true, false]);
    await h.advance(0);
    expect(h.scripts.priorityPenalty).toBe(20);
    expect(h.scripts.fault).toBe(false);
    expect(h.lines.find((l) => l.level === 'warn')?.obj).toMatchObject({ script: 'a', effect: 'priority -20' });
    await h.advance(1000);
    expect(h.scripts.priorityPenalty).toBe(50);
    h.scripts.close();
  });

  it('a run longer than the interval: the next starts when it ends, never two at once', async () => {
    const h = new Harness([script('slow', { interval: 1000 })]);
    h.hold = true;
    await h.advance(0);
    expect(h.runs).toHaveLength(1);
    await h.advance(2500);
    expect(h.runs).toHaveLength(1); // still running: no second run
    h.pending.shift()!.finish(true);
    for (let i = 0; i < 5; i++) await Promise.resolve();
    await h.advance(0);
    expect(h.runs.map((r) => r.at)).toEqual([0, 2500]);
    h.scripts.close();
  });

  it('a reload keeps each script\'s state by name, applies a new weight and a shorter interval at once, and says so', async () => {
    const h = new Harness([script('a', { weight: 10 }), script('b'), script('c', { interval: 20_000 })]);
    h.results.set('a', [false]);
    h.results.set('b', [false]);
    await h.advance(0);
    expect(h.scripts.priorityPenalty).toBe(10);
    expect(h.scripts.fault).toBe(true);
    const changesBefore = h.changes;
    // a: new weight (at once, with a line); b: new args, still failing (no moment of passing); c: a shorter interval.
    h.scripts.reconfigure([script('a', { weight: 40 }), script('b', { args: ['x'] }), script('c', { interval: 1000 }), script('d')]);
    expect(h.scripts.priorityPenalty).toBe(40);
    expect(h.scripts.fault).toBe(true);
    expect(h.changes).toBe(changesBefore + 1);
    expect(h.lines.filter((l) => l.level === 'warn').at(-1)).toMatchObject({ obj: { script: 'a', weight: 40, effect: 'priority -40', detail: 'the reload changed its weight' } });
    const runsBefore = h.runs.length;
    await h.advance(0);
    expect(h.runs.slice(runsBefore).map((r) => r.name)).toEqual(['d']); // a, b, c keep their schedules...
    await h.advance(1000);
    expect(h.runs.slice(runsBefore).map((r) => r.name).sort()).toEqual(['a', 'b', 'c', 'd', 'd']); // ...c's moved up from 20 s
    // Dropping the failing ones: nothing asked for any more, and said.
    h.scripts.reconfigure([]);
    expect(h.scripts.priorityPenalty).toBe(0);
    expect(h.scripts.fault).toBe(false);
    expect(h.timerCount).toBe(0);
    expect(h.lines.filter((l) => l.msg === 'failover track script removed while failing').map((l) => l.obj.script).sort()).toEqual(['a', 'b']);
    h.scripts.close();
  });

  it('a reload or the stop cancels a run in progress, whose result then counts for nothing', async () => {
    const h = new Harness([script('a')]);
    h.hold = true;
    await h.advance(0);
    const run = h.pending.shift()!;
    h.scripts.close();
    expect(run.signal.aborted).toBe(true);
    run.finish(false);
    for (let i = 0; i < 5; i++) await Promise.resolve();
    expect(h.scripts.fault).toBe(false);
    expect(h.changes).toBe(0);
    expect(h.timerCount).toBe(0);
    h.scripts.close(); // idempotent
    h.scripts.reconfigure([script('b')]); // closed: nothing starts
    expect(h.timerCount).toBe(0);
  });
});

describe('TrackScripts: real executables', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mqtt-lb-track-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function executable(name: string, body: string): string {
    const file = path.join(dir, name);
    writeFileSync(file, `#!/bin/sh\n${body}\n`);
    chmodSync(file, 0o755);
    return file;
  }

  async function settled(scripts: TrackScripts, want: (s: TrackScripts) => boolean, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!want(scripts) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  }

  it('exit codes, arguments, a missing file, the timeout, a leftover background job, a long stderr; what they started is killed', async () => {
    const log: LogSink & { warns: Array<Record<string, unknown>> } = {
      warns: [],
      debug() {},
      info() {},
      warn(obj) {
        this.warns.push(obj as Record<string, unknown>);
      },
      error() {},
    };
    const ok = executable('ok.sh', '[ "$1" = "fine" ] && exit 0; echo "wanted fine, got $1" >&2; exit 3');
    // keepalived's rule: its own exit decides. Leftovers holding its output are killed, not waited for.
    const leaves = executable('leaves.sh', `sleep 30 & echo $! > ${dir}/leftover.pid; exit 0`);
    const loud = executable('loud.sh', 'head -c 100000 /dev/zero | tr "\\\\0" x >&2; exit 1');
    const slow = executable('slow.sh', `sleep 30 & echo $! > ${dir}/child.pid; wait`);
    // Timeouts far above a shell's start on a loaded machine: only 'hangs' is meant to reach its own.
    const scripts = new TrackScripts(
      [
        { name: 'passes', command: ok, args: ['fine'], interval: 5000, timeout: 3000, rise: 1, fall: 1, weight: 0 },
        { name: 'exits', command: ok, args: ['bad'], interval: 5000, timeout: 3000, rise: 1, fall: 1, weight: 5 },
        { name: 'missing', command: path.join(dir, 'nope.sh'), args: [], interval: 5000, timeout: 3000, rise: 1, fall: 1, weight: 7 },
        { name: 'hangs', command: slow, args: [], interval: 5000, timeout: 1000, rise: 1, fall: 1, weight: 11 },
        { name: 'leaves', command: leaves, args: [], interval: 5000, timeout: 3000, rise: 1, fall: 1, weight: 13 },
        { name: 'loud', command: loud, args: [], interval: 5000, timeout: 3000, rise: 1, fall: 1, weight: 17 },
      ],
      log,
      () => undefined,
    );
    try {
      await settled(scripts, (s) => s.priorityPenalty === 40);
      expect(scripts.priorityPenalty).toBe(40); // exits 5 + missing 7 + hangs 11 + loud 17; leaves passes
      expect(scripts.failing().sort()).toEqual(['exits', 'hangs', 'loud', 'missing']);
      expect(scripts.fault).toBe(false);
      const detail = (name: string): string => String(log.warns.find((w) => w.script === name)?.detail);
      expect(detail('exits')).toBe(`${ok} bad: exit 3: wanted fine, got bad`);
      expect(detail('missing')).toContain('cannot run (ENOENT)');
      expect(detail('hangs')).toContain('killed after timeout');
      expect(detail('loud')).toBe(`${loud}: exit 1: ${'x'.repeat(200)}...`);
      // The script's own child went with it (its process group).
      const { readFileSync } = await import('node:fs');
      const pids = [await waitForPidFile(path.join(dir, 'child.pid')), await waitForPidFile(path.join(dir, 'leftover.pid'))];
      // Gone, or a zombie that its new parent has not reaped yet (in a container, pid 1 may never reap it).
      const running = (): boolean =>
        pids.some((pid) => {
          try {
            return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
          } catch {
            return false;
          }
        });
      for (let i = 0; i < 50 && running(); i++) await new Promise((r) => setTimeout(r, 20));
      expect(running()).toBe(false);
    } finally {
      scripts.close();
    }
  });
});
