/**
 * One failover instance's election, after RFC 5798 §6.4 (VRRPv3) with the RFC 9568 / keepalived refinements,
 * as a pure class: inputs are calls, outputs are lists of actions, time comes from the injected monotonic
 * clock, and `nextDeadline()` says when `onTimer()` must be called next. No I/O happens here.
 *
 * Differences from VRRP, all deliberate:
 *  - Every instance advertises every interval in every state (flags tell MASTER / FAULT / neither), so each
 *    side knows the other's state. Election rules therefore apply only to adverts that carry the MASTER flag;
 *    a backup's advert never resets anyone's timers.
 *  - FAULT (keepalived's internal state): priority-0 adverts with the FAULT flag, no VIP; leaving FAULT goes
 *    through BACKUP and a full Master_Down_Interval.
 *  - `resign()` is the graceful stop step: priority 0 (with the MASTER flag) while keeping the VIP until the
 *    peer advertises as master; a resigned instance never becomes master again. (Its 'removeVips' on that
 *    hand-over is deferred by the heartbeat until close(), so evicted sessions can still be closed.)
 *  - VIP hold-down (`vipLost()`): an instance that could not hold its VIP does not preempt a live master for a
 *    while (VIP_HOLD_DOWN_MIN_MS), so a host that cannot add its VIP never takes it from one that can.
 *  - Preempting a live master, the VIPs and the GARP come first and the master advert after them
 *    ('addVipsThenAnnounce'): see becomeMaster.
 *  - Held at start (`setHeld`): the heartbeat starts before the proxy serves (its warm-up, first health verdicts and
 *    listeners take seconds), so that the Master_Down_Interval runs meanwhile; a Master_Down_Timer that fires while
 *    held makes us master only once the hold ends. keepalived with HAProxy beside it takes the VIP whether HAProxy
 *    listens yet or not.
 */
import { FLAG_FAULT, FLAG_MASTER } from './advert.js';

export type FailoverState = 'init' | 'backup' | 'master' | 'fault';
export const FAILOVER_STATES: readonly FailoverState[] = ['init', 'backup', 'master', 'fault'];

export type FailoverAction =
  | { type: 'sendAdvert'; priority: number; flags: number }
  | { type: 'addVips' }
  /** Add the VIPs, announce them, and only then advertise as master (preempting a live master: becomeMaster). */
  | { type: 'addVipsThenAnnounce' }
  | { type: 'removeVips' }
  | { type: 'garp' }
  /**
   * One gratuitous ARP per VIP now, not the burst: a heal (a peer heard again after a silence, a lower-priority
   * master). A burst's later packets, 200 ms apart, could outlive our mastership: one sent just before we step down
   * pulled the clients back to us as the preempting peer took over (150 ms of lost SYNs in the failover benchmark).
   */
  | { type: 'reannounce' }
  /** A live master of lower priority heard: preempted once heard for preemptDelay without interruption (a log line). */
  | { type: 'preemptPending'; masterPriority: number; delayMs: number }
  | { type: 'notify'; from: FailoverState; to: FailoverState; cause: TransitionCause };

/**
 * Why a transition happened, for the `failover state changed` line (keepalived says as much: "Received advert with
 * higher priority", "Entering FAULT STATE"; an audit found a takeover after a crash and one after a resign alike).
 */
export type TransitionCause =
  /** INIT to BACKUP or FAULT. */
  | 'start'
  /** Tracking (interface, address, listeners, a script of weight 0) put the instance in FAULT, or it cleared. */
  | 'fault'
  | 'fault_cleared'
  /** The Master_Down_Timer ran out: no master advert for Master_Down_Interval (none at start, or the master went silent). */
  | 'master_down'
  /** The master advertised priority 0 (it stops, or went to FAULT): taken over at Skew_Time. */
  | 'master_resigned'
  /** A live master of lower priority, preempted. */
  | 'preempt'
  /** A master of higher priority (or equal, from a higher address) was heard: stepped down. */
  | 'higher_priority_master'
  /** A VIP could not be added or kept: resigned. */
  | 'vip_lost'
  /** This host stops (resign()): the peer advertises as master, the VIP is handed over. */
  | 'stopping';

export interface StateMachineConfig {
  routerId: number;
  /** Configured priority 1..254 (the higher wins). */
  priority: number;
  /** Our Advertisement_Interval in ms. */
  advertInterval: number;
  preempt: boolean;
  /** ms a returning higher-priority instance waits, stable, before preempting a lower-priority master. */
  preemptDelay: number;
  /** Our own advert source address as an unsigned 32-bit number (the equal-priority tie break). */
  selfAddress: number;
}

export interface ReceivedAdvert {
  priority: number;
  flags: number;
  intervalCs: number;
  /** Sender's IPv4 address as an unsigned 32-bit number. */
  sender: number;
  /**
   * The sender has run no longer than this host, give or take COLD_START_SLACK_MS (its advert counter says how long):
   * the two started together. Absent: taken as true. A peer that ran before us and is no master is not starting (a
   * VIP hold-down, say), and no reason to wait (a re-audit: a healthy host waited 6.4 s with no VIP anywhere).
   */
  startedWithUs?: boolean;
}

/** A master re-announces (GARP) on a lower-priority master's advert at most this often: a peer that cannot
 * hear us keeps advertising as master, and each of its adverts must not start another arping burst. */
export const HEAL_GARP_MIN_GAP_MS = 1000;

/** A peer silent for more than this many of our intervals could have declared us down and taken over. */
export const PEER_SILENCE_ADVERTS = 3;

/**
 * VIP hold-down: after a VIP it could not add (or lost again), an instance does not preempt a live master for this
 * long, doubled at each further failure up to VIP_HOLD_DOWN_MAX_MS. Without it, a host that cannot add its VIP
 * (no CAP_NET_ADMIN, a broken `ip`) took the VIP from a healthy lower-priority peer every Master_Down_Interval,
 * closing the peer's VIP sessions each time. With no master heard, it still takes over, after VIP_RETRY_MIN_MS and more.
 */
export const VIP_HOLD_DOWN_MIN_MS = 10_000;
/** With no master heard, the first retry after a VIP failure comes after this long, doubled at each further failure. */
export const VIP_RETRY_MIN_MS = 1000;
export const VIP_HOLD_DOWN_MAX_MS = 600_000;
/**
 * VIPs held this long as master clear the failure count (the next hold-down is VIP_HOLD_DOWN_MIN_MS again). Also
 * the window for adding back a VIP removed behind our back: once per window in place, a second time is a failure.
 */
export const VIP_HOLD_DOWN_RESET_MS = 60_000;

/**
 * Cold start: an instance that has heard no master since its start, and hears a peer that outranks it advertise as a
 * backup (starting too: its warm-up and first health verdicts hold it), lets that peer become master rather than
 * take the VIP for the moment until the peer preempts it (two moves, this host's VIP sessions closed: a failover
 * audit saw it in 3 of 4 simultaneous starts). For at most this long from its first deferral; a host that has heard
 * a master (a failover, not a start) never waits.
 */
export const COLD_START_DEFER_MAX_MS = 6000;
/** How much longer than this host a peer may have run and still count as started with it (ReceivedAdvert.startedWithUs). */
export const COLD_START_SLACK_MS = 2000;

export class FailoverStateMachine {
  private current: FailoverState = 'init';
  private fault = false;
  private penalty = 0;
  private resigned = false;
  /** Master_Adver_Interval (ms): our own until a master's advert teaches us its interval. */
  private masterAdverInterval: number;
  /** Earliest moment we may become master: one full Master_Down_Interval after start or after FAULT. */
  private notBefore = 0;
  private downAt: number | null = null;
  private advertAt: number | null = null;
  private preemptSince: number | null = null;
  /** The master we currently follow (its priority-0 advert, even with the FAULT flag, hands over to us). */
  private masterAddress: number | null = null;
  private lastHealGarpAt = Number.NEGATIVE_INFINITY;
  /** The last re-announcement for a lower-priority master heard (a split brain healing, a preempted master). */
  private lastLowerMasterGarpAt = Number.NEGATIVE_INFINITY;
  /** When we last heard any advert of this router id (the peer's silence tells of a partition). */
  private lastHeardAt = Number.NEGATIVE_INFINITY;
  /** VIP failures (could not add, lost) since the VIPs were last held for VIP_HOLD_DOWN_RESET_MS. */
  private vipFailures = 0;
  private holdDownUntil = Number.NEGATIVE_INFINITY;
  private lastHoldDownMs = 0;
  /** When the VIPs were installed as master (null when not master or not installed yet). */
  private vipsHeldSince: number | null = null;
  /** When we last heard a live lower-priority master that we mean to preempt (discarded, or within preemptDelay). */
  private lastPreemptDiscardAt = Number.NEGATIVE_INFINITY;
  /** Master by preemption, its VIPs not added and announced yet: no master advert until they are (vipsHeld). */
  private awaitingVips = false;
  private lastRestoreAt = Number.NEGATIVE_INFINITY;
  /** The proxy does not serve yet (setHeld): BACKUP at most, whatever the Master_Down_Timer says. */
  private held = false;
  /** A master has been heard (or we were one) since the start: no cold-start deferral then. */
  private masterSeen = false;
  /** What the pending Master_Down_Timer stands for: a silence, or a resign heard (shortenDownTimer). */
  private downCause: 'master_down' | 'master_resigned' = 'master_down';
  /** When a peer that outranks us, starting with us, last advertised as a backup (COLD_START_DEFER_MAX_MS). */
  private higherBackupAt = Number.NEGATIVE_INFINITY;
  /** When a peer that outranks us last advertised as a backup, however long it has run (deferToHigherPeer). */
  private outrankingBackupAt = Number.NEGATIVE_INFINITY;
  /** When the present deferral to a peer that outranks us began; null: none. */
  private deferringSince: number | null = null;

  constructor(
    private cfg: StateMachineConfig,
    private readonly now: () => number,
  ) {
    if (!(cfg.advertInterval > 0)) throw new RangeError('advertInterval must be > 0');
    this.masterAdverInterval = cfg.advertInterval;
  }

  get state(): FailoverState {
    return this.current;
  }

  get routerId(): number {
    return this.cfg.routerId;
  }

  get isResigned(): boolean {
    return this.resigned;
  }

  get isFault(): boolean {
    return this.fault;
  }

  /** True while the VIP hold-down keeps us from preempting a live master (see VIP_HOLD_DOWN_MIN_MS). */
  get inHoldDown(): boolean {
    return this.now() < this.holdDownUntil;
  }

  /** The length of the hold-down the last VIP failure started (0 before any). */
  get holdDownMs(): number {
    return this.lastHoldDownMs;
  }

  /** Configured priority lowered by tracking, never below 1 (0 means "resigning" on the wire). */
  get effectivePriority(): number {
    return Math.max(1, this.cfg.priority - this.penalty);
  }

  /** What our adverts carry now. */
  get advertisedPriority(): number {
    return this.resigned || this.current === 'fault' ? 0 : this.effectivePriority;
  }

  /** The learned Master_Adver_Interval in ms. */
  get learnedInterval(): number {
    return this.masterAdverInterval;
  }

  /** RFC 5798 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256, with the effective priority. */
  skewTime(): number {
    return ((256 - this.effectivePriority) * this.masterAdverInterval) / 256;
  }

  /** RFC 5798 §6.1: Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time. */
  masterDownInterval(): number {
    return 3 * this.masterAdverInterval + this.skewTime();
  }

  /** Absolute time (same clock as `now`) at which `onTimer()` must run; Infinity when nothing is pending. */
  nextDeadline(): number {
    // Held, a Master_Down_Timer that has fired stays due (setHeld(false) acts on it), not a deadline to call back at.
    const down = this.held ? Number.POSITIVE_INFINITY : (this.downAt ?? Number.POSITIVE_INFINITY);
    return Math.min(down, this.advertAt ?? Number.POSITIVE_INFINITY);
  }

  /**
   * The proxy cannot serve yet (true: at start, until its listeners are bound) or now can (false). Held, this
   * instance takes part in the election as BACKUP, and its Master_Down_Timer runs, but it does not become master:
   * released, it becomes master at once if the timer has fired meanwhile (no master heard, or only a lower-priority
   * one to preempt), else when it fires. So a host restarted after a crash takes its VIP back as soon as it serves,
   * not a whole Master_Down_Interval after.
   */
  setHeld(held: boolean): FailoverAction[] {
    if (held === this.held) return [];
    this.held = held;
    if (held || this.current !== 'backup' || this.downAt === null) return [];
    const now = this.now();
    return now >= this.downAt && !this.deferToHigherPeer(now) ? this.becomeMaster(now) : [];
  }

  /** INIT → BACKUP (or FAULT). RFC 5798 §6.4.1 for priority < 255: Master_Down_Timer = Master_Down_Interval. */
  start(): FailoverAction[] {
    if (this.current !== 'init') return [];
    const now = this.now();
    this.masterAdverInterval = this.cfg.advertInterval;
    if (this.fault) return this.enterFault(now);
    return this.enterBackupWaiting('init', now);
  }

  onTimer(): FailoverAction[] {
    if (this.current === 'init') return [];
    const now = this.now();
    const actions: FailoverAction[] = [];
    if (this.current === 'backup' && !this.held && this.downAt !== null && now >= this.downAt && !this.deferToHigherPeer(now)) actions.push(...this.becomeMaster(now));
    if (this.advertAt !== null && now >= this.advertAt) {
      actions.push(this.advert());
      const next = this.advertAt + this.cfg.advertInterval;
      // After a stall, carry on from now rather than sending a burst of late adverts.
      this.advertAt = next > now ? next : now + this.cfg.advertInterval;
    }
    return actions;
  }

  /** An authentic, non-replayed advert for this router id from a peer. */
  onAdvert(a: ReceivedAdvert): FailoverAction[] {
    const now = this.now();
    const silentFor = now - this.lastHeardAt;
    this.lastHeardAt = now;
    if (this.current === 'backup') return this.backupReceive(a, now);
    if (this.current === 'master') {
      const actions = this.masterReceive(a, now);
      // A peer heard again after a silence longer than it needs to take over (partition, cut link) may have
      // been master and announced the VIP with its MAC; its last "I was master" advert may have been lost
      // (asymmetric heal). Still master: re-announce (rate limited, like the split-brain heal).
      if (this.current === 'master' && silentFor > PEER_SILENCE_ADVERTS * this.cfg.advertInterval && now - this.lastHealGarpAt >= HEAL_GARP_MIN_GAP_MS) {
        this.lastHealGarpAt = now;
        if (!actions.some((x) => x.type === 'reannounce')) actions.push({ type: 'reannounce' });
      }
      return actions;
    }
    return []; // INIT has not started; FAULT does not take part in the election.
  }

  setFault(fault: boolean): FailoverAction[] {
    if (fault === this.fault) return [];
    this.fault = fault;
    if (this.current === 'init') return [];
    const now = this.now();
    if (fault) return this.enterFault(now);
    if (this.current !== 'fault') return [];
    this.masterAdverInterval = this.cfg.advertInterval; // learned interval may be stale after a fault
    return this.enterBackupWaiting('fault', now);
  }

  /**
   * A reload (reload.ts): this host's priority, preempt and preemptDelay. As a tracking weight does, a changed
   * priority is advertised at once by a master, so that a peer it now falls below preempts without waiting for the
   * next tick (the planned switchover: lower the master's priority, reload).
   */
  reconfigure(c: { priority: number; preempt: boolean; preemptDelay: number }): FailoverAction[] {
    const before = this.effectivePriority;
    const changed = c.priority !== this.cfg.priority || c.preempt !== this.cfg.preempt || c.preemptDelay !== this.cfg.preemptDelay;
    if (!changed) return [];
    const weaker = c.priority < this.cfg.priority || (this.cfg.preempt && !c.preempt);
    this.cfg = { ...this.cfg, priority: c.priority, preempt: c.preempt, preemptDelay: c.preemptDelay };
    this.preemptSince = null; // "stable" means: with the same settings for the whole delay
    if (weaker) this.reconsiderPreemption();
    if (this.effectivePriority !== before && this.current === 'master' && !this.resigned) {
      this.advertAt = this.now() + this.cfg.advertInterval;
      return [this.advert()];
    }
    return [];
  }

  /** Tracking weight: pools with no server up lower the priority (never FAULT). */
  setPriorityPenalty(penalty: number): FailoverAction[] {
    const p = Number.isFinite(penalty) && penalty > 0 ? Math.floor(penalty) : 0;
    if (p === this.penalty) return [];
    const before = this.effectivePriority;
    this.penalty = p;
    if (this.effectivePriority === before) return [];
    this.preemptSince = null; // "stable" means: with the same priority for the whole delay
    if (this.effectivePriority < before) this.reconsiderPreemption();
    if (this.current === 'master' && !this.resigned) {
      // Tell the peer at once so a higher-priority backup can preempt without waiting for the next tick. Still
      // adding and announcing the VIPs of a preemption: without the MASTER flag (advert()), or the live master
      // would let the VIP go before ours is there.
      this.advertAt = this.now() + this.cfg.advertInterval;
      return [this.advert()];
    }
    return [];
  }

  /**
   * Graceful stop: as master, advertise priority 0 (RFC 5798 §5.2.4: "the current Master has stopped
   * participating") and keep the VIP until the peer advertises as master; never become master again.
   */
  resign(): FailoverAction[] {
    if (this.resigned) return [];
    this.resigned = true;
    this.preemptSince = null;
    if (this.current === 'master') {
      this.advertAt = this.now() + this.cfg.advertInterval;
      return [{ type: 'sendAdvert', priority: 0, flags: FLAG_MASTER }];
    }
    if (this.current === 'backup') {
      this.downAt = null;
      // Said at once, not at the next periodic advert (an interval away, often after this host has gone): a master
      // stopping at the same time then knows that no hand-over can come from here and does not wait for one.
      return [{ type: 'sendAdvert', priority: 0, flags: 0 }];
    }
    return [];
  }

  /** The VIPs are installed (the heartbeat's `ip addr add` completed; preempting, and announced) while master. */
  vipsHeld(): void {
    if (this.current !== 'master') return;
    this.awaitingVips = false;
    this.vipsHeldSince ??= this.now();
  }

  /**
   * A VIP disappeared while master (removed behind our back). True: add it back in place (no failover, which would
   * be two: the peer's takeover, then our preemption back). At most once per VIP_HOLD_DOWN_RESET_MS: false when it
   * disappeared again since, and the caller resigns (vipLost): something keeps removing it.
   */
  restoreVipInPlace(): boolean {
    if (this.current !== 'master') return false;
    const now = this.now();
    if (now - this.lastRestoreAt < VIP_HOLD_DOWN_RESET_MS) return false;
    this.lastRestoreAt = now;
    return true;
  }

  /**
   * A VIP could not be added, or was lost, while master: resign with priority 0 (as keepalived does on a lost VIP)
   * and start a hold-down (VIP_HOLD_DOWN_MIN_MS), during which we follow a lower-priority master instead of
   * preempting it; with no master heard we still take over, after VIP_RETRY_MIN_MS, then twice as long at each failure.
   */
  vipLost(): FailoverAction[] {
    if (this.current !== 'master') return [];
    const now = this.now();
    this.leaveMaster(now);
    this.vipFailures++;
    this.lastHoldDownMs = Math.min(VIP_HOLD_DOWN_MAX_MS, VIP_HOLD_DOWN_MIN_MS * 2 ** Math.min(this.vipFailures - 1, 30));
    this.holdDownUntil = now + this.lastHoldDownMs;
    this.current = 'backup';
    this.masterAddress = null;
    this.preemptSince = null;
    // A full Master_Down_Interval at least: the peer (timer at Skew_Time after our priority 0) goes first. With no
    // master then (the peer down too, or none), the next try backs off: 1 s, 2 s, 4 s... up to the hold-down (a
    // re-audit: a host alone without CAP_NET_ADMIN tried every Master_Down_Interval, 16 log lines a second).
    const retryMs = Math.min(this.lastHoldDownMs, VIP_RETRY_MIN_MS * 2 ** Math.min(this.vipFailures - 1, 30));
    this.downAt = this.resigned ? null : now + Math.max(this.masterDownInterval(), retryMs);
    this.downCause = 'master_down';
    this.advertAt = now + this.cfg.advertInterval;
    return [{ type: 'sendAdvert', priority: 0, flags: FLAG_MASTER }, { type: 'removeVips' }, { type: 'notify', from: 'master', to: 'backup', cause: 'vip_lost' }];
  }

  // ---- internals -------------------------------------------------------------------------------------------

  private advert(): FailoverAction {
    if (this.current === 'fault') return { type: 'sendAdvert', priority: 0, flags: FLAG_FAULT };
    // Master whose VIPs are still being added and announced (a preemption): not yet said to the live master (becomeMaster).
    const asMaster = this.current === 'master' && !this.awaitingVips;
    return { type: 'sendAdvert', priority: this.advertisedPriority, flags: asMaster ? FLAG_MASTER : 0 };
  }

  /** BACKUP with a full Master_Down_Interval before we may become master (start, leaving FAULT). */
  private enterBackupWaiting(from: FailoverState, now: number): FailoverAction[] {
    this.current = 'backup';
    this.masterAddress = null;
    this.preemptSince = null;
    this.notBefore = now + this.masterDownInterval();
    this.downAt = this.resigned ? null : this.notBefore;
    this.downCause = 'master_down';
    this.advertAt = now + this.cfg.advertInterval;
    return [this.advert(), { type: 'notify', from, to: 'backup', cause: from === 'init' ? 'start' : 'fault_cleared' }];
  }

  private enterFault(now: number): FailoverAction[] {
    const from = this.current;
    if (from === 'master') this.leaveMaster(now);
    this.current = 'fault';
    this.downAt = null;
    this.masterAddress = null;
    this.preemptSince = null;
    this.advertAt = now + this.cfg.advertInterval;
    const actions: FailoverAction[] = [{ type: 'sendAdvert', priority: 0, flags: FLAG_FAULT }];
    if (from === 'master') actions.push({ type: 'removeVips' });
    actions.push({ type: 'notify', from, to: 'fault', cause: from === 'init' ? 'start' : 'fault' });
    return actions;
  }

  /**
   * RFC 5798 §6.4.2 Master_Down_Timer fired. With no live master (it failed, or none yet): keepalived's order,
   * advert first, then the VIPs, then GARP, then notify. Preempting a live lower-priority master: the VIPs and the
   * GARP first, the master advert after them (addVipsThenAnnounce), so that the old master lets go only once
   * neighbours send to us. `ip` and `arping` are child processes, a few ms each: in keepalived's order the old
   * master dropped the VIP while clients still sent to it, and a new connection's SYN was lost (the failover
   * benchmark saw a failed probe in 5 of 14 failbacks; keepalived, with netlink and a raw socket, 0 of 18).
   */
  private becomeMaster(now: number): FailoverAction[] {
    this.current = 'master';
    this.masterSeen = true;
    this.deferringSince = null;
    // The takeover burst below announces us to a peer heard again after a silence. Not to the lower-priority
    // master we preempt (lastLowerMasterGarpAt): its last advert as it steps down may follow a GARP of its own
    // burst, which pulled the clients back to it, and one of ours then puts that right.
    this.lastHealGarpAt = now;
    this.downAt = null;
    this.preemptSince = null;
    this.masterAddress = null;
    this.advertAt = now + this.cfg.advertInterval;
    // A live master heard within the interval. Also what a retry after a VIP failure needs: the live master steps
    // down only once our VIPs are here, so a host still unable to add them never takes the VIP from it.
    if (now - this.lastPreemptDiscardAt <= this.masterDownInterval()) {
      this.awaitingVips = true;
      // A master heard lately, but one that resigned since (a re-audit: during a preemptDelay) is no preemption.
      return [{ type: 'addVipsThenAnnounce' }, { type: 'notify', from: 'backup', to: 'master', cause: this.downCause === 'master_resigned' ? 'master_resigned' : 'preempt' }];
    }
    return [
      { type: 'sendAdvert', priority: this.effectivePriority, flags: FLAG_MASTER },
      { type: 'addVips' },
      { type: 'garp' },
      { type: 'notify', from: 'backup', to: 'master', cause: this.downCause },
    ];
  }

  private backupReceive(a: ReceivedAdvert, now: number): FailoverAction[] {
    const fromMaster = (a.flags & FLAG_MASTER) !== 0;
    if (!fromMaster) {
      // Not a master's advert. Only a priority 0 from the master we follow (it went to FAULT) matters, and a backup
      // that outranks us (deferToHigherPeer).
      if (a.priority === 0 && this.masterAddress === a.sender) this.shortenDownTimer(now);
      if (a.priority > 0 && (a.flags & FLAG_FAULT) === 0 && this.outranks(a)) {
        this.outrankingBackupAt = now;
        if (a.startedWithUs !== false) this.higherBackupAt = now;
      }
      return [];
    }
    if (a.priority > 0) this.masterSeen = true;
    if (a.priority === 0) {
      // RFC 5798 §6.4.2: "If the Priority in the ADVERTISEMENT is zero, then: Set the Master_Down_Timer to Skew_Time".
      this.masterAddress = a.sender;
      this.shortenDownTimer(now);
      return [];
    }
    // RFC 5798 §6.4.2: "If Preempt_Mode is False, or If the Priority in the ADVERTISEMENT is greater than or
    // equal to the local Priority, then: Reset the Master_Down_Timer ... else: Discard the ADVERTISEMENT".
    // VIP hold-down: we could not hold the VIP; a lower-priority master that can keeps it.
    if (this.resigned || !this.cfg.preempt || a.priority >= this.effectivePriority || now < this.holdDownUntil) {
      this.preemptSince = null;
      this.acceptMaster(a, now);
      return [];
    }
    let actions: FailoverAction[] = [];
    if (this.cfg.preemptDelay > 0) {
      // Preempt only after a lower-priority master has been seen for preemptDelay without interruption.
      if (this.preemptSince === null) {
        this.preemptSince = now;
        // Said once per wait: the VIP stays where it is for that long, and the operator sees why.
        actions = [{ type: 'preemptPending', masterPriority: a.priority, delayMs: this.cfg.preemptDelay }];
      }
      if (now - this.preemptSince < this.cfg.preemptDelay) this.acceptMaster(a, now);
    }
    this.lastPreemptDiscardAt = now;
    return actions; // discarded: the Master_Down_Timer keeps running and we take over when it fires
  }

  private masterReceive(a: ReceivedAdvert, now: number): FailoverAction[] {
    if ((a.flags & FLAG_MASTER) === 0) return []; // a backup's or a FAULT's advert never demotes a master
    const ours = this.advertisedPriority;
    if (a.priority === 0) {
      // RFC 5798 §6.4.3: another master resigned: "Send an ADVERTISEMENT; Reset the Adver_Timer".
      this.advertAt = now + this.cfg.advertInterval;
      return [this.advert()];
    }
    // RFC 5798 §6.4.3: higher priority, or equal priority and a higher sender address (unsigned, network
    // byte order per RFC 9568) → Backup, learning the interval.
    if (a.priority > ours || (a.priority === ours && a.sender > this.cfg.selfAddress)) {
      this.leaveMaster(now);
      this.current = 'backup';
      this.preemptSince = null;
      this.acceptMaster(a, now);
      this.advertAt = now + this.cfg.advertInterval;
      // keepalived's vrrp_higher_prio_send_advert: one last advert as master, so that the winner hears a
      // lower-priority master and re-announces. Without it, neighbours that learnt our MAC during a split
      // brain keep sending to us after we drop the VIP (keepalived#166).
      return [
        { type: 'sendAdvert', priority: ours, flags: FLAG_MASTER },
        { type: 'removeVips' },
        { type: 'notify', from: 'master', to: 'backup', cause: this.resigned ? 'stopping' : 'higher_priority_master' },
      ];
    }
    // Its VIPs not added and announced yet (a preemption): the live master keeps serving until they are (becomeMaster).
    if (this.awaitingVips) return [];
    // Lower-priority master: a split brain is healing. RFC 9568: advertise at once to assert ourselves;
    // keepalived (garp_lower_prio_repeat) and ucarp: re-announce, so neighbours that cached the other
    // master's MAC during the split come back to us.
    this.advertAt = now + this.cfg.advertInterval;
    const actions: FailoverAction[] = [{ type: 'sendAdvert', priority: ours, flags: FLAG_MASTER }];
    if (now - this.lastLowerMasterGarpAt >= HEAL_GARP_MIN_GAP_MS) {
      this.lastLowerMasterGarpAt = now;
      actions.push({ type: 'reannounce' });
    }
    return actions;
  }

  /**
   * A backup whose claim just weakened (a lower priority, preempt off) while it meant to preempt a live master (it
   * discarded that master's adverts, so its Master_Down_Timer ran on, and held at start it may have run out): the
   * timer starts again, and the master's next advert decides, under the new settings, whether to accept it or to
   * preempt after all. Without this, a release of the hold right after a reload to a priority below the master's
   * made this host master with it (audit).
   */
  private reconsiderPreemption(): void {
    if (this.current !== 'backup' || this.downAt === null || this.resigned) return;
    const now = this.now();
    if (now - this.lastPreemptDiscardAt > this.masterDownInterval()) return;
    this.downAt = Math.max(now + this.masterDownInterval(), this.notBefore);
  }

  /** Bookkeeping on leaving MASTER: VIPs held long enough clear the VIP failure count. */
  private leaveMaster(now: number): void {
    if (this.vipsHeldSince !== null && now - this.vipsHeldSince >= VIP_HOLD_DOWN_RESET_MS) this.vipFailures = 0;
    this.vipsHeldSince = null;
    this.awaitingVips = false;
  }

  private acceptMaster(a: ReceivedAdvert, now: number): void {
    // RFC 5798 §6.4.2: "Set Master_Adver_Interval to Adver Interval contained in the ADVERTISEMENT;
    // Recompute the Skew_Time; Recompute the Master_Down_Interval".
    this.masterAdverInterval = a.intervalCs * 10;
    this.masterAddress = a.sender;
    this.deferringSince = null;
    this.downAt = this.resigned ? null : Math.max(now + this.masterDownInterval(), this.notBefore);
    this.downCause = 'master_down';
  }

  /** RFC 5798 §6.4.3's order: a higher priority, or an equal one from a higher address, wins. */
  private outranks(a: ReceivedAdvert): boolean {
    const ours = this.effectivePriority;
    return a.priority > ours || (a.priority === ours && a.sender > this.cfg.selfAddress);
  }

  /**
   * The Master_Down_Timer fired while a peer that outranks us advertises as a backup: true, and the timer runs one
   * more interval, while that lasts and for at most COLD_START_DEFER_MAX_MS (a preemption: one Master_Down_Interval).
   * The peer becomes master at its own timer, or we do after the bound. Two cases:
   *  - a cold start (no master heard since ours), the peer starting too;
   *  - a preemption of a live lower-priority master, with a third host (`peers` lists two): the one that outranks us
   *    preempts it too, at its own timer (the shorter skew: first), but its master advert comes only after its VIPs
   *    and GARP (addVipsThenAnnounce), 50 ms and more later, after our timer. Without the wait both preempted, and
   *    all three hosts held the VIP for 40-75 ms (a failover audit, 5 runs of 5).
   * Not after a master went silent: the peer that outranks us is then master first and its advert comes at once.
   */
  private deferToHigherPeer(now: number): boolean {
    const preempting = now - this.lastPreemptDiscardAt <= this.masterDownInterval();
    const heardAt = preempting ? this.outrankingBackupAt : this.masterSeen ? Number.NEGATIVE_INFINITY : this.higherBackupAt;
    if (now - heardAt > this.masterDownInterval()) return false;
    this.deferringSince ??= now;
    // Preempting, the peer's master advert is due a few tens of ms after our timer: one Master_Down_Interval is
    // ample, and bounds what a peer that outranks us but will not preempt (preempt off there, a longer preemptDelay)
    // costs (a re-audit: 6 s with COLD_START_DEFER_MAX_MS). A cold start waits for the peer's whole warm-up.
    if (now - this.deferringSince >= (preempting ? this.masterDownInterval() : COLD_START_DEFER_MAX_MS)) return false;
    this.downAt = now + this.masterAdverInterval;
    return true;
  }

  private shortenDownTimer(now: number): void {
    // In a VIP hold-down, a peer's resign is no call to take over at Skew_Time: two hosts that both cannot add the
    // VIP would hand it back and forth at that pace. The Master_Down_Interval runs out as with no master heard.
    if (this.resigned || now < this.holdDownUntil) return;
    const at = Math.min(this.downAt ?? Number.POSITIVE_INFINITY, now + this.skewTime());
    this.downAt = Math.max(at, this.notBefore);
    this.downCause = 'master_resigned';
  }
}
