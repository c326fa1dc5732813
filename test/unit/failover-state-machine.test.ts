import { describe, expect, it } from 'vitest';
import { FLAG_FAULT, FLAG_MASTER } from '../../src/failover/advert.js';
import { ipv4ToNumber } from '../../src/failover/ipv4.js';
import {
  COLD_START_DEFER_MAX_MS,
  FailoverStateMachine,
  HEAL_GARP_MIN_GAP_MS,
  VIP_HOLD_DOWN_MAX_MS,
  VIP_HOLD_DOWN_MIN_MS,
  VIP_HOLD_DOWN_RESET_MS,
  VIP_RETRY_MIN_MS,
  type FailoverAction,
  type StateMachineConfig,
} from '../../src/failover/state-machine.js';

const SELF = ipv4ToNumber('10.0.0.11')!;
const PEER_LOW = ipv4ToNumber('10.0.0.2')!; // lower address than SELF
const PEER_HIGH = ipv4ToNumber('10.0.0.200')!; // higher address than SELF

function setup(over: Partial<StateMachineConfig> = {}) {
  const clock = { t: 1000 };
  const sm = new FailoverStateMachine(
    { routerId: 51, priority: 100, advertInterval: 100, preempt: true, preemptDelay: 0, selfAddress: SELF, ...over },
    () => clock.t,
  );
  /** Advances the fake clock to `to`, firing onTimer at every deadline on the way (like the worker's timer). */
  const runUntil = (to: number): FailoverAction[] => {
    const out: FailoverAction[] = [];
    for (let i = 0; i < 100_000; i++) {
      const d = sm.nextDeadline();
      if (!(d <= to)) break;
      clock.t = Math.max(clock.t, d);
      out.push(...sm.onTimer());
    }
    clock.t = to;
    return out;
  };
  return { sm, clock, runUntil };
}

const masterAdvert = (priority: number, sender = PEER_LOW, intervalCs = 10) => ({ priority, flags: FLAG_MASTER, intervalCs, sender });
const types = (a: FailoverAction[]) => a.map((x) => x.type);
const becameMaster = (a: FailoverAction[]) => a.some((x) => x.type === 'notify' && x.to === 'master');

/** Drive a peer master advertising every 100 ms from `from` to `to` (exclusive), interleaved with our timers. */
function peerAdvertises(s: ReturnType<typeof setup>, from: number, to: number, advert: ReturnType<typeof masterAdvert>): FailoverAction[] {
  const out: FailoverAction[] = [];
  for (let t = from; t < to; t += 100) {
    out.push(...s.runUntil(t));
    out.push(...s.sm.onAdvert(advert));
  }
  out.push(...s.runUntil(to));
  return out;
}

/** Started held (as at start), having heard a master of `masterPriority` for 2 s: the machine and that master's advert. */
function heldHearing(masterPriority: number, over: Partial<StateMachineConfig> = {}) {
  const s = setup(over);
  s.sm.setHeld(true);
  s.sm.start();
  const advert = masterAdvert(masterPriority);
  const heard = peerAdvertises(s, 1000, 3000, advert);
  return { s, advert, heard };
}

// A failover audit (session 32): the `failover state changed` line gave no cause, so a takeover after a crash, one
// after a resign and a preemption looked alike.
describe('transition causes', () => {
  const causes = (a: FailoverAction[]) => a.flatMap((x) => (x.type === 'notify' ? [`${x.from}>${x.to}:${x.cause}`] : []));
  it('master_down: no master at start, or the master went silent', () => {
    const s = setup();
    expect(causes(s.sm.start())).toEqual(['init>backup:start']);
    expect(causes(s.runUntil(2000))).toEqual(['backup>master:master_down']);
    const t = setup();
    t.sm.start();
    peerAdvertises(t, 1000, 3000, masterAdvert(200));
    expect(causes(t.runUntil(4000))).toEqual(['backup>master:master_down']);
  });
  it('master_resigned: the master advertised priority 0; a later master heard again makes it a silence again', () => {
    const s = setup();
    s.sm.start();
    peerAdvertises(s, 1000, 3000, masterAdvert(200));
    s.sm.onAdvert(masterAdvert(0));
    expect(causes(s.runUntil(3100))).toEqual(['backup>master:master_resigned']);
    const t = setup();
    t.sm.start();
    peerAdvertises(t, 1000, 3000, masterAdvert(200));
    t.sm.onAdvert(masterAdvert(0));
    t.sm.onAdvert(masterAdvert(200));
    expect(causes(t.runUntil(3020))).toEqual([]);
    expect(causes(t.runUntil(4000))).toEqual(['backup>master:master_down']);
  });
  it('master_resigned, not preempt, when the lower-priority master resigns during preemptDelay (a re-audit)', () => {
    const s = setup({ priority: 150, preemptDelay: 5000 });
    s.sm.start();
    peerAdvertises(s, 1000, 2500, masterAdvert(100));
    expect(s.sm.state).toBe('backup');
    s.sm.onAdvert(masterAdvert(0));
    expect(causes(s.runUntil(2600))).toEqual(['backup>master:master_resigned']);
  });

  // An audit: nothing said why a host of higher priority left the VIP where it was for preemptDelay.
  it('preemptPending once when a preemptDelay wait starts, again only for a new wait', () => {
    const s = setup({ priority: 150, preemptDelay: 5000 });
    s.sm.start();
    const pending = (a: FailoverAction[]) => a.filter((x) => x.type === 'preemptPending');
    expect(pending(peerAdvertises(s, 1000, 3000, masterAdvert(100)))).toEqual([{ type: 'preemptPending', masterPriority: 100, delayMs: 5000 }]);
    // A master of our priority or more interrupts the wait; a lower one after it starts a new one.
    expect(pending(s.sm.onAdvert(masterAdvert(150, PEER_HIGH)))).toEqual([]);
    expect(pending(peerAdvertises(s, 3000, 4000, masterAdvert(100)))).toHaveLength(1);
    expect(causes(peerAdvertises(s, 4000, 9500, masterAdvert(100)))).toEqual(['backup>master:preempt']);
    // Without a delay there is no wait to tell of.
    const t = setup({ priority: 150 });
    t.sm.start();
    expect(pending(peerAdvertises(t, 1000, 3000, masterAdvert(100)))).toEqual([]);
  });

  it('preempt, higher_priority_master, stopping, fault and fault_cleared', () => {
    const { s } = heldHearing(50);
    expect(causes(s.sm.setHeld(false))).toEqual(['backup>master:preempt']);
    expect(causes(s.sm.onAdvert(masterAdvert(200)))).toEqual(['master>backup:higher_priority_master']);
    const r = setup();
    r.sm.start();
    r.runUntil(2000);
    r.sm.resign();
    expect(causes(r.sm.onAdvert(masterAdvert(50)))).toEqual(['master>backup:stopping']);
    const f = setup();
    f.sm.start();
    f.runUntil(2000);
    expect(causes(f.sm.setFault(true))).toEqual(['master>fault:fault']);
    expect(causes(f.sm.setFault(false))).toEqual(['fault>backup:fault_cleared']);
  });
});

describe('timer formulas (RFC 5798 §6.1)', () => {
  it('skew and Master_Down_Interval for priority 100 at 100 ms', () => {
    const { sm } = setup();
    expect(sm.skewTime()).toBeCloseTo((156 * 100) / 256, 9); // 60.9375 ms
    expect(sm.masterDownInterval()).toBeCloseTo(300 + 60.9375, 9);
  });
  it('uses the effective priority after the tracking penalty', () => {
    const { sm } = setup({ priority: 150 });
    sm.setPriorityPenalty(50);
    expect(sm.effectivePriority).toBe(100);
    expect(sm.skewTime()).toBeCloseTo(60.9375, 9);
    sm.setPriorityPenalty(500);
    expect(sm.effectivePriority).toBe(1); // never 0: 0 means resigning on the wire
  });
});

describe('start-up', () => {
  it('INIT → BACKUP, advertises at once, and is not master before one full Master_Down_Interval', () => {
    const s = setup();
    expect(s.sm.state).toBe('init');
    const a = s.sm.start();
    expect(s.sm.state).toBe('backup');
    expect(a).toEqual([
      { type: 'sendAdvert', priority: 100, flags: 0 },
      { type: 'notify', from: 'init', to: 'backup', cause: 'start' },
    ]);
    const mdi = s.sm.masterDownInterval();
    expect(becameMaster(s.runUntil(1000 + mdi - 0.001))).toBe(false);
    expect(s.sm.state).toBe('backup');
    const at = s.runUntil(1000 + mdi);
    expect(s.sm.state).toBe('master');
    // keepalived order: advert, VIPs, GARP, notify.
    const i = at.findIndex((x) => x.type === 'sendAdvert' && x.flags === FLAG_MASTER);
    expect(types(at.slice(i, i + 4))).toEqual(['sendAdvert', 'addVips', 'garp', 'notify']);
  });

  it('a backup advertises every interval without the MASTER flag', () => {
    const s = setup();
    s.sm.start();
    const a = s.runUntil(1300);
    expect(a).toEqual([
      { type: 'sendAdvert', priority: 100, flags: 0 },
      { type: 'sendAdvert', priority: 100, flags: 0 },
      { type: 'sendAdvert', priority: 100, flags: 0 },
    ]);
  });

  it('a resigning master heard right after start does not shorten the first Master_Down_Interval', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(1050);
    s.sm.onAdvert(masterAdvert(0));
    expect(becameMaster(s.runUntil(1000 + s.sm.masterDownInterval() - 1))).toBe(false);
    expect(becameMaster(s.runUntil(1000 + s.sm.masterDownInterval()))).toBe(true);
  });

  it('a fault before start makes start() enter FAULT', () => {
    const s = setup();
    s.sm.setFault(true);
    expect(s.sm.start()).toEqual([
      { type: 'sendAdvert', priority: 0, flags: FLAG_FAULT },
      { type: 'notify', from: 'init', to: 'fault', cause: 'start' },
    ]);
    expect(s.runUntil(5000).some((x) => x.type === 'addVips')).toBe(false);
  });

  it('ignores adverts and timers before start', () => {
    const s = setup();
    expect(s.sm.onAdvert(masterAdvert(200))).toEqual([]);
    expect(s.sm.onTimer()).toEqual([]);
    expect(s.sm.nextDeadline()).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('held at start (the proxy does not serve yet)', () => {
  it('takes part as BACKUP, and is not master while held even past the Master_Down_Interval; released, it is master at once', () => {
    const s = setup();
    s.sm.setHeld(true);
    expect(s.sm.start()).toEqual([
      { type: 'sendAdvert', priority: 100, flags: 0 },
      { type: 'notify', from: 'init', to: 'backup', cause: 'start' },
    ]);
    const mdi = s.sm.masterDownInterval();
    // Adverts go on every interval, but the fired Master_Down_Timer is no deadline (no busy loop on it).
    const meanwhile = s.runUntil(1000 + 3 * mdi);
    expect(becameMaster(meanwhile)).toBe(false);
    expect(meanwhile.every((x) => x.type === 'sendAdvert' && x.flags === 0)).toBe(true);
    expect(s.sm.nextDeadline()).toBeGreaterThan(s.clock.t);
    expect(s.sm.state).toBe('backup');
    const released = s.sm.setHeld(false);
    expect(s.sm.state).toBe('master');
    // No live master heard: keepalived's order, as after a plain Master_Down_Timer.
    expect(types(released)).toEqual(['sendAdvert', 'addVips', 'garp', 'notify']);
    expect(s.sm.setHeld(false)).toEqual([]);
  });

  it('released before the Master_Down_Interval has run out: master only when it does', () => {
    const s = setup();
    s.sm.setHeld(true);
    s.sm.start();
    const mdi = s.sm.masterDownInterval();
    s.runUntil(1000 + mdi / 2);
    expect(s.sm.setHeld(false)).toEqual([]);
    expect(becameMaster(s.runUntil(1000 + mdi - 0.001))).toBe(false);
    expect(becameMaster(s.runUntil(1000 + mdi))).toBe(true);
  });

  it('a higher-priority master heard while held keeps it BACKUP after the release', () => {
    const { s } = heldHearing(150);
    expect(s.sm.setHeld(false)).toEqual([]);
    expect(becameMaster(peerAdvertises(s, 3000, 5000, masterAdvert(150)))).toBe(false);
    expect(s.sm.state).toBe('backup');
  });

  it('a lower-priority master heard while held (the peer that took over while this host was down) is preempted at the release, VIPs first', () => {
    const { s, heard } = heldHearing(50);
    expect(becameMaster(heard)).toBe(false);
    const released = s.sm.setHeld(false);
    expect(s.sm.state).toBe('master');
    expect(types(released)).toEqual(['addVipsThenAnnounce', 'notify']);
  });

  it('preempt: false: a lower-priority master heard while held keeps the VIP after the release', () => {
    const { s } = heldHearing(50, { preempt: false });
    expect(s.sm.setHeld(false)).toEqual([]);
    expect(becameMaster(peerAdvertises(s, 3000, 5000, masterAdvert(50)))).toBe(false);
  });

  it('a stop while held: resigned, it never becomes master, released or not', () => {
    const s = setup();
    s.sm.setHeld(true);
    s.sm.start();
    s.runUntil(3000);
    s.sm.resign();
    expect(s.sm.setHeld(false)).toEqual([]);
    expect(becameMaster(s.runUntil(10_000))).toBe(false);
  });

  it('a FAULT while held: leaving it starts a full Master_Down_Interval, still held until the release', () => {
    const s = setup();
    s.sm.setHeld(true);
    s.sm.start();
    s.sm.setFault(true);
    s.runUntil(2000);
    s.sm.setFault(false);
    const mdi = s.sm.masterDownInterval();
    expect(becameMaster(s.runUntil(2000 + 2 * mdi))).toBe(false);
    expect(becameMaster(s.sm.setHeld(false))).toBe(true);
  });
});

describe('reconfigure (a reload)', () => {
  it('a master whose priority a reload lowers advertises it at once', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    expect(s.sm.state).toBe('master');
    expect(s.sm.reconfigure({ priority: 100, preempt: true, preemptDelay: 0 })).toEqual([]);
    expect(s.sm.reconfigure({ priority: 40, preempt: true, preemptDelay: 0 })).toEqual([{ type: 'sendAdvert', priority: 40, flags: FLAG_MASTER }]);
    expect(s.sm.effectivePriority).toBe(40);
    // A higher-priority peer master then takes over as usual.
    expect(types(s.sm.onAdvert(masterAdvert(100)))).toEqual(['sendAdvert', 'removeVips', 'notify']);
    expect(s.sm.state).toBe('backup');
  });

  it('a backup raised above the live master preempts it a Master_Down_Interval later, VIPs first', () => {
    const s = setup();
    s.sm.start();
    peerAdvertises(s, 1000, 2000, masterAdvert(150));
    expect(s.sm.state).toBe('backup');
    expect(s.sm.reconfigure({ priority: 200, preempt: true, preemptDelay: 0 })).toEqual([]);
    const after = peerAdvertises(s, 2000, 2000 + s.sm.masterDownInterval() + 100, masterAdvert(150));
    expect(s.sm.state).toBe('master');
    expect(after.some((x) => x.type === 'addVipsThenAnnounce')).toBe(true);
  });

  it('held, meaning to preempt: a reload to a priority below the master\'s before the release keeps it BACKUP (audit)', () => {
    const { s } = heldHearing(50);
    s.sm.reconfigure({ priority: 40, preempt: true, preemptDelay: 0 });
    expect(s.sm.setHeld(false)).toEqual([]);
    expect(becameMaster(peerAdvertises(s, 3000, 6000, masterAdvert(50)))).toBe(false);
    expect(s.sm.state).toBe('backup');
  });

  it('held, meaning to preempt: a tracking penalty that takes it below the master before the release keeps it BACKUP', () => {
    const { s } = heldHearing(50);
    s.sm.setPriorityPenalty(70);
    expect(s.sm.setHeld(false)).toEqual([]);
    expect(becameMaster(peerAdvertises(s, 3000, 6000, masterAdvert(50)))).toBe(false);
  });

  it('a weaker claim that is still the stronger one preempts, a Master_Down_Interval after the change', () => {
    const { s } = heldHearing(50);
    s.sm.reconfigure({ priority: 80, preempt: true, preemptDelay: 0 });
    expect(s.sm.setHeld(false)).toEqual([]);
    const mdi = s.sm.masterDownInterval();
    expect(becameMaster(peerAdvertises(s, 3000, 3000 + mdi - 1, masterAdvert(50)))).toBe(false);
    expect(becameMaster(peerAdvertises(s, 3000 + mdi - 1, 3000 + mdi + 100, masterAdvert(50)))).toBe(true);
  });

  it('preempt turned off by a reload: the lower-priority master keeps the VIP', () => {
    const s = setup({ priority: 200 });
    s.sm.start();
    s.sm.reconfigure({ priority: 200, preempt: false, preemptDelay: 0 });
    expect(becameMaster(peerAdvertises(s, 1000, 5000, masterAdvert(150)))).toBe(false);
    // And on again: it preempts.
    s.sm.reconfigure({ priority: 200, preempt: true, preemptDelay: 0 });
    expect(becameMaster(peerAdvertises(s, 5000, 6000, masterAdvert(150)))).toBe(true);
  });
});

describe('election', () => {
  it('a higher-priority master keeps us backup; when it falls silent we take over one Master_Down_Interval after its last advert', () => {
    const s = setup();
    s.sm.start();
    const a = peerAdvertises(s, 1050, 3050, masterAdvert(150));
    expect(becameMaster(a)).toBe(false);
    expect(s.sm.state).toBe('backup');
    const last = 2950;
    expect(becameMaster(s.runUntil(last + s.sm.masterDownInterval() - 0.01))).toBe(false);
    expect(becameMaster(s.runUntil(last + s.sm.masterDownInterval()))).toBe(true);
  });

  it('an equal-priority master is accepted by a backup whatever its address (equal backups never preempt)', () => {
    const s = setup();
    s.sm.start();
    expect(becameMaster(peerAdvertises(s, 1050, 4000, masterAdvert(100, PEER_LOW)))).toBe(false);
  });

  it('a master hearing a higher-priority master goes backup and removes its VIPs', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    expect(s.sm.state).toBe('master');
    // One last advert as master first (keepalived's higher_prio_send_advert), so the winner re-announces.
    expect(s.sm.onAdvert(masterAdvert(101))).toEqual([
      { type: 'sendAdvert', priority: 100, flags: FLAG_MASTER },
      { type: 'removeVips' },
      { type: 'notify', from: 'master', to: 'backup', cause: 'higher_priority_master' },
    ]);
    expect(s.sm.state).toBe('backup');
  });

  it('tie break: equal priority, the higher sender address wins', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(3000);
    // Lower address, same priority: we stay master and assert ourselves.
    expect(types(s.sm.onAdvert(masterAdvert(100, PEER_LOW)))).toEqual(['sendAdvert', 'reannounce']);
    expect(s.sm.state).toBe('master');
    // Higher address, same priority: we yield.
    expect(types(s.sm.onAdvert(masterAdvert(100, PEER_HIGH)))).toEqual(['sendAdvert', 'removeVips', 'notify']);
    expect(s.sm.state).toBe('backup');
  });

  it('compares addresses unsigned (128.x beats 10.x)', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    s.sm.onAdvert(masterAdvert(100, ipv4ToNumber('128.0.0.1')!));
    expect(s.sm.state).toBe('backup');
  });

  it('a master ignores higher-priority adverts without the MASTER flag (a non-preempting backup)', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    expect(s.sm.onAdvert({ priority: 200, flags: 0, intervalCs: 10, sender: PEER_HIGH })).toEqual([]);
    expect(s.sm.state).toBe('master');
  });

  // A failover audit: both hosts started together, the lower one (done with its warm-up first) took the VIP and the
  // higher one preempted it: two moves. With no master heard since its start, it lets the starting peer that
  // outranks it go first; never for good (two backups do not hold each other off).
  it('cold start: a backup that outranks us, still starting, goes first; for at most COLD_START_DEFER_MAX_MS', () => {
    const s = setup();
    s.sm.start();
    const higherBackup = { priority: 200, flags: 0, intervalCs: 10, sender: PEER_LOW };
    const mdi = s.sm.masterDownInterval();
    let actions: FailoverAction[] = [];
    // Its warm-up takes 3 s: we wait, past our Master_Down_Interval.
    const peerServesAt = 1000 + mdi + 3000;
    for (let t = 1050; t < peerServesAt; t += 100) {
      actions.push(...s.runUntil(t));
      actions.push(...s.sm.onAdvert(higherBackup));
    }
    expect(becameMaster(actions)).toBe(false);
    // It becomes master: its advert resets our timer as any master's does, past the bound too.
    actions = [];
    for (let t = peerServesAt; t < peerServesAt + COLD_START_DEFER_MAX_MS + 1000; t += 100) {
      actions.push(...s.runUntil(t));
      actions.push(...s.sm.onAdvert(masterAdvert(200)));
    }
    expect(becameMaster(actions)).toBe(false);
    expect(s.sm.state).toBe('backup');
  });

  it('cold start: a peer that outranks us but stays a backup past COLD_START_DEFER_MAX_MS does not hold us off', () => {
    const s = setup();
    s.sm.start();
    const end = 1000 + s.sm.masterDownInterval() + COLD_START_DEFER_MAX_MS + 200;
    let actions: FailoverAction[] = [];
    for (let t = 1050; t < end; t += 50) {
      actions.push(...s.runUntil(t));
      actions.push(...s.sm.onAdvert({ priority: 200, flags: 0, intervalCs: 10, sender: PEER_HIGH }));
    }
    expect(becameMaster(actions)).toBe(true);
    // A lower-priority backup, or an equal one from a lower address, or one in FAULT: no wait at all.
    for (const advert of [
      { priority: 50, flags: 0, intervalCs: 10, sender: PEER_HIGH },
      { priority: 100, flags: 0, intervalCs: 10, sender: PEER_LOW },
      { priority: 0, flags: FLAG_FAULT, intervalCs: 10, sender: PEER_HIGH },
    ]) {
      const t = setup();
      t.sm.start();
      actions = [];
      for (let at = 1050; at < 1000 + t.sm.masterDownInterval(); at += 50) {
        actions.push(...t.runUntil(at));
        actions.push(...t.sm.onAdvert(advert));
      }
      expect(becameMaster([...actions, ...t.runUntil(1000 + t.sm.masterDownInterval())]), JSON.stringify(advert)).toBe(true);
    }
  });

  // A re-audit: a peer that ran long before us and is no master (in a VIP hold-down) was waited for, 6.4 s with no VIP.
  it('cold start: a peer that outranks us but has run longer than us (not starting with us) is no reason to wait', () => {
    const s = setup();
    s.sm.start();
    const actions: FailoverAction[] = [];
    for (let t = 1050; t < 1000 + s.sm.masterDownInterval() + 100; t += 50) {
      actions.push(...s.runUntil(t));
      actions.push(...s.sm.onAdvert({ priority: 200, flags: 0, intervalCs: 10, sender: PEER_LOW, startedWithUs: false }));
    }
    expect(becameMaster(actions)).toBe(true);
  });

  // A failover audit: three hosts (150, 100, 50 the master); 150 and 100 both preempted 50, since 150's master advert
  // follows its VIPs and GARP, after 100's timer: all three held the VIP for 40-75 ms.
  it('preempting a live lower-priority master: a backup that outranks us goes first, for at most a Master_Down_Interval', () => {
    const s = setup();
    s.sm.start();
    const lowerMaster = masterAdvert(50, PEER_LOW);
    const higherBackup = { priority: 150, flags: 0, intervalCs: 10, sender: PEER_HIGH, startedWithUs: false };
    let actions: FailoverAction[] = [];
    // Past our own Master_Down_Timer by 150 ms: the time its VIPs and GARP take before its master advert.
    const itPreemptsAt = 1000 + s.sm.masterDownInterval() + 150;
    for (let t = 1050; t < itPreemptsAt; t += 50) {
      actions.push(...s.runUntil(t));
      actions.push(...s.sm.onAdvert(lowerMaster));
      actions.push(...s.sm.onAdvert(higherBackup));
    }
    expect(becameMaster(actions)).toBe(false);
    // It preempts: its master advert is accepted as any higher master's.
    expect(becameMaster(peerAdvertises(s, itPreemptsAt, itPreemptsAt + 2000, masterAdvert(150, PEER_HIGH)))).toBe(false);
    expect(s.sm.state).toBe('backup');

    // One that outranks us but never preempts (preempt off there, a longer preemptDelay, a VIP hold-down): waited for
    // one Master_Down_Interval past our own timer, not COLD_START_DEFER_MAX_MS (a re-audit: 6 s).
    const t = setup();
    t.sm.start();
    actions = [];
    const mdi = t.sm.masterDownInterval();
    let becameAt = -1;
    for (let at = 1050; at < 1000 + 3 * mdi + 500 && becameAt < 0; at += 100) {
      actions.push(...t.runUntil(at));
      if (becameMaster(actions)) becameAt = t.clock.t;
      actions.push(...t.sm.onAdvert(lowerMaster));
      actions.push(...t.sm.onAdvert(higherBackup));
    }
    expect(actions.flatMap((x) => (x.type === 'notify' ? [x.cause] : []))).toEqual(['preempt']);
    expect(becameAt).toBeGreaterThan(1000 + 2 * mdi - 100);
    expect(becameAt).toBeLessThan(1000 + 2 * mdi + 200);
  });

  it('after a master has been heard (a failover, not a start): a backup that outranks us is no reason to wait', () => {
    const s = setup();
    s.sm.start();
    peerAdvertises(s, 1050, 2000, masterAdvert(120));
    // The master falls silent; the peer that outranks us is back as a backup (restarting, warming up).
    const actions: FailoverAction[] = [];
    for (let t = 2000; t < 2000 + s.sm.masterDownInterval() + 100; t += 100) {
      actions.push(...s.runUntil(t));
      actions.push(...s.sm.onAdvert({ priority: 120, flags: 0, intervalCs: 10, sender: PEER_LOW }));
    }
    expect(becameMaster(actions)).toBe(true);
  });
});

describe('preemption', () => {
  it('preempt on: a higher-priority backup takes over from a lower-priority master after Master_Down_Interval', () => {
    const s = setup({ priority: 150 });
    s.sm.start();
    const mdi = s.sm.masterDownInterval();
    const a = peerAdvertises(s, 1050, 1000 + mdi + 1, masterAdvert(100));
    expect(becameMaster(a)).toBe(true);
    expect(s.sm.state).toBe('master');
  });

  // The failover benchmark: in keepalived's order (advert, then `ip addr add`, then arping, each a child process), the
  // live master dropped the VIP 3-5 ms before clients heard our GARP, and new connections' SYNs were lost.
  it('preempting a live master: VIPs and GARP first (addVipsThenAnnounce), no master advert until they are held', () => {
    const s = setup({ priority: 150 });
    s.sm.start();
    const a = peerAdvertises(s, 1050, 1000 + s.sm.masterDownInterval() + 1, masterAdvert(100));
    expect(becameMaster(a)).toBe(true);
    const from = a.findIndex((x) => x.type === 'addVipsThenAnnounce');
    expect(from).toBeGreaterThanOrEqual(0);
    expect(types(a)).not.toContain('addVips');
    expect(types(a)).not.toContain('garp'); // announced by the heartbeat once the VIPs are here, before the advert
    const more = peerAdvertises(s, s.clock.t + 1, s.clock.t + 300, masterAdvert(100));
    expect([...a.slice(from), ...more].filter((x) => x.type === 'sendAdvert' && (x.flags & FLAG_MASTER) !== 0)).toEqual([]);
    expect(s.sm.state).toBe('master');
    // A tracking change or the live master's resign meanwhile says so at once, still without the flag (review).
    expect(s.sm.setPriorityPenalty(10)).toEqual([{ type: 'sendAdvert', priority: 140, flags: 0 }]);
    expect(s.sm.onAdvert(masterAdvert(0))).toEqual([{ type: 'sendAdvert', priority: 140, flags: 0 }]);
    s.sm.vipsHeld();
    const after = peerAdvertises(s, s.clock.t + 1, s.clock.t + 300, masterAdvert(100));
    expect(after.some((x) => x.type === 'sendAdvert' && (x.flags & FLAG_MASTER) !== 0)).toBe(true);
    expect(s.sm.setPriorityPenalty(0)).toEqual([{ type: 'sendAdvert', priority: 150, flags: FLAG_MASTER }]);
  });

  it("taking over from a silent master keeps keepalived's order: master advert, VIPs, GARP", () => {
    const s = setup({ priority: 150 });
    s.sm.start();
    peerAdvertises(s, 1050, 1100, masterAdvert(200)); // a higher-priority master, then silence
    const a = s.runUntil(s.clock.t + 2 * s.sm.masterDownInterval());
    expect(becameMaster(a)).toBe(true);
    const at = a.findIndex((x) => x.type === 'sendAdvert' && (x.flags & FLAG_MASTER) !== 0);
    expect(types(a.slice(at, at + 3))).toEqual(['sendAdvert', 'addVips', 'garp']);
    expect(types(a)).not.toContain('addVipsThenAnnounce');
  });

  it('preempt off: a lower-priority master is followed for as long as it advertises', () => {
    const s = setup({ priority: 150, preempt: false });
    s.sm.start();
    expect(becameMaster(peerAdvertises(s, 1050, 10_000, masterAdvert(100)))).toBe(false);
    expect(s.sm.state).toBe('backup');
  });

  it('preempt delay: waits preemptDelay of continuous lower-priority adverts, then preempts', () => {
    const s = setup({ priority: 150, preemptDelay: 2000 });
    s.sm.start();
    const mdi = s.sm.masterDownInterval();
    // First lower-priority advert at 1050: the delay runs from there.
    expect(becameMaster(peerAdvertises(s, 1050, 3050, masterAdvert(100)))).toBe(false);
    expect(s.sm.state).toBe('backup');
    // After the delay the adverts are discarded; the down timer (reset by the last accepted one) fires.
    const a = peerAdvertises(s, 3050, 3050 + Math.ceil(mdi) + 100, masterAdvert(100));
    expect(becameMaster(a)).toBe(true);
  });

  it('preempt delay restarts when the wait is interrupted by a higher-priority master', () => {
    const s = setup({ priority: 150, preemptDelay: 1000 });
    s.sm.start();
    peerAdvertises(s, 1050, 1850, masterAdvert(100)); // 800 ms of the 1000 ms wait
    s.sm.onAdvert(masterAdvert(200)); // interruption
    // 900 ms more of lower-priority adverts: the delay started again, so no takeover yet.
    expect(becameMaster(peerAdvertises(s, 1950, 2850, masterAdvert(100)))).toBe(false);
    expect(becameMaster(peerAdvertises(s, 2850, 4000, masterAdvert(100)))).toBe(true);
  });

  it('preempt delay restarts when our own priority changes', () => {
    const s = setup({ priority: 150, preemptDelay: 1000 });
    s.sm.start();
    peerAdvertises(s, 1050, 1850, masterAdvert(100));
    s.sm.setPriorityPenalty(10); // 140: still higher, but not the same priority for the whole delay
    expect(becameMaster(peerAdvertises(s, 1850, 2750, masterAdvert(100)))).toBe(false);
  });
});

describe('graceful handover with priority 0', () => {
  it('a backup takes over Skew_Time after the master’s priority-0 advert', () => {
    const s = setup();
    s.sm.start();
    peerAdvertises(s, 1050, 2050, masterAdvert(150));
    s.runUntil(2050);
    s.sm.onAdvert(masterAdvert(0));
    const skew = s.sm.skewTime();
    expect(becameMaster(s.runUntil(2050 + skew - 0.01))).toBe(false);
    expect(becameMaster(s.runUntil(2050 + skew))).toBe(true);
  });

  it('a priority-0 FAULT advert from the master we follow hands over too; from anyone else it does not', () => {
    const s = setup();
    s.sm.start();
    peerAdvertises(s, 1050, 2050, masterAdvert(150, PEER_LOW));
    s.sm.onAdvert({ priority: 0, flags: FLAG_FAULT, intervalCs: 10, sender: PEER_HIGH });
    expect(becameMaster(s.runUntil(2050 + s.sm.skewTime() + 1))).toBe(false);
    s.sm.onAdvert({ priority: 0, flags: FLAG_FAULT, intervalCs: 10, sender: PEER_LOW });
    expect(becameMaster(s.runUntil(2051 + 2 * s.sm.skewTime() + 1))).toBe(true);
  });

  it('a master hearing another master resign answers with an advert at once', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    expect(s.sm.onAdvert(masterAdvert(0))).toEqual([{ type: 'sendAdvert', priority: 100, flags: FLAG_MASTER }]);
  });

  it('resign(): priority 0 while keeping the VIP, backup once the peer advertises as master, never master again', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    expect(s.sm.resign()).toEqual([{ type: 'sendAdvert', priority: 0, flags: FLAG_MASTER }]);
    expect(s.sm.state).toBe('master');
    const repeats = s.runUntil(2300);
    expect(repeats).toEqual([
      { type: 'sendAdvert', priority: 0, flags: FLAG_MASTER },
      { type: 'sendAdvert', priority: 0, flags: FLAG_MASTER },
      { type: 'sendAdvert', priority: 0, flags: FLAG_MASTER },
    ]);
    // The peer's master advert — even with a lower configured priority — ends it.
    expect(s.sm.onAdvert(masterAdvert(50))).toEqual([
      { type: 'sendAdvert', priority: 0, flags: FLAG_MASTER },
      { type: 'removeVips' },
      { type: 'notify', from: 'master', to: 'backup', cause: 'stopping' },
    ]);
    expect(becameMaster(s.runUntil(60_000))).toBe(false);
    expect(s.sm.advertisedPriority).toBe(0);
  });

  it('resign() as backup says so at once (priority 0, no MASTER flag) and stops us from ever taking over', () => {
    const s = setup();
    s.sm.start();
    // At once, not at the next advert: a master stopping at the same moment must not wait for a hand-over from here.
    expect(s.sm.resign()).toEqual([{ type: 'sendAdvert', priority: 0, flags: 0 }]);
    expect(s.sm.resign()).toEqual([]);
    expect(becameMaster(s.runUntil(60_000))).toBe(false);
  });
});

describe('FAULT', () => {
  it('master → FAULT resigns (priority 0, FAULT flag), removes VIPs, keeps advertising priority 0', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    expect(s.sm.setFault(true)).toEqual([
      { type: 'sendAdvert', priority: 0, flags: FLAG_FAULT },
      { type: 'removeVips' },
      { type: 'notify', from: 'master', to: 'fault', cause: 'fault' },
    ]);
    expect(s.sm.state).toBe('fault');
    expect(s.runUntil(2200)).toEqual([
      { type: 'sendAdvert', priority: 0, flags: FLAG_FAULT },
      { type: 'sendAdvert', priority: 0, flags: FLAG_FAULT },
    ]);
    // FAULT does not take part: adverts are ignored.
    expect(s.sm.onAdvert(masterAdvert(1))).toEqual([]);
    expect(s.sm.state).toBe('fault');
  });

  it('leaving FAULT goes through BACKUP and waits a full Master_Down_Interval', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    s.sm.setFault(true);
    s.runUntil(3000);
    expect(s.sm.setFault(false)).toEqual([
      { type: 'sendAdvert', priority: 100, flags: 0 },
      { type: 'notify', from: 'fault', to: 'backup', cause: 'fault_cleared' },
    ]);
    expect(s.sm.state).toBe('backup');
    const mdi = s.sm.masterDownInterval();
    expect(becameMaster(s.runUntil(3000 + mdi - 0.01))).toBe(false);
    expect(becameMaster(s.runUntil(3000 + mdi))).toBe(true);
  });

  it('setFault with the same value twice is a no-op', () => {
    const s = setup();
    s.sm.start();
    s.sm.setFault(true);
    expect(s.sm.setFault(true)).toEqual([]);
  });

  it('a priority penalty lowers the advertised priority but never causes FAULT', () => {
    const s = setup({ priority: 150 });
    s.sm.start();
    s.runUntil(2000);
    expect(s.sm.setPriorityPenalty(100)).toEqual([{ type: 'sendAdvert', priority: 50, flags: FLAG_MASTER }]);
    expect(s.sm.state).toBe('master');
    // A peer at 100 now wins the election.
    s.sm.onAdvert(masterAdvert(100));
    expect(s.sm.state).toBe('backup');
  });
});

describe('split brain', () => {
  it('a master hearing a lower-priority master stays master, re-advertises and re-announces once at once (rate limited)', () => {
    const s = setup({ priority: 150 });
    s.sm.start();
    s.runUntil(1000 + s.sm.masterDownInterval());
    expect(s.sm.state).toBe('master');
    // Right after becoming master too: the old master's last advert as it steps down may follow a GARP of its own
    // burst, which pulled the clients back to it; one GARP of ours (not a burst) puts that right.
    expect(s.sm.onAdvert(masterAdvert(100))).toEqual([{ type: 'sendAdvert', priority: 150, flags: FLAG_MASTER }, { type: 'reannounce' }]);
    s.runUntil(1000 + s.sm.masterDownInterval() + 100);
    expect(s.sm.onAdvert(masterAdvert(100))).toEqual([{ type: 'sendAdvert', priority: 150, flags: FLAG_MASTER }]);
    s.runUntil(3000);
    expect(s.sm.onAdvert(masterAdvert(100))).toEqual([{ type: 'sendAdvert', priority: 150, flags: FLAG_MASTER }, { type: 'reannounce' }]);
    s.runUntil(3100);
    expect(s.sm.onAdvert(masterAdvert(100))).toEqual([{ type: 'sendAdvert', priority: 150, flags: FLAG_MASTER }]);
    s.runUntil(3000 + HEAL_GARP_MIN_GAP_MS);
    expect(types(s.sm.onAdvert(masterAdvert(100)))).toEqual(['sendAdvert', 'reannounce']);
    expect(s.sm.state).toBe('master');
  });

  it('a peer heard again after a silence (asymmetric heal) makes the master re-announce once', () => {
    const s = setup({ priority: 150 });
    s.sm.start();
    const backup = { priority: 100, flags: 0, intervalCs: 10, sender: PEER_LOW };
    s.runUntil(1000 + s.sm.masterDownInterval());
    s.runUntil(3000);
    s.sm.onAdvert(backup); // first contact long after start: announce
    s.runUntil(4100);
    expect(s.sm.onAdvert(backup)).toEqual([{ type: 'reannounce' }]);
    s.runUntil(4200);
    expect(s.sm.onAdvert(backup)).toEqual([]); // heard 100 ms ago: no silence
    s.runUntil(4200 + 3 * 100);
    expect(s.sm.onAdvert(backup)).toEqual([]); // exactly 3 intervals: not more than it
    s.runUntil(4500 + 301 + 1000);
    expect(s.sm.onAdvert(backup)).toEqual([{ type: 'reannounce' }]);
  });

  it('both sides converge: the lower one yields when it hears the higher one', () => {
    const hi = setup({ priority: 150 });
    const lo = setup({ priority: 100, selfAddress: PEER_LOW });
    hi.sm.start();
    lo.sm.start();
    hi.runUntil(2000);
    lo.runUntil(2000);
    expect([hi.sm.state, lo.sm.state]).toEqual(['master', 'master']);
    lo.sm.onAdvert(masterAdvert(150, SELF));
    hi.sm.onAdvert(masterAdvert(100, PEER_LOW));
    expect([hi.sm.state, lo.sm.state]).toEqual(['master', 'backup']);
  });
});

describe('learning the peer interval', () => {
  it('a backup uses the master’s advertised interval for Master_Down_Interval', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(1050);
    s.sm.onAdvert(masterAdvert(150, PEER_LOW, 100)); // 1 s
    expect(s.sm.learnedInterval).toBe(1000);
    expect(s.sm.masterDownInterval()).toBeCloseTo(3000 + (156 * 1000) / 256, 9);
    // Silent master: takeover 3.609 s after its advert, not 0.36 s.
    expect(becameMaster(s.runUntil(1050 + 3000))).toBe(false);
    expect(becameMaster(s.runUntil(1050 + 3000 + 610))).toBe(true);
  });

  it('a master yielding to a higher one learns its interval too', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    s.sm.onAdvert(masterAdvert(200, PEER_HIGH, 50));
    expect(s.sm.learnedInterval).toBe(500);
  });
});

describe('VIP lost while master', () => {
  it('resigns with priority 0 and gives the peer a full Master_Down_Interval', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    expect(s.sm.vipLost()).toEqual([
      { type: 'sendAdvert', priority: 0, flags: FLAG_MASTER },
      { type: 'removeVips' },
      { type: 'notify', from: 'master', to: 'backup', cause: 'vip_lost' },
    ]);
    expect(s.sm.state).toBe('backup');
    // The peer takes over (Skew_Time on its side) and we follow it.
    expect(becameMaster(peerAdvertises(s, 2060, 5000, masterAdvert(100, PEER_HIGH)))).toBe(false);
  });

  it('is a no-op when not master', () => {
    const s = setup();
    s.sm.start();
    expect(s.sm.vipLost()).toEqual([]);
  });
});

describe('VIP hold-down (a VIP that could not be added, or was lost)', () => {
  /** Priority 150 with a priority-100 peer: master after start (no one heard), then the VIP fails at `at`. */
  function masterThenVipLost(at = 2000) {
    const s = setup({ priority: 150 });
    s.sm.start();
    s.runUntil(at);
    expect(s.sm.state).toBe('master');
    s.sm.vipLost();
    return s;
  }

  it('follows a lower-priority master for the hold-down instead of preempting it, then preempts', () => {
    const s = masterThenVipLost(2000);
    expect(s.sm.holdDownMs).toBe(VIP_HOLD_DOWN_MIN_MS);
    expect(s.sm.inHoldDown).toBe(true);
    // The peer takes over (its Skew_Time after our priority 0) and advertises every 100 ms.
    const end = 2000 + VIP_HOLD_DOWN_MIN_MS;
    expect(becameMaster(peerAdvertises(s, 2060, end - 100, masterAdvert(100)))).toBe(false);
    expect(s.sm.state).toBe('backup');
    // Hold-down over: its adverts are discarded again (preempt), and we take over after a Master_Down_Interval.
    const a = peerAdvertises(s, end, end + 1000, masterAdvert(100));
    expect(s.sm.inHoldDown).toBe(false);
    expect(becameMaster(a)).toBe(true);
  });

  // With no master heard it tries again, backing off: 1 s, 2 s, 4 s... (a re-audit: a host alone without
  // CAP_NET_ADMIN tried every Master_Down_Interval, 16 log lines a second).
  it('with no master heard, it still takes over, after VIP_RETRY_MIN_MS, then twice as long at each failure', () => {
    const s = masterThenVipLost(2000);
    expect(becameMaster(s.runUntil(2000 + VIP_RETRY_MIN_MS - 0.01))).toBe(false);
    expect(becameMaster(s.runUntil(2000 + VIP_RETRY_MIN_MS))).toBe(true);
    expect(s.sm.inHoldDown).toBe(true); // the hold-down only concerns preempting a live master
    const again = s.clock.t;
    s.sm.vipLost();
    expect(becameMaster(s.runUntil(again + 2 * VIP_RETRY_MIN_MS - 0.01))).toBe(false);
    expect(becameMaster(s.runUntil(again + 2 * VIP_RETRY_MIN_MS))).toBe(true);
  });

  // Both hosts unable to add the VIP handed it back and forth at Skew_Time on each other's priority 0.
  it("in the hold-down, a peer's resign (priority 0) is met after a Master_Down_Interval, not its Skew_Time", () => {
    const s = masterThenVipLost(2000);
    peerAdvertises(s, 2060, 3000, masterAdvert(100)); // the peer took over
    const resignAt = 3050;
    s.clock.t = resignAt;
    s.sm.onAdvert(masterAdvert(0));
    expect(becameMaster(s.runUntil(resignAt + s.sm.masterDownInterval() - 100))).toBe(false);
    expect(becameMaster(s.runUntil(resignAt + s.sm.masterDownInterval()))).toBe(true);
  });

  // Each retry was a failover and back: the live master stepped down on our advert (closing its VIP sessions), then
  // took the VIP again when our add failed once more.
  it('preempts again VIPs first after a failure: no master advert until they are added, so a failed retry costs the peer nothing', () => {
    const s = masterThenVipLost(2000);
    const end = 2000 + VIP_HOLD_DOWN_MIN_MS;
    peerAdvertises(s, 2060, end - 100, masterAdvert(100));
    const a = peerAdvertises(s, end, end + 1000, masterAdvert(100));
    expect(becameMaster(a)).toBe(true);
    expect(a.some((x) => x.type === 'addVipsThenAnnounce')).toBe(true);
    expect(a.some((x) => x.type === 'addVips')).toBe(false);
    // From then on, through the peer's adverts and our own timer, nothing carried the MASTER flag.
    const from = a.findIndex((x) => x.type === 'addVipsThenAnnounce');
    expect(a.slice(from).filter((x) => x.type === 'sendAdvert' && (x.flags & FLAG_MASTER) !== 0)).toEqual([]);
    expect(a.slice(from).some((x) => x.type === 'sendAdvert')).toBe(true); // it still advertises (as a backup would)
    // The VIPs are here: a master from now on, asserting itself against the lower-priority one.
    s.sm.vipsHeld();
    const after = peerAdvertises(s, s.clock.t + 1, s.clock.t + 300, masterAdvert(100));
    expect(after.some((x) => x.type === 'sendAdvert' && (x.flags & FLAG_MASTER) !== 0)).toBe(true);
  });

  it('doubles at each further failure, up to the cap', () => {
    const s = masterThenVipLost(2000);
    const seen: number[] = [s.sm.holdDownMs];
    for (let i = 0; i < 10; i++) {
      s.runUntil(s.clock.t + s.sm.holdDownMs); // no one else: master again (the retry's back-off is shorter)
      expect(s.sm.state).toBe('master');
      s.sm.vipLost();
      seen.push(s.sm.holdDownMs);
    }
    expect(seen.slice(0, 4)).toEqual([VIP_HOLD_DOWN_MIN_MS, 2 * VIP_HOLD_DOWN_MIN_MS, 4 * VIP_HOLD_DOWN_MIN_MS, 8 * VIP_HOLD_DOWN_MIN_MS]);
    expect(Math.max(...seen)).toBe(VIP_HOLD_DOWN_MAX_MS);
    expect(seen.at(-1)).toBe(VIP_HOLD_DOWN_MAX_MS);
  });

  it('starts from the minimum again once the VIPs have been held for VIP_HOLD_DOWN_RESET_MS', () => {
    const s = masterThenVipLost(2000);
    s.runUntil(s.clock.t + VIP_RETRY_MIN_MS);
    s.sm.vipsHeld();
    s.runUntil(s.clock.t + VIP_HOLD_DOWN_RESET_MS - 1000); // held, not long enough
    s.sm.vipLost();
    expect(s.sm.holdDownMs).toBe(2 * VIP_HOLD_DOWN_MIN_MS);
    s.runUntil(s.clock.t + 2 * VIP_RETRY_MIN_MS);
    s.sm.vipsHeld();
    s.runUntil(s.clock.t + VIP_HOLD_DOWN_RESET_MS);
    s.sm.vipLost();
    expect(s.sm.holdDownMs).toBe(VIP_HOLD_DOWN_MIN_MS);
  });

  it('a VIP removed behind our back is added back in place at most once per VIP_HOLD_DOWN_RESET_MS', () => {
    const s = setup({ priority: 150 });
    s.sm.start();
    expect(s.sm.restoreVipInPlace()).toBe(false); // not master
    s.runUntil(2000);
    expect(s.sm.restoreVipInPlace()).toBe(true);
    expect(s.sm.state).toBe('master');
    s.runUntil(2000 + VIP_HOLD_DOWN_RESET_MS - 1);
    expect(s.sm.restoreVipInPlace()).toBe(false); // gone again soon: the caller resigns
    s.runUntil(2000 + VIP_HOLD_DOWN_RESET_MS);
    expect(s.sm.restoreVipInPlace()).toBe(true);
  });
});

describe('advert timer', () => {
  it('after a stall it carries on from now instead of sending a burst', () => {
    const s = setup();
    s.sm.start();
    s.runUntil(2000);
    s.clock.t = 5000; // 3 s stall
    const a = s.sm.onTimer();
    expect(a.filter((x) => x.type === 'sendAdvert')).toHaveLength(1);
    expect(s.sm.nextDeadline()).toBe(5100);
  });
});
