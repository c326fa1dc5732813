/**
 * JIT warm-up at start (`warmUp` in lb.yaml). A fresh Node process spends 1.5-2x the CPU per connection of a warm
 * one on its first few thousand connections (bench/README.md: 200-340 µs against 110-130 later), because V8
 * optimizes the session code only once it has run it often. A backup balancer meets that cold phase when it
 * matters most: after a failover, every client reconnects at once.
 *
 * So, before the listeners are bound (App.start's beforeListeners), a private copy of the proxy runs synthetic
 * sessions through the plain-TCP session code (accept, CONNECT scan, routing, dial, CONNECT replay, CONNACK,
 * splice, DISCONNECT or FIN, teardown): its own App with one listener on 127.0.0.1:0 and one pool whose only
 * server is a stand-in broker in this process. It shares no state with the real one (its own pools, counters and
 * sessions; no metrics, no log lines) and touches no real broker. Before the listeners rather than after, so that
 * it never competes with real clients or, on a shared machine, with its neighbours' work: it is part of starting,
 * bounded by TIME_BOUND_MS, and a stop signal cuts it short (with workers, the primary tells them: run.ts).
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { App } from './app.js';
import type { LbConfig, PoolConfig } from './config/types.js';
import { openFileLimit, reserveFor } from './proxy/fd-budget.js';
import { collectGarbage } from './proxy/overload-guard.js';
import { monotonicNow } from './monotonic-clock.js';

/** Clients connecting at once, as in a reconnect storm. */
const IN_FLIGHT = 32;
/** Sessions held together before they all leave: a storm piles sessions up (the sets and the heap grow). */
const MAX_WAVE = 500;
/** Descriptors per synthetic session, all in this process: client, the session's two sockets, stand-in broker. */
const FDS_PER_SESSION = 4;
/** The warm-up ends this long after it began, done or not (a slow or busy machine): it delays the start. */
const TIME_BOUND_MS = 4_000;
/** A synthetic client without its CONNACK after this is abandoned (a wedged stand-in; a bound for safety). */
const CONNACK_TIMEOUT_MS = 2_000;

const CONNACK_V4 = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const CONNACK_V5 = Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]);
const DISCONNECT = Buffer.from([0xe0, 0x00]);
const NAME = 'warm-up';

/** A CONNECT for `clientId` (ASCII, under 100 bytes; `warm-up-99999`: 28 bytes at 5.0): MQTT 3.1.1 or 5.0, clean session, keep-alive 60 s. */
export function warmUpConnect(clientId: string, version: 4 | 5): Buffer {
  const id = Buffer.from(clientId);
  const head = [0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, version, 0x02, 0x00, 0x3c];
  if (version === 5) head.push(0x00); // property length [MQTT-3.1.2.11]
  return Buffer.concat([Buffer.from([0x10, head.length + 2 + id.length, ...head, id.length >> 8, id.length & 0xff]), id]);
}

/**
 * How many sessions a wave may hold with `fileLimit` descriptors (null: unknown), at most MAX_WAVE; 0 = none.
 * `reserve` stays free: the real config's descriptor reserve (fd-budget.ts reserveFor: stdio, logs, the admin
 * port, a probe per server), the real listeners' own sockets and the warm-up's listener and stand-in.
 */
export function waveSize(fileLimit: number | null, reserve: number): number {
  if (fileLimit === null) return IN_FLIGHT;
  return Math.max(0, Math.min(MAX_WAVE, Math.floor((fileLimit - reserve) / FDS_PER_SESSION)));
}

/** Synthetic sessions that got their CONNACK, and those that did not. */
interface Tally {
  connected: number;
  failed: number;
}

export interface WarmUpReport {
  /** Synthetic sessions that reached their CONNACK through the proxy. */
  sessions: number;
  /** Those that did not (refused, reset, timed out): a warm-up that exercised something else than sessions. */
  failed: number;
  ms: number;
  /** done | time (TIME_BOUND_MS) | stop (close()) | no-room (descriptors) | error | off (warmUp: 0) */
  ended: 'done' | 'time' | 'stop' | 'no-room' | 'error' | 'off';
}

export class WarmUp {
  private closing = false;
  private readonly sockets = new Set<net.Socket>();
  private running: Promise<WarmUpReport> | null = null;

  constructor(
    private readonly real: LbConfig,
    private readonly log: Logger,
  ) {}

  /** Runs the warm-up once and logs its end (when it ran); resolves with what it did, never rejects. */
  run(): Promise<WarmUpReport> {
    this.running ??= this.runOnce().then((r) => {
      const fields = { sessions: r.sessions, failed: r.failed, wanted: this.real.warmUp, ms: r.ms, ended: r.ended };
      // Every synthetic session should reach its stand-in: failures (bar those cut at the bound or by a stop)
      // mean the warm-up exercised something else (refusals, errors) and warmed little.
      if (r.ended === 'error' || (r.ended === 'done' && r.failed > 0)) this.log.warn(fields, 'warm-up ended');
      else if (r.ended !== 'off') this.log.info(fields, 'warm-up ended');
      return r;
    });
    return this.running;
  }

  /** Cuts the warm-up short and waits until what it opened is closed. Idempotent. */
  async close(): Promise<void> {
    this.closing = true;
    for (const s of this.sockets) s.destroy();
    await this.running;
  }

  private async runOnce(): Promise<WarmUpReport> {
    const began = monotonicNow();
    const wanted = this.real.warmUp;
    if (wanted <= 0 || this.real.listeners.length === 0 || this.closing) return { sessions: 0, failed: 0, ms: 0, ended: 'off' };
    const servers = Object.values(this.real.pools).reduce((n, p) => n + p.servers.length, 0);
    const wave = waveSize(openFileLimit(), reserveFor(servers) + this.real.listeners.length + 2);
    if (wave === 0) return { sessions: 0, failed: 0, ms: 0, ended: 'no-room' };
    this.log.info({ wanted, wave, detail: 'the listeners are bound once it ends; warmUp: 0 turns it off' }, 'warm-up started');
    let broker: net.Server | null = null;
    let app: App | null = null;
    let started = 0;
    const tally: Tally = { connected: 0, failed: 0 };
    let ended: WarmUpReport['ended'] = 'done';
    // The bound holds whatever is in flight: its sockets go (a stalled close would otherwise hold the start).
    const deadline = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, TIME_BOUND_MS);
    try {
      broker = await this.startBroker();
      app = new App(this.configFor((broker.address() as net.AddressInfo).port, wave), this.log.child({}, { level: 'silent' }), 'worker', null, { privateBinds: true });
      await app.start();
      // The warm-up App runs no health checks (role 'worker': states come from outside); its stand-in is up.
      for (const pool of app.poolMap.values()) for (const s of pool.servers) s.setHealth('up');
      const port = app.listenerMap.get(NAME)!.port;
      const until = began + TIME_BOUND_MS;
      while (started < wanted && !this.closing && monotonicNow() < until) {
        started += await this.wave(port, started, Math.min(wave, wanted - started), until, tally);
      }
      ended = this.closing ? 'stop' : started < wanted ? 'time' : 'done';
    } catch (err) {
      // Not worth failing the start: the balancer serves as it would without it.
      this.log.warn({ err }, 'warm-up could not run');
      ended = 'error';
    } finally {
      clearTimeout(deadline);
      for (const s of this.sockets) s.destroy();
      if (app !== null) await app.stop();
      const server = broker;
      if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
      // The warm-up's garbage goes now, not in the collections of the first real sessions: measured on the
      // first 2,000 connections after start (5 fresh processes each), 155 µs of CPU per connection against 180
      // without this collection (225 without a warm-up), and RSS 99 instead of 125 MiB after it (80 without).
      if (started > 0) collectGarbage();
    }
    return { sessions: tally.connected, failed: tally.failed, ms: Math.round(monotonicNow() - began), ended };
  }

  /** The warm-up's own config: one loopback listener, and the real first listener's pool with the stand-in. */
  private configFor(brokerPort: number, wave: number): LbConfig {
    const realPool: PoolConfig = this.real.pools[this.real.listeners[0]!.pool]!;
    const pool: PoolConfig = {
      ...realPool,
      name: NAME,
      sendProxyProtocol: 'off',
      onServerDown: 'keep',
      onServerUp: 'keep',
      servers: [{ name: 'stand-in', address: `127.0.0.1:${brokerPort}`, host: '127.0.0.1', port: brokerPort, weight: 1, backup: false, healthUrl: null, maxConnections: 0 }],
      health: { ...realPool.health, type: 'none' },
    };
    return {
      ...this.real,
      listeners: [{ name: NAME, bind: '127.0.0.1:0', address: { host: '127.0.0.1', port: 0 }, pool: NAME, maxConnections: wave, tls: null, acceptProxyProtocol: [], refuseWith: 'connack', evictWith: 'disconnect' }],
      pools: { [NAME]: pool },
      limits: {
        ...this.real.limits,
        // The warm-up's CONNECTs (at most 28 bytes) fit even the smallest maxConnectBytes (32); a margin all the same.
        maxConnectBytes: Math.max(this.real.limits.maxConnectBytes, 64),
        maxConnections: wave,
        acceptRate: 0,
        perSource: { maxConnections: 0, connectRate: 0, exempt: [] },
        drainTimeout: 0,
        idleTimeout: 0,
        maxMemory: 0,
      },
      log: { ...this.real.log, sessions: false },
      workers: 1,
      warmUp: 0,
      failover: null,
    };
  }

  /** A stand-in broker: answers a CONNECT with CONNACK 0 and closes on DISCONNECT, as mosquitto does. */
  private startBroker(): Promise<net.Server> {
    const server = net.createServer({ noDelay: true }, (socket) => {
      this.track(socket);
      let answered = false;
      socket.on('data', (chunk: Buffer) => {
        if (!answered) {
          answered = true;
          // Byte 8 is the protocol level of a CONNECT whose Remaining Length takes one byte (ours do).
          socket.write(chunk[8] === 5 ? CONNACK_V5 : CONNACK_V4);
        } else if (chunk[0] === 0xe0) socket.end();
      });
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      // exclusive: in a node:cluster worker, a socket of this process, not one the primary shares among workers.
      server.listen({ host: '127.0.0.1', port: 0, backlog: 1024, exclusive: true }, () => {
        server.removeListener('error', reject);
        // An accept error later (EMFILE) costs the warm-up a session at most, never the process.
        server.on('error', () => {});
        resolve(server);
      });
    });
  }

  /**
   * `count` clients connect, IN_FLIGHT at a time, and stay until all have had their CONNACK; then all leave.
   * Returns how many were started.
   */
  private async wave(port: number, first: number, count: number, until: number, tally: Tally): Promise<number> {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const closed: Promise<void>[] = [];
    for (let i = 0; i < count && !this.closing && monotonicNow() < until; i += IN_FLIGHT) {
      const connected: Promise<void>[] = [];
      for (let n = first + i; n < first + Math.min(count, i + IN_FLIGHT); n++) {
        const client = this.client(port, n, released, tally);
        connected.push(client.connected);
        closed.push(client.closed);
      }
      await Promise.all(connected);
    }
    release();
    await Promise.all(closed);
    return closed.length;
  }

  /** One client: CONNECT (3.1.1 or 5.0), CONNACK; once released, DISCONNECT and FIN, or (every fourth) a FIN alone. */
  private client(port: number, n: number, released: Promise<void>, tally: Tally): { connected: Promise<void>; closed: Promise<void> } {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    this.track(socket);
    const timer = setTimeout(() => socket.destroy(), CONNACK_TIMEOUT_MS);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const connected = new Promise<void>((resolve) => {
      let answered = false;
      socket.once('close', () => {
        clearTimeout(timer);
        if (!answered) tally.failed++;
        resolve();
      });
      socket.once('data', (chunk: Buffer) => {
        clearTimeout(timer);
        answered = true;
        // CONNACK return code 0 (byte 3, at 3.1.1 and 5.0 alike); a refusal (listener full, too large...) is not.
        if (chunk[0] === 0x20 && chunk[3] === 0) tally.connected++;
        else tally.failed++;
        resolve();
        void released.then(() => {
          if (n % 4 !== 3) socket.write(DISCONNECT);
          socket.end();
        });
      });
    });
    socket.write(warmUpConnect(`warm-up-${n}`, n % 2 === 0 ? 4 : 5));
    if (this.closing) socket.destroy();
    return { connected, closed };
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => this.sockets.delete(socket));
  }
}
