/**
 * The heartbeat: transport + one state machine per instance + the VIP/GARP/notify side effects, on a
 * monotonic clock. Runs inside the worker thread (worker.ts) so proxy event-loop stalls never delay adverts.
 *
 * Side effects never block the loop: `ip` commands of an instance run one after another on a promise chain
 * (add/del keep their order), GARP children are fire-and-forget with kill timeouts, the notify hook is queued.
 * A poll of `ip -j addr show dev IFACE` watches carrier (track.interface → FAULT) and, while MASTER, the VIPs
 * (one removed behind our back is added back once; gone again within VIP_HOLD_DOWN_RESET_MS, or the add fails →
 * resign with priority 0, as keepalived does, and a hold-down before preempting again: state-machine.ts).
 * After a graceful hand-over (resign, then the peer is master) the VIPs stay until close(): see 'removeVips'.
 * Otherwise a VIP found on a host that is not master (a failed `ip addr del`) is removed again: reconcileVips().
 * Demoted without a stop (preempted, a split brain lost, FAULT), an instance first has the proxy close the
 * sessions that came in on its VIPs ('release', bounded by RELEASE_BOUND_MS), then removes the addresses.
 */
import { randomInt } from 'node:crypto';
import type { FailoverConfig, FailoverInstanceConfig } from '../config/types.js';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { AdvertCodec, FLAG_FAULT, FLAG_MASTER, intervalToCentiseconds, type DropReason } from './advert.js';
import { arpingSender, GarpAnnouncer, type SendGarp } from './garp.js';
import { formatCidr, ipv4ToNumber, isIpv4, type Cidr } from './ipv4.js';
import { RateLimitedLog, type LogSink } from './log.js';
import { STATUS_INTERVAL_MS, type PeerState, type WorkerInstanceStatus, type WorkerPeerStatus, type WorkerStatus, type WorkerToMain } from './messages.js';
import { NotifyRunner } from './notify.js';
import { TrackScripts } from './track-scripts.js';
import { AdvertReceiver } from './receiver.js';
import { ReplayGuard } from './replay.js';
import { COLD_START_SLACK_MS, FailoverStateMachine, type FailoverAction, type FailoverState } from './state-machine.js';
import { LinkMonitor } from './link-monitor.js';
import { flushUnresolvedNeighbours } from './neighbours.js';
import { AdvertTransport } from './transport.js';
import { addVip, checkInterfaceName, checkVip, ensurePromoteSecondaries, hasAddress, interfaceExists, onlyVipAddresses, removeVip, showInterface, showInterfaceByIndex, vipEntries, type InterfaceInfo } from './vip.js';
import { threadSharedNow } from '../monotonic-clock.js';

/**
 * Both masters for longer than this many advert intervals, and at least SPLIT_BRAIN_MIN_MS (a preemption's GARP lead
 * and `ip` children must never look like one), is a split brain worth a warning (watchSplitBrain).
 */
const SPLIT_BRAIN_ADVERTS = 3;
const SPLIT_BRAIN_MIN_MS = 1000;
/** How often carrier and VIP presence are polled; an interface event polls at once (LinkMonitor). */
export const WATCH_INTERVAL_MS = 500;
/**
 * Master this long after the start without one advert from a peer: said (notePeerUnheard), and again at most every
 * PEER_UNHEARD_REPEAT_MS while it lasts. A peer that runs with another `port`, transport or `peers` is never heard,
 * and both hosts hold the VIP in silence (a failover audit); a peer that is simply down says the same, less often.
 */
const PEER_UNHEARD_MS = 10_000;
const PEER_UNHEARD_REPEAT_MS = 10 * 60_000;

/**
 * After a graceful hand-over, close() keeps the VIPs at least this long past the peer's MASTER advert: the
 * peer's `ip addr add` and first GARP take a few ms (over 100 ms measured on a loaded 2-core host), and until
 * neighbours hear that GARP they still send to us — better refused (RST: clients retry at once) than dropped
 * on a host without the address (a SYN retransmitted after 1 s).
 */
export const HANDOVER_GRACE_MS = 300;

/**
 * A demoted instance keeps its VIPs at most this long while the proxy closes the sessions that came in on them
 * (their FINs leave only from a local address): the proxy's spread (App.releaseVipSessions, 2 s) and its wait for
 * the closes (2 s), with a margin. Both hosts hold the address meanwhile; we no longer announce it.
 */
export const RELEASE_BOUND_MS = 5_000;

/**
 * Preempting a live master, the master advert (on which it drops the VIP) follows the first gratuitous ARP by this
 * much: `arping` is a child process, whose packet left 2.3-3.6 ms after the spawn here (a sniffer in a namespace,
 * 10 runs); the margin is for a loaded host. Nothing waits on it but the advert: the live master serves meanwhile.
 */
export const GARP_LEAD_MS = 50;

/** How a wait for the proxy's 'released' ended: its answer, the bound, master again (the VIP stays), or a stop. */
type ReleaseOutcome = 'released' | 'bound' | 'master' | 'stop';

/** A peer as this host last heard it (Instance.peersHeard). */
interface HeardPeer {
  /** Its last advert as the status reports it (state, interval; its time on threadSharedNow()). */
  status: WorkerPeerStatus;
  /** this.now() of its last accepted advert. */
  lastAdvertAt: number;
  /** Silent past notePeerSilent's bound, and said so: its next advert is said too. */
  silentSaid: boolean;
}

interface Instance {
  cfg: FailoverInstanceConfig;
  vips: Cidr[];
  sm: FailoverStateMachine;
  garp: GarpAnnouncer;
  /** VIP commands of this instance, in order. */
  ops: Promise<void>;
  /** What the state machine last asked for (set synchronously; commands follow on `ops`). */
  wantVips: boolean;
  /** performance.now() when the last add completed while still wanted; null when not installed. */
  installedAt: number | null;
  peer: WorkerPeerStatus | null;
  /** performance.now() of the graceful hand-over (resigned, the peer became master); the VIPs stay until close(). */
  handedOverAt: number | null;
  /** Ends the wait for the proxy's 'released' (demoted: its VIP sessions are being closed); null when none. */
  releasing: ((outcome: ReleaseOutcome) => void) | null;
  /** Operations queued on `ops` and not ended yet. */
  opsPending: number;
  /** performance.now() when the last operation on `ops` ended. */
  lastOpEndedAt: number;
  /** performance.now() since when we are master and the peer keeps advertising as master too (a split brain). */
  otherMasterSince: number | null;
  /** performance.now() of the last `no advert from any peer` line (notePeerUnheard); null: not said. */
  peerUnheardSaidAt: number | null;
  /**
   * Each peer heard, by address (`peer` above is the last one heard: with three hosts or more, they take turns): its
   * last state and advert, for the `failover peer state` line (said when that peer's state changes, not at every
   * turn: a re-audit counted 20 lines a second) and the `failover peer silent` one (notePeerSilent).
   */
  peersHeard: Map<string, HeardPeer>;
  /** The state the notify hook was last called with (null: not yet). */
  hookState: FailoverState | null;
  /** Master, and the hook to be told so once the VIPs are here (tellHookMaster): not before, not if the add fails. */
  hookMasterDue: boolean;
}

export interface HeartbeatOptions {
  config: FailoverConfig;
  key: Buffer;
  log: LogSink;
  emit: (msg: WorkerToMain) => void;
  /** The proxy does not serve yet: BACKUP at most until serving() (FailoverStateMachine.setHeld). */
  held?: boolean;
  /** Injectable for tests; defaults to arping. */
  sendGarp?: SendGarp;
  /** Injectable for tests outside a network namespace of their own; defaults to vip.ts ensurePromoteSecondaries. */
  promoteSecondaries?: (iface: string) => 'set' | 'already';
}

/**
 * Priority changes this close together are one `failover priority changed` line: a reload reaches the failover thread
 * as two messages (its settings, then the tracking they give), which a re-audit saw as up to four lines through values
 * that never applied.
 */
const PRIORITY_NOTE_MS = 50;

/**
 * How long a stop waits for the notify hooks, in all: a hook still running after NOTIFY_AT_STOP_MS is killed and the
 * `stop` calls behind it get the rest, NOTIFY_STOP_CALLS_MS; then whatever still runs is killed and nothing more is
 * started. Under the main thread's bound for the whole close (index.ts CLOSE_TIMEOUT_MS, 10 s), which would
 * otherwise end this thread with a hook still running.
 */
const NOTIFY_AT_STOP_MS = 4_000;
const NOTIFY_STOP_CALLS_MS = 3_000;

export class Heartbeat {
  private config: FailoverConfig;
  private readonly log: LogSink;
  private readonly emit: (msg: WorkerToMain) => void;
  private readonly codec: AdvertCodec;
  private readonly replay: ReplayGuard;
  private readonly instances = new Map<number, Instance>();
  private readonly notify: NotifyRunner;
  private readonly dropLog: RateLimitedLog;
  private readonly setPromoteSecondaries: (iface: string) => 'set' | 'already';
  private readonly intervalCs: number;
  /** routerId|peer|interval already reported by noteIntervalMismatch. */
  private readonly intervalMismatches = new Set<string>();
  private readonly now = () => performance.now();
  private transport: AdvertTransport | null = null;
  private epoch = 0n;
  private counter = 0n;
  private lastEpochBumpAt = Number.NEGATIVE_INFINITY;
  private localAddress = '';
  /** The interface's kernel index when last read: a change means it was deleted and made again (poll). */
  private interfaceIndex: number | null = null;
  /**
   * The address our adverts come from left the interface: no advert can be sent (the peer takes over), so this
   * host must not hold the VIP meanwhile, or both would (keepalived goes to FAULT for it too). A FAULT whatever
   * track.interface says.
   */
  private ownAddressGone = false;
  /** A poll found the interface missing: when it is back, it is treated as made again (even with its old index). */
  private interfaceWasGone = false;
  /** The interface was made again and the multicast group is not joined on the new one yet. */
  private rejoinPending = false;
  private ownAddresses = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  /** When the armed timer is due. */
  private timerDue = 0;
  /** How late the armed timer already was when something re-armed it before it ran (see schedule()). */
  private lateWhenRearmed = 0;
  private immediate: NodeJS.Immediate | null = null;
  private penalty = 0;
  private watchTimer: NodeJS.Timeout | null = null;
  /** A poll is running (watch); `watchAgain`: an event came meanwhile, poll once more right after it. */
  private watching = false;
  private watchAgain = false;
  private linkMonitor: LinkMonitor | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  /** Effective priority changes not yet said (notePriority): per instance, the priority before them and why. */
  private readonly priorityNotes = new Map<Instance, { before: number; why: 'tracking' | 'reload' }>();
  private priorityNoteTimer: NodeJS.Timeout | null = null;
  /** When the last reload reached this thread: a tracking change just after it is the reload's (its weights, scripts). */
  private reloadedAt = Number.NEGATIVE_INFINITY;
  private appFault = false;
  /** failover.track.scripts, from the start on (their FAULT and priority penalty join the proxy's tracking). */
  private scripts: TrackScripts | null = null;
  /** What noteNetwork() last told the proxy. */
  private networkOut = false;
  /** The proxy does not serve yet (HeartbeatOptions.held): no instance becomes master. */
  private held: boolean;
  private carrier = true;
  private resignSeq = 0;
  private started = false;
  /** performance.now() when start() completed. */
  private startedAt = 0;
  /** Set once the advert port is ours: from then on the configured VIPs are ours to remove. */
  private ownsVips = false;
  private closing: Promise<void> | null = null;
  private starting: Promise<void> | null = null;
  private releaseSeq = 0;
  private readonly releaseWaiters = new Map<number, (outcome: ReleaseOutcome) => void>();
  readonly dropped: Record<DropReason, number> = { bad_hmac: 0, replay: 0, router_id: 0, malformed: 0 };

  constructor(o: HeartbeatOptions) {
    this.config = o.config;
    this.log = o.log;
    this.emit = o.emit;
    this.held = o.held ?? false;
    this.codec = new AdvertCodec(o.key);
    this.notify = new NotifyRunner(o.config.notify, o.log);
    this.dropLog = new RateLimitedLog(o.log, 10_000, this.now);
    this.setPromoteSecondaries = o.promoteSecondaries ?? ensurePromoteSecondaries;
    this.intervalCs = intervalToCentiseconds(o.config.advertInterval);
    // A peer silent for a Master_Down_Interval (3 intervals plus at most one of skew) is down: forgotten by the
    // replay window, so it may come back with a lower boot epoch (its clock stepped back); replay.ts.
    this.replay = new ReplayGuard(64, Math.max(1000, 4 * o.config.advertInterval), this.now);
    checkInterfaceName(o.config.interface);
    const send = o.sendGarp ?? arpingSender(o.log);
    for (const ic of o.config.instances) {
      if (this.instances.has(ic.routerId)) throw new MqttLbError(ErrorCodes.FAILOVER_START, `failover: router id ${ic.routerId} appears twice`);
      this.instances.set(ic.routerId, {
        cfg: ic,
        vips: ic.vips.map(checkVip),
        sm: null as unknown as FailoverStateMachine, // created in start(), once our address is known
        garp: new GarpAnnouncer({ iface: o.config.interface, count: o.config.garp.count, intervalMs: o.config.garp.interval, repeatAfterMs: o.config.garp.repeatAfter }, send),
        ops: Promise.resolve(),
        wantVips: false,
        installedAt: null,
        peer: null,
        handedOverAt: null,
        otherMasterSince: null,
        peerUnheardSaidAt: null,
        peersHeard: new Map(),
        hookState: null,
        hookMasterDue: false,
        releasing: null,
        opsPending: 0,
        lastOpEndedAt: Number.NEGATIVE_INFINITY,
      });
    }
  }

  /**
   * Checks the interface, binds the advert port (a second instance on this host fails here, before touching
   * anything), removes VIPs left by a crashed run, then starts every instance in BACKUP (or FAULT).
   */
  start(): Promise<void> {
    this.starting ??= this.runStart();
    return this.starting;
  }

  /** A close() meanwhile: stops at the next step, and the close waits for it (doClose) to release what it took. */
  private async runStart(): Promise<void> {
    const iface = this.config.interface;
    const info = await showInterface(iface).catch((err: unknown) => {
      // Absent (a VLAN, bond or bridge made later in the boot) is a state the host may leave: the caller waits for it.
      // `ip` says so; /sys/class/net too, unless it shows another network namespace's (nsenter without a remount).
      const absent = /does not exist/i.test((err as Error).message) || !interfaceExists(iface);
      const code = absent ? ErrorCodes.FAILOVER_INTERFACE : ErrorCodes.FAILOVER_COMMAND;
      throw new MqttLbError(code, `failover.interface ${iface}: ${(err as Error).message}`, { cause: err });
    });
    if (this.closing !== null) return;
    const vipSet = new Set([...this.instances.values()].flatMap((i) => i.vips.map((v) => v.address)));
    const own = info.addresses.find((a) => !vipSet.has(a.address) && !a.secondary) ?? info.addresses.find((a) => !vipSet.has(a.address));
    if (own === undefined) {
      // Only VIPs on the interface: one of them is the host's own address, configured as a VIP by mistake (a VIP
      // a killed run left sits beside the host's address). Removing it, as a stale VIP, took the host off the
      // network (a failover audit). Left alone, and said.
      const present = onlyVipAddresses(info, vipSet).map((a) => `${a.address}/${a.prefix}`);
      if (present.length > 0) {
        throw new MqttLbError(
          ErrorCodes.FAILOVER_START,
          `failover.interface ${iface} has no IPv4 address besides the VIP address (${present.join(', ')} on it): is it this host's own address? A VIP must be an address no host owns (it is removed, as configured and as a /32, whenever this host is not master); left in place`,
        );
      }
      // Not yet (DHCP still asking): the caller waits for it too.
      throw new MqttLbError(ErrorCodes.FAILOVER_INTERFACE, `failover.interface ${iface} has no IPv4 address of its own (adverts need a source address)`);
    }
    this.localAddress = own.address;
    this.interfaceIndex = info.index;
    this.promoteSecondaries();
    this.updateOwnAddresses(info);
    this.carrier = info.carrier;
    const selfAddress = ipv4ToNumber(own.address)!;
    for (const inst of this.instances.values()) {
      inst.sm = new FailoverStateMachine(
        {
          routerId: inst.cfg.routerId,
          priority: inst.cfg.priority,
          advertInterval: this.config.advertInterval,
          preempt: this.config.preempt,
          preemptDelay: this.config.preemptDelay,
          selfAddress,
        },
        this.now,
      );
    }
    this.epoch = BigInt(Date.now());
    this.replay.setOwnEpoch(this.epoch);
    const peers = this.config.peers.filter(isIpv4);
    const receiver = new AdvertReceiver({
      codec: this.codec,
      routerIds: new Set(this.instances.keys()),
      allowedSources: peers.length > 0 ? new Set(peers) : null,
      replay: this.replay,
      isOwnAddress: (a) => this.ownAddresses.has(a),
    });
    this.transport = new AdvertTransport(
      { mode: this.config.transport, peers: this.config.peers, group: this.config.group, port: this.config.port, localAddress: this.localAddress },
      (buf, address) => this.onDatagram(receiver, buf, address),
      this.log,
    );
    await this.transport.open();
    this.ownsVips = true;
    if (this.closing !== null) return; // doClose removes the VIPs and closes the transport
    // keepalived/ucarp: at start-up, force-remove our VIPs (a SIGKILLed run may have left them: duplicate VIPs).
    for (const inst of this.instances.values()) {
      for (const v of inst.vips) {
        for (const entry of vipEntries(info, v)) {
          const vip = formatCidr(entry);
          await removeVip(iface, vip);
          this.log.warn({ routerId: inst.cfg.routerId, vip, iface }, 'removed a VIP left by an earlier run');
        }
      }
    }
    if (this.closing !== null) return;
    // Their first runs start now; while a script has no result, no instance becomes master (mastersHeld).
    this.scripts = new TrackScripts(this.config.track.scripts, this.log, () => this.trackingChanged());
    this.started = true;
    this.startedAt = this.now();
    this.noteNetwork();
    const fault = this.fault();
    for (const inst of this.instances.values()) {
      inst.sm.setFault(fault);
      inst.sm.setPriorityPenalty(this.priorityPenalty());
      inst.sm.setHeld(this.mastersHeld());
      this.exec(inst, inst.sm.start());
    }
    this.log.info(
      { iface, localAddress: this.localAddress, transport: this.config.transport, port: this.config.port, routerIds: [...this.instances.keys()], carrier: this.carrier, held: this.mastersHeld() },
      'failover heartbeat started',
    );
    this.schedule();
    this.watchTimer = setTimeout(() => void this.watch(), WATCH_INTERVAL_MS);
    this.linkMonitor = new LinkMonitor(iface, () => this.watchSoon(), this.log);
    this.linkMonitor.start();
    this.statusTimer = setInterval(() => this.emitStatus(), STATUS_INTERVAL_MS);
    this.emitStatus();
  }

  setTracking(fault: boolean, priorityPenalty: number): void {
    this.appFault = fault;
    this.penalty = priorityPenalty;
    this.trackingChanged();
  }

  /** The proxy's tracking or a track script changed: the priority and FAULT follow. */
  private trackingChanged(): void {
    if (!this.started || this.closing !== null) return;
    const penalty = this.priorityPenalty();
    for (const inst of this.instances.values()) {
      const before = inst.sm.effectivePriority;
      this.exec(inst, inst.sm.setPriorityPenalty(penalty));
      this.notePriority(inst, before, 'tracking');
    }
    this.applyFault();
    // After the fault: a first result that fails must not let an instance become master before it is in FAULT.
    const held = this.mastersHeld();
    for (const inst of this.instances.values()) this.exec(inst, inst.sm.setHeld(held));
    this.schedule();
  }

  /** No instance may become master: the proxy does not serve yet, or a track script has no first result. */
  private mastersHeld(): boolean {
    return this.held || !(this.scripts?.settled ?? true);
  }

  /** The proxy's penalty (pools without a server up) and the failing track scripts' weights. */
  private priorityPenalty(): number {
    return this.penalty + (this.scripts?.priorityPenalty ?? 0);
  }

  /**
   * A reload (reload.ts): the priorities, preempt, preemptDelay, garp and notify of `config` are applied; the keys
   * that need a restart are the running ones already (planFailoverReload), and the instances are matched by router id.
   */
  reconfigure(config: FailoverConfig): void {
    this.config = config;
    this.reloadedAt = this.now();
    this.notify.setFile(config.notify);
    this.scripts?.reconfigure(config.track.scripts);
    for (const ic of config.instances) {
      const inst = this.instances.get(ic.routerId);
      if (inst === undefined) continue;
      inst.cfg = ic;
      inst.garp.configure({ count: config.garp.count, intervalMs: config.garp.interval, repeatAfterMs: config.garp.repeatAfter });
      // Not started yet: start() makes the state machines from these settings.
      if (this.started && this.closing === null) {
        const before = inst.sm.effectivePriority;
        this.exec(inst, inst.sm.reconfigure({ priority: ic.priority, preempt: config.preempt, preemptDelay: config.preemptDelay }));
        this.notePriority(inst, before, 'reload');
      }
    }
    if (this.started && this.closing === null) {
      this.schedule();
      this.emitStatus();
    }
  }

  /**
   * keepalived's "Changing effective priority from X to Y": a change that moves no VIP is otherwise seen only in
   * /metrics (an audit: a pool without a server up took 50 off the master's priority, and no line said so).
   */
  private notePriority(inst: Instance, before: number, cause: 'tracking' | 'reload'): void {
    // The tracking a reload gives (a weight, a script added or removed) comes as its own message, just after it.
    const why = this.now() - this.reloadedAt <= PRIORITY_NOTE_MS ? 'reload' : cause;
    const pending = this.priorityNotes.get(inst);
    if (pending === undefined) {
      if (inst.sm.effectivePriority === before) return;
      this.priorityNotes.set(inst, { before, why });
    } else if (why === 'reload') {
      pending.why = 'reload';
    }
    this.priorityNoteTimer ??= setTimeout(() => this.sayPriorities(), PRIORITY_NOTE_MS);
  }

  /** The priority changes of the last PRIORITY_NOTE_MS, one line each, from before the first to now (none when back). */
  private sayPriorities(): void {
    this.priorityNoteTimer = null;
    const pools = this.penalty;
    const scripts = this.scripts?.priorityPenalty ?? 0;
    for (const [inst, { before, why }] of this.priorityNotes) {
      const now = inst.sm.effectivePriority;
      if (now !== before) this.log.info({ routerId: inst.cfg.routerId, from: before, to: now, configured: inst.cfg.priority, why, penalty: { pools, scripts } }, 'failover priority changed');
    }
    this.priorityNotes.clear();
  }

  /** The proxy's listeners are bound: the hold ends, and an instance whose Master_Down_Timer fired meanwhile is master now. */
  serving(): void {
    if (!this.held) return;
    this.held = false;
    if (!this.started || this.closing !== null) return;
    const held = this.mastersHeld();
    for (const inst of this.instances.values()) this.exec(inst, inst.sm.setHeld(held));
    this.schedule();
  }

  resign(seq: number): void {
    this.resignSeq = Math.max(this.resignSeq, seq);
    if (this.started && this.closing === null) {
      for (const inst of this.instances.values()) this.exec(inst, inst.sm.resign());
      this.schedule();
    }
    this.emitStatus();
  }

  /** The proxy has closed the VIP sessions of release `seq`: the VIPs may go. */
  released(seq: number): void {
    this.releaseWaiters.get(seq)?.('released');
  }

  /** Priority 0 if still master (fast takeover by the peer), then remove every VIP and close. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  status(): WorkerStatus {
    const instances: WorkerInstanceStatus[] = [];
    for (const inst of this.instances.values()) {
      instances.push({
        routerId: inst.cfg.routerId,
        state: this.started ? inst.sm.state : 'init',
        priority: this.started ? inst.sm.advertisedPriority : inst.cfg.priority,
        vips: [...inst.cfg.vips],
        resigned: this.started && inst.sm.isResigned,
        peers: [...inst.peersHeard.values()].map((h) => ({ ...h.status })).sort((x, y) => (ipv4ToNumber(x.address) ?? 0) - (ipv4ToNumber(y.address) ?? 0)),
      });
    }
    return {
      type: 'status',
      instances,
      dropped: { ...this.dropped },
      resignSeq: this.resignSeq,
      localAddress: this.localAddress,
      failingScripts: this.scripts?.failing() ?? [],
    };
  }

  // ---- internals -------------------------------------------------------------------------------------------

  private async doClose(): Promise<void> {
    // A start still running would bind the advert port after this close: let it stop first (runStart).
    await this.starting?.catch(() => undefined);
    this.clearTimers();
    this.scripts?.close();
    this.linkMonitor?.close();
    // The stop closes the sessions itself (App.stop): a release still waiting holds nothing up.
    for (const done of [...this.releaseWaiters.values()]) done('stop');
    for (const inst of this.instances.values()) {
      inst.garp.cancel();
      if (this.started && inst.sm.state === 'master' && !inst.sm.isResigned) this.sendAdvert(inst, 0, FLAG_MASTER);
      inst.wantVips = false;
      inst.installedAt = null;
    }
    await Promise.all([...this.instances.values()].map((i) => i.ops));
    let graceUntil = 0;
    for (const inst of this.instances.values()) if (inst.handedOverAt !== null) graceUntil = Math.max(graceUntil, inst.handedOverAt + HANDOVER_GRACE_MS);
    const grace = graceUntil - this.now();
    if (this.ownsVips && grace > 0) await new Promise((r) => setTimeout(r, grace));
    for (const inst of this.ownsVips ? this.instances.values() : []) {
      for (const { iface, vip } of await this.heldVips(inst.vips)) {
        await removeVip(iface, vip).catch((err: unknown) => this.log.error({ err, vip, iface }, 'failover: cannot remove VIP at stop'));
      }
    }
    await this.transport?.close();
    await Promise.all([...this.instances.values()].map((i) => i.garp.idle()));
    // The hook hears of the stop too: a master that stops with no peer alive gives the VIP up without a transition.
    if (this.started) {
      for (const inst of this.instances.values()) this.notify.run('stop', inst.cfg.routerId);
      // A hook still running after the bound (hung) is killed, so that it does not outlive us and the `stop` calls
      // behind it run; after theirs, the runner is closed: what still runs is killed, nothing more starts.
      if (!(await this.notifyIdleWithin(NOTIFY_AT_STOP_MS))) {
        this.notify.cutRunning();
        if (!(await this.notifyIdleWithin(NOTIFY_STOP_CALLS_MS))) await this.notify.close();
      }
    }
    this.log.info({}, 'failover heartbeat stopped');
  }

  /** True when the notify hooks are done within `ms`. */
  private async notifyIdleWithin(ms: number): Promise<boolean> {
    let bound: NodeJS.Timeout | undefined;
    const done = await Promise.race([this.notify.idle().then(() => true), new Promise<boolean>((r) => (bound = setTimeout(() => r(false), ms)))]);
    clearTimeout(bound);
    return done;
  }

  private clearTimers(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.immediate !== null) clearImmediate(this.immediate);
    this.immediate = null;
    if (this.watchTimer !== null) clearTimeout(this.watchTimer);
    if (this.statusTimer !== null) clearInterval(this.statusTimer);
    if (this.priorityNoteTimer !== null) clearTimeout(this.priorityNoteTimer);
    this.timer = this.watchTimer = this.statusTimer = this.priorityNoteTimer = null;
  }

  private fault(): boolean {
    return this.appFault || this.networkFault() || (this.scripts?.fault ?? false);
  }

  /** This host's own network is out: the interface without carrier (when tracked), or its own address gone. */
  private networkFault(): boolean {
    return this.ownAddressGone || (this.config.track.interface && !this.carrier);
  }

  /**
   * Tells the proxy when this host's network goes out or comes back, whatever the state: its health probes fail for
   * it meanwhile, not for the servers (App.onFailoverNetwork). Not a state change: the host may be in FAULT already
   * (a track script), or stay in it when the network is back. The carrier counts whether or not it is tracked: with
   * `track.interface: false` a master whose link is cut stays master, and its probes fail all the same (an audit saw
   * them mark its brokers down, the pool penalty lower it, and a second failover follow the link's return).
   */
  private noteNetwork(): void {
    const out = this.ownAddressGone || !this.carrier;
    if (out === this.networkOut) return;
    this.networkOut = out;
    this.emit({ type: 'network', out });
  }

  private applyFault(): void {
    this.noteNetwork();
    const f = this.fault();
    for (const inst of this.instances.values()) this.exec(inst, inst.sm.setFault(f));
  }

  /** One timer for all instances: the earliest deadline. */
  private schedule(): void {
    // After a stall, the adverts waiting in our socket and the proxy's tracking updates run before the deferred
    // onTimer() and re-arm the timer: keep how late the timer already was, or the stall would go unseen.
    if (this.timer !== null || this.immediate !== null) this.lateWhenRearmed = Math.max(this.lateWhenRearmed, this.now() - this.timerDue);
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.immediate !== null) clearImmediate(this.immediate);
    this.timer = null;
    this.immediate = null;
    if (this.closing !== null) return;
    let next = Number.POSITIVE_INFINITY;
    for (const inst of this.instances.values()) next = Math.min(next, inst.sm.nextDeadline());
    if (next === Number.POSITIVE_INFINITY) return;
    const delay = Math.max(0, Math.ceil(next - this.now()));
    this.timerDue = this.now() + delay;
    // setImmediate: run after this loop turn's I/O phase. After a stall, libuv runs expired timers BEFORE
    // polling sockets; adverts already waiting in our socket buffer must reset the down timer first,
    // or a starved backup would take over from a master whose adverts did arrive.
    this.timer = setTimeout(() => {
      this.timer = null;
      this.immediate = setImmediate(() => {
        this.immediate = null;
        this.onTimer();
      });
    }, delay);
  }

  private onTimer(): void {
    if (this.closing !== null) return;
    // keepalived's "thread timer expired": a heartbeat that runs late risks a needless takeover by the peer.
    const late = Math.max(this.now() - this.timerDue, this.lateWhenRearmed);
    this.lateWhenRearmed = 0;
    if (late > this.config.advertInterval) this.dropLog.warn('late', { lateMs: Math.round(late) }, 'failover heartbeat timer ran late (CPU starvation?)');
    for (const inst of this.instances.values()) this.exec(inst, inst.sm.onTimer());
    this.schedule();
  }

  private onDatagram(receiver: AdvertReceiver, buf: Buffer, address: string): void {
    if (this.closing !== null) return;
    const r = receiver.receive(buf, address);
    if (r.kind === 'own') return;
    if (r.kind === 'drop') {
      this.dropped[r.reason]++;
      if (r.notPeer === true) this.dropLog.warn('drop:not_peer', { reason: r.reason, from: address, detail: 'authentic advert from an address not in failover.peers' }, 'failover advert dropped');
      else this.dropLog.warn(`drop:${r.reason}`, { reason: r.reason, from: address, ...(r.routerId !== undefined ? { routerId: r.routerId } : {}) }, 'failover advert dropped');
      if (r.ownEpoch === true) this.bumpEpoch();
      return;
    }
    const a = r.advert;
    const inst = this.instances.get(a.routerId)!;
    const peerState: PeerState = (a.flags & FLAG_FAULT) !== 0 ? 'fault' : (a.flags & FLAG_MASTER) !== 0 ? 'master' : 'backup';
    const prev = inst.peer;
    const status: WorkerPeerStatus = { address, state: peerState, priority: a.priority, lastAdvertAt: threadSharedNow(), intervalMs: a.intervalCs * 10 };
    inst.peer = status;
    if (a.intervalCs !== this.intervalCs) this.noteIntervalMismatch(inst, address, a.intervalCs);
    const heard = inst.peersHeard.get(address);
    if (heard === undefined || heard.status.state !== peerState || heard.silentSaid) {
      this.log.info({ routerId: a.routerId, peer: address, state: peerState, priority: a.priority, at: Date.now() }, 'failover peer state');
    }
    inst.peersHeard.set(address, { status, lastAdvertAt: this.now(), silentSaid: false });
    // How long the peer has run: its counter grows by one per advert of each of its instances (as many as ours, as a
    // rule), one per interval each and a few more at transitions, so this is no less.
    const peerUpMs = (Number(a.counter) * a.intervalCs * 10) / this.instances.size;
    const startedWithUs = peerUpMs <= this.now() - this.startedAt + COLD_START_SLACK_MS;
    const actions = inst.sm.onAdvert({ priority: a.priority, flags: a.flags, intervalCs: a.intervalCs, sender: r.sender, startedWithUs });
    this.exec(inst, actions);
    this.watchSplitBrain(inst, peerState, address, a.priority);
    this.schedule();
    if (prev === null || prev.state !== peerState) this.emitStatus();
  }

  /**
   * The peer advertises at another interval than ours. It works (a backup follows the master's interval, RFC 5798
   * §6.4.2), but it is most often a config edited on one host only, and the takeover time then depends on which
   * host is master; keepalived logs it too. Once per peer and interval.
   */
  private noteIntervalMismatch(inst: Instance, peer: string, intervalCs: number): void {
    const key = `${inst.cfg.routerId}|${peer}|${intervalCs}`;
    if (this.intervalMismatches.has(key)) return;
    this.intervalMismatches.add(key);
    this.log.warn({ routerId: inst.cfg.routerId, peer, peerIntervalMs: intervalCs * 10, intervalMs: this.intervalCs * 10 }, 'failover: the peer advertises at another interval');
  }

  /**
   * Both hosts master for longer than a preemption or a heal takes: the peer keeps advertising as master although
   * it hears us, or does not hear us at all (its transport, `peers` or key differ from ours: an audit ran one host on
   * multicast and the other on unicast, each master, and neither said so). keepalived logs such adverts too. The
   * warning is rate limited (10 s); each advert is still answered as the state machine says.
   */
  private watchSplitBrain(inst: Instance, peerState: PeerState, peer: string, peerPriority: number): void {
    if (inst.sm.state !== 'master' || peerState !== 'master' || peerPriority === 0) {
      inst.otherMasterSince = null;
      return;
    }
    const now = this.now();
    inst.otherMasterSince ??= now;
    const ms = now - inst.otherMasterSince;
    if (ms > Math.max(SPLIT_BRAIN_ADVERTS * this.config.advertInterval, SPLIT_BRAIN_MIN_MS)) {
      this.dropLog.warn(`split:${inst.cfg.routerId}`, { routerId: inst.cfg.routerId, peer, peerPriority, ms: Math.ceil(ms) }, 'failover: split brain: the peer keeps advertising as master');
    }
  }

  /** Master, and not one authentic advert from a peer since the start (PEER_UNHEARD_MS): said, with what to check. */
  private notePeerUnheard(): void {
    const now = this.now();
    for (const inst of this.instances.values()) for (const [address, heard] of inst.peersHeard) this.notePeerSilent(inst, address, heard);
    if (now - this.startedAt < PEER_UNHEARD_MS) return;
    for (const inst of this.instances.values()) {
      if (inst.peer !== null || inst.sm.state !== 'master') continue;
      if (inst.peerUnheardSaidAt !== null && now - inst.peerUnheardSaidAt < PEER_UNHEARD_REPEAT_MS) continue;
      inst.peerUnheardSaidAt = now;
      const { transport, port, peers } = this.config;
      // Adverts that came and were dropped: they do arrive (an audit: another key or routerId got the line below).
      const dropped = Object.fromEntries(Object.entries(this.dropped).filter(([, n]) => n > 0));
      if (Object.keys(dropped).length > 0) {
        this.log.warn({ routerId: inst.cfg.routerId, dropped, sinceStartMs: Math.round(now - this.startedAt) }, 'failover: master without one accepted advert from a peer since the start: adverts arrive and are dropped');
        continue;
      }
      this.log.warn(
        { routerId: inst.cfg.routerId, transport, port, peers: transport === 'unicast' ? peers : undefined, group: transport === 'multicast' ? this.config.group : undefined, sinceStartMs: Math.round(now - this.startedAt) },
        'failover: master without one advert from a peer since the start: if the peer runs, its adverts do not arrive here',
      );
    }
  }

  /**
   * A peer heard before and silent since (stopped, crashed, cut off): this host has no standby, or, a backup, is
   * about to take over. Said once per silence, at warn (a failover audit: `/api/status` showed the peer `unknown`,
   * and no line said it had gone); its next advert is a `failover peer state` line.
   */
  private notePeerSilent(inst: Instance, address: string, heard: HeardPeer): void {
    const silentMs = this.now() - heard.lastAdvertAt;
    // Four of its intervals: past its Master_Down_Interval (3 intervals and a skew under one).
    if (heard.silentSaid || silentMs <= 4 * heard.status.intervalMs) return;
    heard.silentSaid = true;
    this.log.warn(
      { routerId: inst.cfg.routerId, peer: address, lastState: heard.status.state, silentMs: Math.round(silentMs), state: inst.sm.state },
      'failover peer silent: no advert from it for longer than a Master_Down_Interval',
    );
  }

  /**
   * An authentic advert carried our own boot epoch: a reflection of ours, or a peer that started in the same
   * millisecond. Move to a newer epoch (peers accept a newer epoch at once), never beyond the wall clock (so
   * a flood of reflections cannot push it into the future) and at most once a second.
   */
  private bumpEpoch(): void {
    const t = this.now();
    if (t - this.lastEpochBumpAt < 1000) return;
    const wall = BigInt(Date.now());
    if (wall <= this.epoch) return;
    this.lastEpochBumpAt = t;
    const span = Number(wall - this.epoch); // ≥ 1
    this.epoch += BigInt(randomInt(1, Math.min(span, 1_000_000) + 1));
    this.counter = 0n;
    this.replay.setOwnEpoch(this.epoch);
    this.log.warn({ epoch: this.epoch.toString() }, 'failover advert with our own boot epoch received: new epoch');
  }

  private sendAdvert(inst: Instance, priority: number, flags: number): void {
    this.counter += 1n;
    const buf = this.codec.encode({ routerId: inst.cfg.routerId, priority, flags, intervalCs: this.intervalCs, bootEpoch: this.epoch, counter: this.counter });
    this.transport?.send(buf);
  }

  private exec(inst: Instance, actions: readonly FailoverAction[]): void {
    if (actions.length === 0) return;
    // Stamped before any action runs: a transition's time precedes the advert it sends (causal order
    // between two hosts' logs and events).
    const at = Date.now();
    for (const a of actions) {
      switch (a.type) {
        case 'sendAdvert':
          this.sendAdvert(inst, a.priority, a.flags);
          break;
        case 'addVips':
        case 'addVipsThenAnnounce': {
          inst.wantVips = true;
          // Master again while its sessions were being released: the address stays; the chain moves on.
          inst.releasing?.('master');
          const announce = a.type === 'addVipsThenAnnounce';
          const stillMaster = () => this.closing === null && inst.sm.state === 'master' && inst.wantVips && inst.installedAt !== null;
          this.enqueue(inst, async () => {
            await this.addVips(inst, !announce);
            // Only with the VIPs here: a failed add resigned already (addVips), and the live master never heard us.
            if (!announce || !stillMaster()) return;
            // Neighbours first: clients send to us before the live master drops the VIP on our advert (becomeMaster).
            this.announceVips(inst);
            await new Promise((resolve) => setTimeout(resolve, GARP_LEAD_MS));
            if (!stillMaster()) return;
            // The state machine's adverts carry the MASTER flag from now on too.
            inst.sm.vipsHeld();
            this.sendAdvert(inst, inst.sm.advertisedPriority, FLAG_MASTER);
          });
          break;
        }
        case 'removeVips': {
          const held = inst.wantVips;
          inst.installedAt = null;
          inst.garp.cancel();
          if (inst.sm.isResigned && inst.sm.state === 'backup') {
            // Graceful stop, handed over: the peer is master. Keep the address until close() (design.md §3:
            // sessions are evicted, THEN the VIP is removed): the kernel drops output from an address that is
            // no longer local, so the FINs of the sessions evicted next would never reach their clients (they
            // would hang until their keepalive). It also leaves no gap before the peer's own `ip addr add`.
            // We no longer announce it (GARP cancelled): neighbours follow the peer's announcements.
            inst.handedOverAt = this.now();
            this.log.info({ routerId: inst.cfg.routerId }, 'failover: handed over; keeping the VIP until stop so evicted sessions can be closed');
            break;
          }
          inst.wantVips = false;
          // Demoted (preempted, a split brain lost, FAULT): the sessions that came in on the VIPs are closed
          // first, while the address is here for their FINs (design.md §3: evict, then remove the VIP); without
          // it, a quiet client would sit on a dead connection until its keepalive, and lose what was sent to it.
          if (held && this.closing === null) this.enqueue(inst, () => this.release(inst));
          this.enqueue(inst, () => this.removeVips(inst));
          break;
        }
        case 'garp':
          // After the queued add, so arping announces an address that is really there.
          this.enqueue(inst, async () => this.announceVips(inst));
          break;
        case 'reannounce':
          this.enqueue(inst, async () => this.announceVips(inst, true));
          break;
        case 'preemptPending':
          this.log.info(
            { routerId: inst.cfg.routerId, peer: inst.peer?.address ?? null, peerPriority: a.masterPriority, priority: inst.sm.effectivePriority, preemptDelayMs: a.delayMs },
            'failover: a lower-priority master is live; it is preempted once heard for preemptDelay without interruption',
          );
          break;
        case 'notify':
          this.log.info({ routerId: inst.cfg.routerId, from: a.from, to: a.to, cause: a.cause, priority: inst.sm.advertisedPriority, at }, 'failover state changed');
          this.emit({ type: 'state', routerId: inst.cfg.routerId, from: a.from, to: a.to, at });
          // `master` once the VIPs are added (addVips): a hook written for keepalived's notify_master must not run on a
          // host whose add failed and which resigned at once (a failover audit, without CAP_NET_ADMIN: `master`, then
          // `backup` 9 ms later, at every retry). Then the state it was last told is not said again.
          inst.hookMasterDue = a.to === 'master';
          if (a.to !== 'master') this.tellHook(inst, a.to);
          this.emitStatus();
          break;
      }
    }
  }

  /** Gratuitous ARP for `inst`'s VIPs, while it is master and wants them: the burst, or `once` (a heal). */
  private announceVips(inst: Instance, once = false): void {
    if (!inst.wantVips || inst.sm.state !== 'master') return;
    const addresses = inst.vips.map((v) => v.address);
    if (once) inst.garp.announceOnce(addresses);
    else inst.garp.announce(addresses);
  }

  private enqueue(inst: Instance, op: () => Promise<void>): void {
    inst.opsPending++;
    inst.ops = inst.ops
      .then(op)
      .catch((err: unknown) => this.log.error({ err, routerId: inst.cfg.routerId }, 'failover VIP operation failed'))
      .finally(() => {
        inst.opsPending--;
        inst.lastOpEndedAt = this.now();
      });
  }

  /**
   * True when `inst` must hold none of its VIPs: not master nor about to be, not closing the sessions on them
   * (release: kept on purpose for their FINs), not handed over at a stop (kept until close(), which removes them).
   */
  private mustHoldNoVip(inst: Instance): boolean {
    return this.closing === null && inst.sm.state !== 'master' && !inst.wantVips && !inst.sm.isResigned && inst.releasing === null;
  }

  /**
   * A VIP still here while not master (a failed `ip addr del`, fd exhaustion, an address added by hand): both hosts
   * answer ARP for it. Removed again at every watch poll (500 ms) until it is gone; logged at most once per 10 s.
   */
  private reconcileVips(inst: Instance, info: InterfaceInfo, pollStartedAt: number): void {
    if (!this.mustHoldNoVip(inst)) return;
    // Only a poll that started after our last VIP command ended (an earlier one may predate a removal).
    if (inst.opsPending > 0 || inst.lastOpEndedAt > pollStartedAt) return;
    const vips = inst.vips.flatMap((v) => vipEntries(info, v)).map(formatCidr);
    if (vips.length === 0) return;
    const routerId = inst.cfg.routerId;
    const iface = info.name; // the configured name, or the one it was renamed to (heartbeat poll)
    this.dropLog.warn(`stray:${routerId}`, { routerId, state: inst.sm.state, vips, iface }, 'failover VIP held while not master: removing it');
    this.enqueue(inst, async () => {
      for (const vip of vips) {
        if (!this.mustHoldNoVip(inst)) return; // master again meanwhile: the address stays
        await removeVip(iface, vip).catch((err: unknown) =>
          this.dropLog.warn(`stray-failed:${routerId}`, { routerId, vip, err }, 'failover: cannot remove a VIP held while not master: retrying'),
        );
      }
    });
  }

  /** Asks the proxy to close the sessions on `inst`'s VIPs; resolves on its answer, or after RELEASE_BOUND_MS. */
  private release(inst: Instance): Promise<void> {
    if (inst.wantVips || this.closing !== null) return Promise.resolve(); // master again, or stopping meanwhile
    const seq = ++this.releaseSeq;
    const began = this.now();
    return new Promise<void>((resolve) => {
      const done = (outcome: ReleaseOutcome): void => {
        clearTimeout(bound);
        this.releaseWaiters.delete(seq);
        if (inst.releasing === done) inst.releasing = null;
        const fields = { routerId: inst.cfg.routerId, ms: Math.round(this.now() - began) };
        if (outcome === 'released') this.log.info(fields, 'failover: VIP sessions closed: removing the VIP');
        else if (outcome === 'bound') this.log.warn({ ...fields, boundMs: RELEASE_BOUND_MS }, 'failover: VIP sessions not closed in time: removing the VIP all the same');
        else if (outcome === 'master') this.log.info(fields, 'failover: master again while closing the VIP sessions: the VIP stays');
        resolve();
      };
      const bound = setTimeout(() => done('bound'), RELEASE_BOUND_MS);
      this.releaseWaiters.set(seq, done);
      inst.releasing = done;
      this.log.info({ routerId: inst.cfg.routerId }, 'failover: no longer master: closing the sessions on the VIP before removing it');
      this.emit({ type: 'release', routerId: inst.cfg.routerId, vips: inst.vips.map((v) => v.address), seq });
    });
  }

  /** `held`: tell the state machine once they are here (a preemption does, after its GARP lead: exec). */
  private async addVips(inst: Instance, held = true): Promise<void> {
    if (!inst.wantVips) return; // a removal was asked for in the meantime
    try {
      for (const v of inst.vips) await addVip(this.config.interface, `${v.address}/${v.prefix}`);
    } catch (err) {
      // A master without its VIP is useless: resign so that the peer takes over. The hold-down keeps us from taking
      // the VIP back from it at once (we retry after a Master_Down_Interval only if no one is master).
      const actions = this.closing === null ? inst.sm.vipLost() : [];
      const holdDownMs = actions.length > 0 ? inst.sm.holdDownMs : undefined;
      // Rate-limited: alone, a host that cannot add its VIP takes over again every Master_Down_Interval (33 lines in
      // 12 s at 100 ms adverts); `suppressed` counts the repeats.
      this.dropLog.error(`add:${inst.cfg.routerId}`, { err, routerId: inst.cfg.routerId, holdDownMs }, 'failover: cannot add VIP, resigning');
      this.exec(inst, actions);
      this.schedule();
      return;
    }
    if (inst.wantVips) {
      inst.installedAt = this.now();
      if (held) inst.sm.vipsHeld();
      if (inst.hookMasterDue && inst.sm.state === 'master') this.tellHook(inst, 'master');
    }
  }

  /** The notify hook, with `state` (not again when it was the last one told: a master whose add failed never was). */
  private tellHook(inst: Instance, state: FailoverState): void {
    inst.hookMasterDue = false;
    if (inst.hookState === state) return;
    inst.hookState = state;
    this.notify.run(state, inst.cfg.routerId);
  }

  private async removeVips(inst: Instance): Promise<void> {
    if (inst.wantVips) return; // asked to add again in the meantime
    for (const { iface, vip } of await this.heldVips(inst.vips)) await removeVip(iface, vip);
  }

  /**
   * Of `vips`, the entries on the interface now (as configured and as a /32: vipEntries), with the name of the interface
   * holding them (renamed: interfaceNow); all of them, as configured, when it cannot be read (removing one that is
   * not there is harmless). A host whose add failed (no CAP_NET_ADMIN) logged an error for removing a VIP it never
   * held, at every retry and at its stop (a re-audit).
   */
  private async heldVips(vips: readonly Cidr[]): Promise<Array<{ iface: string; vip: string }>> {
    const info = await this.interfaceNow();
    if (info === null) return vips.map((v) => ({ iface: this.config.interface, vip: formatCidr(v) }));
    return vips.flatMap((v) => vipEntries(info, v).map((entry) => ({ iface: info.name, vip: formatCidr(entry) })));
  }

  /** The failover interface by its name, else by the index it had (renamed: showInterfaceByIndex), else null. */
  private async interfaceNow(): Promise<InterfaceInfo | null> {
    try {
      return await showInterface(this.config.interface);
    } catch {
      return this.renamedInterface();
    }
  }

  /** The interface that had the failover interface's index, now under another name; null if none (or unreadable). */
  private async renamedInterface(): Promise<InterfaceInfo | null> {
    if (this.interfaceIndex === null) return null;
    const info = await showInterfaceByIndex(this.interfaceIndex).catch(() => null);
    return info !== null && info.name !== this.config.interface ? info : null;
  }

  /** An interface event (LinkMonitor): poll now, not at the next tick. One poll at a time, and one more after it. */
  private watchSoon(): void {
    if (this.closing !== null) return;
    if (this.watching) {
      this.watchAgain = true;
      return;
    }
    if (this.watchTimer !== null) clearTimeout(this.watchTimer);
    void this.watch();
  }

  private async watch(): Promise<void> {
    this.watchTimer = null;
    if (this.closing !== null) return;
    this.watching = true;
    try {
      await this.poll();
    } finally {
      this.watching = false;
    }
    if (this.closing !== null) return;
    this.notePeerUnheard();
    if (this.watchAgain) {
      this.watchAgain = false;
      this.watchTimer = setTimeout(() => void this.watch(), 0);
    } else {
      this.watchTimer = setTimeout(() => void this.watch(), WATCH_INTERVAL_MS);
    }
  }

  /** Reads the interface once: carrier (tracking), VIPs gone behind our back while master, VIPs left while not. */
  private async poll(): Promise<void> {
    const startedAt = this.now();
    let info: InterfaceInfo | null = null;
    try {
      info = await showInterface(this.config.interface);
    } catch {
      // One failed read is no carrier loss: `ip` itself may have failed (killed, out of memory; a SIGHUP sent to
      // mqtt-lb's process group did so, and the host went to FAULT and handed the VIP over for it, until each command
      // had a group of its own). Read once more; a device really gone fails again.
      try {
        info = await showInterface(this.config.interface);
      } catch (err) {
        this.dropLog.warn('watch', { err }, 'failover: cannot read the interface');
      }
    }
    if (this.closing !== null) return;
    const carrier = info !== null && info.carrier;
    if (carrier !== this.carrier) {
      this.carrier = carrier;
      this.log.warn({ iface: this.config.interface, carrier }, 'failover interface carrier changed');
      // The unresolved neighbour entries go, with the packets queued on them (neighbours.ts). At the loss: a MASTER
      // advert sent between the loss and this poll would otherwise wait in the kernel's queue for the link to come
      // back, and reach the peer, master by then, as news of a higher-priority master (a test saw the peer step
      // down for 64 ms and close its VIP sessions). At the return, before leaving FAULT (whose state change has the
      // proxy probe its servers afresh, App.onFailoverState): the first packets must not wait for the ARP retry.
      await this.flushNeighbours();
      if (this.closing !== null) return;
      if (this.config.track.interface) this.applyFault();
    }
    // Gone for a poll (deleted, or moved to another network namespace and back, which keeps its index).
    if (info === null && !interfaceExists(this.config.interface)) this.interfaceWasGone = true;
    if (info !== null && ((info.index !== null && this.interfaceIndex !== null && info.index !== this.interfaceIndex) || this.interfaceWasGone)) {
      // Deleted and made again (a VLAN, bond or veth re-created): what was set on the old one is gone.
      this.interfaceIndex = info.index;
      this.interfaceWasGone = false;
      this.log.warn({ iface: this.config.interface, index: info.index }, 'failover interface re-created: multicast membership and promote_secondaries set again');
      this.promoteSecondaries();
      this.rejoinPending = true;
    }
    // An interface that is not there has not our address either (with track.interface off, nothing else says FAULT).
    const ownAddressGone = info !== null ? !info.addresses.some((a) => a.address === this.localAddress) : this.interfaceWasGone || this.ownAddressGone;
    if (ownAddressGone !== this.ownAddressGone) {
      this.ownAddressGone = ownAddressGone;
      if (ownAddressGone) this.log.warn({ iface: this.config.interface, localAddress: this.localAddress }, "failover: this host's address left the interface: FAULT until it is back");
      else this.log.info({ iface: this.config.interface, localAddress: this.localAddress }, "failover: this host's address is back on the interface");
      this.applyFault();
    }
    // Once our address is back on it (the kernel finds the interface by that address); until then, at each poll.
    if (this.rejoinPending && !ownAddressGone && info !== null) this.rejoinPending = this.transport?.rejoin() === false;
    if (info !== null) {
      this.updateOwnAddresses(info);
      for (const inst of this.instances.values()) {
        // Only trust a poll that started after our add completed (otherwise it may predate the add).
        if (inst.sm.state !== 'master' || !inst.wantVips || inst.installedAt === null || inst.installedAt > startedAt) continue;
        const missing = inst.vips.filter((v) => !hasAddress(info, v)).map((v) => `${v.address}/${v.prefix}`);
        if (missing.length === 0) continue;
        if (inst.sm.restoreVipInPlace()) {
          // Added back here rather than resigning: a resign is two failovers (the peer takes over, then we preempt
          // back), each closing the sessions on the VIP. A failed add resigns with the hold-down (addVips).
          this.log.warn({ routerId: inst.cfg.routerId, missing }, 'failover VIP disappeared while master: adding it back');
          inst.installedAt = null; // not watched again until the add completed
          this.enqueue(inst, () => this.addVips(inst));
          this.exec(inst, [{ type: 'garp' }]);
          continue;
        }
        // Gone again soon after being added back: something keeps removing it; resign, as keepalived does.
        const actions = inst.sm.vipLost();
        this.log.warn({ routerId: inst.cfg.routerId, missing, holdDownMs: inst.sm.holdDownMs }, 'failover VIP disappeared while master: resigning');
        this.exec(inst, actions);
      }
      for (const inst of this.instances.values()) this.reconcileVips(inst, info, startedAt);
    } else {
      // Renamed: the name is gone (FAULT, with track.interface), and the VIPs on the interface under its new name
      // still answer ARP. A removal that ran meanwhile (FAULT's) found them by the index too; this is the watch.
      const renamed = await this.renamedInterface();
      if (renamed !== null && this.closing === null) for (const inst of this.instances.values()) this.reconcileVips(inst, renamed, startedAt);
    }
    this.schedule();
  }

  private async flushNeighbours(): Promise<void> {
    try {
      await flushUnresolvedNeighbours(this.config.interface);
    } catch (err) {
      this.dropLog.warn('neigh', { err }, 'failover: cannot flush the unresolved neighbours');
    }
  }

  /** vip.ts ensurePromoteSecondaries: said when changed; a host where it cannot be set is warned (every 10 s at most). */
  private promoteSecondaries(): void {
    const iface = this.config.interface;
    try {
      if (this.setPromoteSecondaries(iface) === 'set') this.log.info({ iface }, 'failover: promote_secondaries set on the interface (a VIP removal keeps the host address)');
    } catch (err) {
      this.dropLog.warn('promote', { err, iface }, 'failover: cannot set promote_secondaries on the interface');
    }
  }

  private updateOwnAddresses(info: InterfaceInfo): void {
    const s = new Set(info.addresses.map((a) => a.address));
    if (this.localAddress !== '') s.add(this.localAddress);
    this.ownAddresses = s;
  }

  private emitStatus(): void {
    this.emit(this.status());
  }
}

