/**
 * The failover facade used by the application, in the proxy process. The heartbeat itself runs in a worker
 * thread (worker.ts); this side validates the key, starts/stops the worker, forwards tracking inputs and
 * keeps the last known status so that `status()`, `stats()` and `isMaster()` are synchronous.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { FailoverConfig } from '../config/types.js';
import { ErrorCodes, MqttLbError, type ErrorCode } from '../errors.js';
import type { DropReason } from './advert.js';
import { readKeyFile } from './key.js';
import { mainPeer, peerViews, type PeerView, type PeerViewState } from './peer-view.js';
import { peerSilent, type MainToWorker, type WorkerInit, type WorkerStatus, type WorkerToMain } from './messages.js';
import type { FailoverState } from './state-machine.js';
import { formatCidr, isIpv4 } from './ipv4.js';
import { checkVip, onlyVipAddresses, removeVip, showInterface, vipEntries } from './vip.js';
import { stopOrphan } from './orphan.js';
import type { RunningChild } from './children.js';
import { threadSharedNow } from '../monotonic-clock.js';
import { restartDelay } from '../restart-delay.js';

export { DROP_REASONS, type DropReason } from './advert.js';
export { generateKey, readKeyFile, parseKey } from './key.js';
export { FAILOVER_STATES, type FailoverState } from './state-machine.js';
export { computeTracking, type TrackingInput } from './tracking.js';

export interface FailoverInstanceStatus {
  routerId: number;
  state: 'init' | 'backup' | 'master' | 'fault';
  priority: number;
  vips: string[];
  /** The contract's peer (peer-view.ts mainPeer): with two hosts, the other one. */
  peer: { address: string; state: PeerViewState; lastAdvertAgeMs: number } | null;
  /** Every peer heard since the start, by address. */
  peers: PeerView[];
}

export interface FailoverStats {
  /** Keyed `${from}>${to}`. */
  transitions: Map<string, number>;
  dropped: Record<DropReason, number>;
  /** Each configured failover.track.scripts entry, by name: failing now (as of the thread's last status). */
  trackScripts: Map<string, boolean>;
}

export interface FailoverStateEvent {
  routerId: number;
  from: FailoverState;
  to: FailoverState;
  /** Wall-clock ms (Date.now()) of the transition, taken in the heartbeat thread. */
  at: number;
}

/** Waits for the worker to bind and remove stale VIPs. */
const START_TIMEOUT_MS = 20_000;
/** Waits for the worker to send its last advert and remove the VIPs. */
const CLOSE_TIMEOUT_MS = 10_000;

/**
 * A stop's hand-over can come only from a peer (any of them, with three hosts or more) heard within a
 * Master_Down_Interval, not in FAULT (it takes part in no election) and not stopping itself (priority 0: both hosts
 * restarted together): false when no instance that is still master has one.
 */
function takeoverPossible(m: WorkerStatus): boolean {
  const now = threadSharedNow();
  return m.instances.some((i) => i.state === 'master' && i.peers.some((p) => p.state !== 'fault' && p.priority > 0 && !peerSilent(p, now)));
}

function masterIds(m: WorkerStatus): number[] {
  return m.instances.filter((i) => i.state === 'master').map((i) => i.routerId);
}

function workerUrl(): URL {
  return new URL('./worker.js', import.meta.url);
}

export class Failover extends EventEmitter {
  private config: FailoverConfig;
  private readonly log: Logger;
  private worker: Worker | null = null;
  private key: Buffer | null = null;
  private last: WorkerStatus | null = null;
  /** The heartbeat thread's children that run now, by pid: stopped from here should the thread die (orphan.ts). */
  private readonly children = new Map<number, RunningChild>();
  private readonly transitions = new Map<string, number>();
  /** Drops counted by workers that have exited (a restarted worker starts from zero). */
  private readonly droppedBefore: Record<DropReason, number> = { bad_hmac: 0, replay: 0, router_id: 0, malformed: 0 };
  private tracking = { fault: false, priorityPenalty: 0 };
  /** Started before the proxy serves (start's `held`), until serving(): also what a restarted worker is told. */
  private held = false;
  private resignSeq = 0;
  private resignWaiters: Array<{ seq: number; done: () => void }> = [];
  private closing: Promise<void> | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private started = false;
  /**
   * Closes the sessions whose client connected to one of `vips` (the proxy: App.releaseVipSessions), when an
   * instance stops being master without a stop; the worker removes the VIPs once it resolves (bounded there).
   */
  onRelease: ((vips: string[], signal: AbortSignal) => Promise<void>) | null = null;
  /** Releases under way, by the worker's seq: aborted when the instance is master again. */
  private readonly releases = new Map<number, { routerId: number; abort: AbortController }>();
  /** Counts heartbeat workers: a release's answer goes only to the worker that asked (seqs restart in a new one). */
  private generation = 0;

  constructor(config: FailoverConfig, log: Logger) {
    super();
    this.config = config;
    this.log = log;
  }

  /**
   * Validates the key, then starts the worker (which removes stale VIPs and binds); rejects with a clear error.
   * `held`: the proxy does not serve yet, and this host must not become master before serving() says it does; the
   * election runs meanwhile (FailoverStateMachine.setHeld).
   */
  async start(opts: { held?: boolean } = {}): Promise<void> {
    if (this.started) return;
    this.held = opts.held ?? false;
    if (this.closing !== null) throw new MqttLbError(ErrorCodes.FAILOVER_START, 'failover: start() after close()');
    const url = workerUrl();
    if (!existsSync(fileURLToPath(url))) {
      throw new MqttLbError(ErrorCodes.START_FILE, `failover: worker script ${fileURLToPath(url)} not found (run \`npm run build\` and start from dist/)`);
    }
    const kf = await readKeyFile(this.config.authKeyFile);
    this.key = kf.key;
    try {
      await this.spawnWorker();
    } catch (err) {
      // The interface not there yet, or without its address (a boot where DHCP or a VLAN comes late): keepalived
      // waits in FAULT, and so does this host, without a VIP, while its proxy serves. Exiting instead would leave
      // the host serving nothing, and systemd gives up on a unit that fails 5 times in 10 s.
      if (!(err instanceof MqttLbError) || err.code !== ErrorCodes.FAILOVER_INTERFACE) throw err;
      this.started = true;
      this.log.error({ err, code: err.code, retryInMs: restartDelay(0) }, 'failover interface not ready: serving without failover until it is');
      // A VIP a killed run left on an interface that lost its own address: not held without a heartbeat.
      await this.removeAllVips();
      this.restartWorker(0);
      return;
    }
    this.started = true;
  }

  /** The proxy serves (its listeners are bound): the hold of start({ held: true }) ends. Idempotent. */
  serving(): void {
    if (!this.held) return;
    this.held = false;
    this.post({ type: 'serving' });
  }

  /** A reload: `config` is the running settings with what a reload applies taken from the file (planFailoverReload). */
  reconfigure(config: FailoverConfig): void {
    this.config = config;
    this.post({ type: 'reconfigure', config });
  }

  get isHeld(): boolean {
    return this.held;
  }

  setTracking(t: { fault: boolean; priorityPenalty: number }): void {
    this.tracking = { fault: t.fault, priorityPenalty: t.priorityPenalty };
    this.post({ type: 'tracking', ...this.tracking });
  }

  status(): FailoverInstanceStatus[] {
    const now = threadSharedNow();
    // The heartbeat takes adverts from these only (multicast: from any sender with the key, none known before).
    const configured = this.config.transport === 'unicast' ? this.config.peers.filter(isIpv4) : [];
    if (this.last === null) {
      return this.config.instances.map((i) => ({ routerId: i.routerId, state: 'init', priority: i.priority, vips: [...i.vips], peer: null, peers: peerViews([], now, configured) }));
    }
    return this.last.instances.map((i) => {
      const peers = peerViews(i.peers, now, configured);
      const main = mainPeer(peers);
      const peer = main === null ? null : { address: main.address, state: main.state, lastAdvertAgeMs: main.lastAdvertAgeMs };
      return { routerId: i.routerId, state: i.state, priority: i.priority, vips: [...i.vips], peer, peers };
    });
  }

  stats(): FailoverStats {
    const cur = this.last?.dropped;
    const dropped = { ...this.droppedBefore };
    if (cur !== undefined) for (const r of Object.keys(dropped) as DropReason[]) dropped[r] += cur[r];
    const failing = new Set(this.last?.failingScripts ?? []);
    const trackScripts = new Map(this.config.track.scripts.map((s) => [s.name, failing.has(s.name)]));
    return { transitions: new Map(this.transitions), dropped, trackScripts };
  }

  isMaster(): boolean {
    return this.last?.instances.some((i) => i.state === 'master') ?? false;
  }

  /**
   * Graceful stop step: priority-0 adverts; resolves when no instance is master any more (the peer
   * advertised as master and we handed over) or after `timeoutMs`, and at once when no peer could take over
   * (takeoverPossible: none heard within a Master_Down_Interval, in FAULT, or stopping too), as keepalived does not wait
   * either. The VIPs stay on this host until `close()`, so that the sessions evicted in between can still be
   * closed towards their clients (design.md §3: evict, then remove the VIP). A resigned instance never
   * becomes master again.
   */
  resign(timeoutMs: number): Promise<void> {
    if (this.worker === null) return Promise.resolve();
    const seq = ++this.resignSeq;
    this.post({ type: 'resign', seq });
    if (this.last !== null && masterIds(this.last).length > 0 && !takeoverPossible(this.last)) {
      // Waiting would only hold the stop up (20 intervals: 20 s at 1 s adverts, with the listeners closed).
      this.log.info({ routerIds: masterIds(this.last) }, 'failover: no peer can take over: not waiting for one');
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      const waiter = {
        seq,
        done: () => {
          if (timer !== null) clearTimeout(timer);
          this.resignWaiters = this.resignWaiters.filter((w) => w !== waiter);
          resolve();
        },
      };
      timer = setTimeout(() => {
        this.log.warn({ timeoutMs }, 'failover: peer did not take over before the resign timeout');
        waiter.done();
      }, timeoutMs);
      this.resignWaiters.push(waiter);
    });
  }

  /**
   * The stop of a host that is master of nothing: its instances resign (a priority-0 advert at once), without a
   * wait, so that a master stopping at the same time knows no hand-over comes from here (takeoverPossible).
   */
  announceStop(): void {
    if (this.worker === null) return;
    this.post({ type: 'resign', seq: ++this.resignSeq });
  }

  /** Removes the VIPs (priority 0 first if still master; after resign() too) and stops the worker. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  // ---- internals -------------------------------------------------------------------------------------------

  private spawnWorker(): Promise<void> {
    const init: WorkerInit = { config: this.config, key: new Uint8Array(this.key!), held: this.held };
    const worker = new Worker(workerUrl(), { workerData: init, name: 'mqtt-lb-failover' });
    this.worker = worker;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err === null) resolve();
        else {
          this.worker = null;
          void worker.terminate();
          reject(err);
        }
      };
      const timer = setTimeout(() => settle(new MqttLbError(ErrorCodes.FAILOVER_START, `failover: worker did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
      worker.on('message', (m: WorkerToMain) => {
        if (m.type === 'ready') {
          // Tracking set before the worker was up.
          if (this.tracking.fault || this.tracking.priorityPenalty !== 0) worker.postMessage({ type: 'tracking', ...this.tracking } satisfies MainToWorker);
          settle(null);
        } else if (m.type === 'fatal') settle(new MqttLbError(m.code as ErrorCode, m.message));
        else this.onMessage(m);
      });
      worker.on('error', (err) => {
        this.log.error({ err }, 'failover worker crashed');
        settle(err);
      });
      worker.on('exit', (code) => {
        settle(new MqttLbError(ErrorCodes.FAILOVER_START, `failover: worker exited (code ${code}) while starting`));
        if (this.worker === worker) this.onWorkerLost(code);
      });
    });
  }

  private onMessage(m: WorkerToMain): void {
    switch (m.type) {
      case 'log':
        this.log[m.level](m.obj, m.msg);
        break;
      case 'state': {
        // Master again while its VIP sessions were being closed: the rest stay (the heartbeat keeps the VIP).
        if (m.to === 'master') this.abortReleases((r) => r.routerId === m.routerId);
        const k = `${m.from}>${m.to}`;
        this.transitions.set(k, (this.transitions.get(k) ?? 0) + 1);
        this.emit('state', { routerId: m.routerId, from: m.from, to: m.to, at: m.at } satisfies FailoverStateEvent);
        break;
      }
      case 'network':
        // This host's network out or back (heartbeat noteNetwork): the proxy's health checks hear of it.
        this.emit('network', m.out);
        break;
      case 'release': {
        const release = this.onRelease;
        const abort = new AbortController();
        const generation = this.generation;
        this.releases.set(m.seq, { routerId: m.routerId, abort });
        const closing = release === null ? Promise.resolve() : release(m.vips, abort.signal);
        void closing
          .catch((err: unknown) => this.log.error({ err, routerId: m.routerId }, 'failover: closing the VIP sessions failed'))
          .then(() => {
            if (this.releases.get(m.seq)?.abort === abort) this.releases.delete(m.seq);
            if (generation === this.generation && !abort.signal.aborted) this.post({ type: 'released', seq: m.seq });
          });
        break;
      }
      case 'child':
        this.children.set(m.pid, { pid: m.pid, command: m.command });
        break;
      case 'child-ended':
        this.children.delete(m.pid);
        break;
      case 'status':
        this.last = m;
        if (this.resignWaiters.length > 0 && !m.instances.some((i) => i.state === 'master')) {
          for (const w of [...this.resignWaiters]) if (m.resignSeq >= w.seq) w.done();
        } else if (this.resignWaiters.length > 0 && !takeoverPossible(m)) {
          // The peer fell silent (or went FAULT) while we waited for it.
          this.log.info({ routerIds: masterIds(m) }, 'failover: no peer can take over: not waiting for one');
          for (const w of [...this.resignWaiters]) w.done();
        }
        break;
      default:
        break;
    }
  }

  private abortReleases(match: (r: { routerId: number }) => boolean): void {
    for (const [seq, r] of [...this.releases]) {
      if (!match(r)) continue;
      this.releases.delete(seq);
      r.abort.abort();
    }
  }

  /** The worker died without being asked to: never leave a VIP behind a dead heartbeat (split brain). */
  private onWorkerLost(code: number): void {
    this.worker = null;
    this.stopOrphanedChildren();
    // Answers to the lost thread's releases go nowhere (a new thread numbers its own from 1); the closing itself
    // goes on, bounded: the VIPs are removed below, and sessions left on them would hang.
    this.generation++;
    this.releases.clear();
    if (this.closing !== null || !this.started) return;
    this.log.error({ exitCode: code }, 'failover worker exited unexpectedly: removing VIPs, restarting');
    const cur = this.last?.dropped;
    if (cur !== undefined) for (const r of Object.keys(this.droppedBefore) as DropReason[]) this.droppedBefore[r] += cur[r];
    for (const i of this.last?.instances ?? []) {
      if (i.state !== 'init') this.onMessage({ type: 'state', routerId: i.routerId, from: i.state, to: 'init', at: Date.now() });
    }
    this.last = null;
    for (const w of [...this.resignWaiters]) w.done();
    void this.removeAllVips().then(() => this.restartWorker(0));
  }

  /**
   * Start a new failover thread after restartDelay(failures): a start that fails (the interface gone for a moment,
   * the advert port taken) is tried again, never given up, or failover would stay off on this host until someone
   * restarted it.
   */
  private restartWorker(failures: number): void {
    if (this.closing !== null) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.closing !== null) return;
      this.spawnWorker().catch((err: unknown) => {
        if (this.closing !== null) return;
        this.log.error({ err, code: (err as Partial<MqttLbError>).code, retryInMs: restartDelay(failures + 1) }, 'failover worker restart failed');
        this.restartWorker(failures + 1);
      });
    }, restartDelay(failures));
  }

  private async doClose(): Promise<void> {
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    for (const w of [...this.resignWaiters]) w.done();
    const worker = this.worker;
    if (worker === null) {
      if (this.started) await this.removeAllVips();
      return;
    }
    const closed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), CLOSE_TIMEOUT_MS);
      worker.on('message', (m: WorkerToMain) => {
        if (m.type === 'closed') {
          clearTimeout(timer);
          resolve(true);
        }
      });
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve(false);
      });
      worker.postMessage({ type: 'close' } satisfies MainToWorker);
    });
    this.worker = null;
    await worker.terminate();
    if (!closed) {
      this.stopOrphanedChildren();
      this.log.warn({}, 'failover worker did not confirm the stop: removing VIPs from the main thread');
      await this.removeAllVips();
    }
    if (this.last !== null) {
      // Stopped: every instance is back in INIT (the VIPs are gone).
      for (const i of this.last.instances) if (i.state !== 'init') this.onMessage({ type: 'state', routerId: i.routerId, from: i.state, to: 'init', at: Date.now() });
      this.last = { ...this.last, instances: this.last.instances.map((i) => ({ ...i, state: 'init' as const })) };
    }
  }

  /** A dead worker thread's children run on (orphan.ts): stopped from here. */
  private stopOrphanedChildren(): void {
    for (const child of this.children.values()) {
      if (stopOrphan(child)) this.log.info({ childPid: child.pid, command: child.command }, "failover: stopped the lost thread's child process");
    }
    this.children.clear();
  }

  private async removeAllVips(): Promise<void> {
    const iface = this.config.interface;
    // The heartbeat refuses to start on an interface whose only addresses are VIPs (one is most likely the host's
    // own); the removals from here (no thread started, a lost or stuck thread, a stop) must not take it either (a
    // failover audit: a SIGTERM after such a refusal removed the host's address).
    const info = await showInterface(iface).catch(() => null);
    const vipAddresses = new Set(this.config.instances.flatMap((i) => i.vips.map((v) => checkVip(v).address)));
    const spared = new Set(info === null ? [] : onlyVipAddresses(info, vipAddresses).map((a) => a.address));
    for (const inst of this.config.instances) {
      for (const configured of inst.vips) {
        const c = checkVip(configured);
        if (spared.has(c.address)) {
          this.log.error({ vip: configured, iface }, "failover: not removing a VIP that is the interface's only address (is it this host's own?)");
          continue;
        }
        // As configured and as a /32 where found (vipEntries); as configured when the interface cannot be read.
        const entries = info === null ? [configured] : vipEntries(info, c).map(formatCidr);
        for (const vip of entries) await removeVip(iface, vip).catch((err: unknown) => this.log.error({ err, vip }, 'failover: cannot remove VIP'));
      }
    }
  }

  private post(m: MainToWorker): void {
    this.worker?.postMessage(m);
  }
}
