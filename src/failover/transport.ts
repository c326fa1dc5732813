/**
 * Advert transport over UDP (node:dgram): unicast to each configured peer, or multicast to `group` joined on
 * the interface's address. Never a silent fallback from one to the other (a keepalived lesson, vrrp-facts §3.5).
 * In unicast mode the socket is bound to our own address, so the adverts' source address — the one the peer
 * uses for the equal-priority tie break — is exactly the address we compare with.
 */
import dgram from 'node:dgram';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { isIpv4, isIpv4Multicast } from './ipv4.js';
import { RateLimitedLog, type LogSink } from './log.js';

export interface TransportOptions {
  mode: 'unicast' | 'multicast';
  peers: readonly string[];
  group: string;
  port: number;
  /** Our IPv4 address on the failover interface. */
  localAddress: string;
}

/** Multicast adverts stay on the link. */
export const MULTICAST_TTL = 1;

export class AdvertTransport {
  private socket: dgram.Socket | null = null;
  private readonly targets: string[];
  private inFlight = 0;
  private readonly sendErrors: RateLimitedLog;

  constructor(
    private readonly o: TransportOptions,
    private readonly onDatagram: (buf: Buffer, address: string) => void,
    log: LogSink,
  ) {
    if (!isIpv4(o.localAddress)) throw new MqttLbError(ErrorCodes.FAILOVER_START, `failover: local address ${o.localAddress} is not IPv4`);
    if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new MqttLbError(ErrorCodes.FAILOVER_START, `failover.port ${o.port} is not a port`);
    if (o.mode === 'unicast') {
      if (o.peers.length === 0) throw new MqttLbError(ErrorCodes.FAILOVER_START, 'failover.transport is unicast but failover.peers is empty');
      for (const p of o.peers) if (!isIpv4(p)) throw new MqttLbError(ErrorCodes.FAILOVER_START, `failover.peers: ${p} is not an IPv4 address`);
      this.targets = [...o.peers];
    } else {
      if (!isIpv4Multicast(o.group)) throw new MqttLbError(ErrorCodes.FAILOVER_START, `failover.group ${o.group} is not an IPv4 multicast address`);
      this.targets = [o.group];
    }
    this.sendErrors = new RateLimitedLog(log, 10_000, () => performance.now());
  }

  async open(): Promise<void> {
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    const bindAddress = this.o.mode === 'unicast' ? this.o.localAddress : '0.0.0.0';
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        const code = (err as NodeJS.ErrnoException).code;
        reject(new MqttLbError(ErrorCodes.START_BIND, `failover: cannot bind UDP ${bindAddress}:${this.o.port} (${code ?? err.message})${code === 'EADDRINUSE' ? ` (another mqtt-lb or keepalived on this host? \`ss -lunp 'sport = :${this.o.port}'\` names it)` : ''}`, { cause: err }));
      };
      socket.once('error', onError);
      socket.bind({ address: bindAddress, port: this.o.port, exclusive: true }, () => {
        socket.off('error', onError);
        resolve();
      });
    }).catch((err: unknown) => {
      socket.close();
      throw err;
    });
    try {
      if (this.o.mode === 'multicast') {
        socket.addMembership(this.o.group, this.o.localAddress);
        socket.setMulticastInterface(this.o.localAddress);
        socket.setMulticastTTL(MULTICAST_TTL);
        socket.setMulticastLoopback(false);
      }
    } catch (err) {
      socket.close();
      throw new MqttLbError(ErrorCodes.START_BIND, `failover: cannot join multicast group ${this.o.group} on ${this.o.localAddress} (${(err as Error).message})`, { cause: err });
    }
    socket.on('message', (buf, rinfo) => this.onDatagram(buf, rinfo.address));
    socket.on('error', (err) => this.sendErrors.warn(`socket:${(err as NodeJS.ErrnoException).code}`, { err }, 'failover socket error'));
    this.socket = socket;
  }

  /**
   * Multicast: the group joined, and the sending interface set, again. Both were bound to the interface's index
   * when set (the kernel resolves our address to it): an interface deleted and made again (a re-created VLAN,
   * veth or bond) left sends failing with ENODEV and the group unheard, both hosts master for good. Call it once
   * our address is on the new interface (the kernel finds the interface by it). False: it failed (said, every 10
   * s at most); try again later. Unicast: nothing to do (bound by address).
   */
  rejoin(): boolean {
    const s = this.socket;
    if (s === null || this.o.mode !== 'multicast') return true;
    try {
      s.dropMembership(this.o.group, this.o.localAddress);
    } catch {
      // Not a member on the new interface (the old membership went with the old interface).
    }
    try {
      s.addMembership(this.o.group, this.o.localAddress);
      s.setMulticastInterface(this.o.localAddress);
      return true;
    } catch (err) {
      this.sendErrors.warn('rejoin', { err, group: this.o.group }, 'failover: cannot join the multicast group again');
      return false;
    }
  }

  send(buf: Buffer): void {
    const s = this.socket;
    if (s === null) return;
    for (const target of this.targets) {
      this.inFlight++;
      s.send(buf, this.o.port, target, (err) => {
        this.inFlight--;
        // A cut link gives ENETUNREACH/EHOSTUNREACH at every advert: log the first of each kind per 10 s.
        if (err) this.sendErrors.warn(`send:${target}:${(err as NodeJS.ErrnoException).code}`, { target, errno: (err as NodeJS.ErrnoException).code }, 'failover advert send failed');
      });
    }
  }

  /** Waits (bounded) for queued sends — a last priority-0 advert — then closes. Idempotent. */
  async close(maxWaitMs = 200): Promise<void> {
    const s = this.socket;
    if (s === null) return;
    this.socket = null;
    const until = performance.now() + maxWaitMs;
    while (this.inFlight > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 5));
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
