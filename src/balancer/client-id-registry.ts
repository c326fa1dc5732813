/**
 * The client IDs of one pool's proxied sessions in this process, for the MQTT takeover rule across brokers.
 *
 * [MQTT-3.1.4-3]: a CONNECT with the client ID of a client already connected makes the server close the existing
 * connection. Behind a balancer "the server" is several brokers: a client whose new connection reaches another broker
 * than its old one (the old broker was down when it came, and `onServerUp: keep` left it on the fallback; a weight or
 * a reload moved its hash; the fallback placed an empty key) would hold two live sessions, each with its
 * subscriptions and its Will, and no broker would apply the rule (an audit saw one client ID live on two brokers for as
 * long as it watched). The balancer applies it instead: the older session is closed once the newer one's broker has
 * accepted it (its CONNACK says so: as a broker closes the older connection only for a CONNECT it authenticated, so
 * that nobody can close another client's session with its client ID and no credentials). On the same broker the
 * broker applies it itself, so nothing is done here.
 *
 * With `workers`, each worker's registry tells the primary what it holds (`sharing`: src/cluster/client-id-exchange.ts),
 * and the primary orders the older session closed when two workers hold one client ID on different servers
 * (src/cluster/client-id-ledger.ts). Across LB hosts nothing is shared (documented).
 *
 * Sessions are keyed by what the pool's `takeover` names (takeoverKey); by default client ID and username together
 * (sessionKey): see there.
 */
import type { TakeoverKey } from '../config/types.js';
import type { Server } from './server.js';

/**
 * The key of a session here: its username and its client ID. The older session is closed only for a newer one of the
 * same user: a broker that takes the client ID from the username (mosquitto's and EMQX's `use_username_as_clientid`)
 * holds two users' sessions under two IDs whatever their CONNECTs say, and one user could otherwise close another's
 * session by sending its client ID (a security audit). A client without a username is keyed by its client ID alone.
 * One character per byte (latin1): distinct IDs stay distinct; the username's length first, so no two pairs meet.
 */
export function sessionKey(clientId: Buffer, username: Buffer | null): string {
  return userKeyPart(username) + clientId.toString('latin1');
}

/**
 * The key a session is held under, as the pool's brokers tell clients apart (`takeover`); null: not held (`off`, or an
 * empty client ID: its broker assigns one, assignedIdKeyPrefix).
 * - `client-id-and-username`: sessionKey's pair; safe whatever the brokers do (one user cannot close another's session).
 * - `client-id`: the client ID alone, as one broker applies the rule to every user of its ID.
 * - `username`: the username, which such brokers make the client ID (`use_username_as_clientid`): its sessionKey part
 *   alone. Without one (or an empty one), the client ID, as sessionKey keys it without a username: never the key of
 *   a username of the same text, so that a client without credentials cannot close a user's session (a takeover audit;
 *   mosquitto refuses such clients under `use_username_as_clientid` anyway).
 */
export function takeoverKey(by: TakeoverKey, clientId: Buffer, username: Buffer | null): string | null {
  if (by === 'off') return null;
  if (by === 'username' && username !== null && username.length > 0) return userKeyPart(username);
  if (clientId.length === 0) return null;
  return sessionKey(clientId, by === 'client-id-and-username' ? username : null);
}

/**
 * For a 5.0 session with an empty client ID that takeoverKey did not key: what goes before the ID its broker assigns
 * (its sessionKey is this and the ID); null: not held (`off`).
 */
export function assignedIdKeyPrefix(by: TakeoverKey, username: Buffer | null): string | null {
  if (by === 'off') return null;
  return userKeyPart(by === 'client-id-and-username' ? username : null);
}

/** The username's part of a sessionKey (a session keeps it while it waits for the client ID its broker assigns). */
export function userKeyPart(username: Buffer | null): string {
  const user = username === null ? '' : username.toString('latin1');
  return `${user.length}:${user}`;
}

/** The client ID of a sessionKey, for log lines. */
export function clientIdOfKey(key: string): Buffer {
  const colon = key.indexOf(':');
  return Buffer.from(key.slice(colon + 1 + Number(key.slice(0, colon))), 'latin1');
}

export interface ClientIdHolder {
  readonly server: Server | null;
  /** Its client ID as log lines print it, when it was kept for them (session.ts clientIdText); null or absent: not kept. */
  readonly loggedClientId?: string | null;
  /**
   * The address its server was dialled at: a reload that moves a server (same name, another address) leaves the
   * sessions at the old address running, on another broker than the new sessions (a reload audit: two live sessions
   * of one client ID, one at each address, as both were taken for one broker). Absent: the server's only one.
   */
  readonly serverAddress?: string | undefined;
  /**
   * When its CONNECT was written to its server (monotonic ms, performance.now()): of two sessions of one client ID,
   * the one whose CONNECT went later is the newer, as a broker that saw both would judge, whichever CONNACK comes
   * first (an audit had a slow broker's late CONNACK close the newer session).
   */
  readonly connectSentAt: number;
  /**
   * A newer session of its client ID runs on another server: close it, as its broker would [MQTT-3.1.4-3].
   * `accepted`: its own CONNACK had accepted it (it held the ID), as against one still waiting for its CONNACK.
   */
  takenOver(accepted: boolean): void;
}

/** Where a worker's registries report their client IDs (the other workers' sessions are known there). */
export interface ClientIdSharing {
  /** Called once per registry, at its creation: where orders for `pool` are looked up. */
  attach(pool: string, registry: ClientIdRegistry<ClientIdHolder>): void;
  /**
   * A session accepted at `place` (its server's name and the address it was dialled at: brokerPlace), its CONNECT sent
   * at `connectSentAt` (performance.now()), holds `id` in this process now, under `serial`.
   */
  claimed(pool: string, id: string, serial: number, place: string, connectSentAt: number): void;
  /** The session registered under `serial` has ended. */
  released(serial: number): void;
}

/** Process-wide, so that a serial names one claim whatever the pool. */
let lastSerial = 0;

/** Whether two sessions run on one broker, which applies the rule to them itself: one server, at one address. */
function sameBroker(a: ClientIdHolder, b: ClientIdHolder): boolean {
  return a.server === b.server && a.serverAddress === b.serverAddress;
}

/** Where a session runs, as the primary compares claims from several workers (names and addresses, no objects). */
function brokerPlace(session: ClientIdHolder): string {
  return `${session.server?.name ?? ''} ${session.serverAddress ?? ''}`;
}

export class ClientIdRegistry<S extends ClientIdHolder> {
  private readonly live = new Map<string, S>();
  /**
   * Sessions whose CONNECT went to their server and whose CONNACK has not come yet (one, or several of one ID). A
   * newer session accepted meanwhile on another server closes them (olderAwaiting): a broker that saw both CONNECTs
   * would have closed the older connection at the newer CONNECT, and if the newer session ended before the older
   * one's late CONNACK, nothing would be left to displace it then.
   */
  private readonly awaiting = new Map<string, S | S[]>();
  /** With sharing: the serial each live ID was reported under (the primary's orders name it). */
  private readonly serials: Map<string, number> | null;

  constructor(
    private readonly pool = '',
    private readonly sharing: ClientIdSharing | null = null,
  ) {
    this.serials = sharing === null ? null : new Map();
    sharing?.attach(pool, this as ClientIdRegistry<ClientIdHolder>);
  }

  /** The session that holds `id` now, if any. */
  holderOf(id: string): S | undefined {
    return this.live.get(id);
  }

  /** `session` has sent its CONNECT with `id` and waits for its CONNACK (claim, or release when refused or ended). */
  awaitConnack(id: string, session: S): void {
    const there = this.awaiting.get(id);
    if (there === undefined) this.awaiting.set(id, session);
    else if (Array.isArray(there)) there.push(session);
    else this.awaiting.set(id, [there, session]);
  }

  /**
   * The sessions of `id` still waiting for their CONNACK whose CONNECT went before `session`'s, on another server
   * than `session`'s (the caller closes them; on the same server the broker does); null when there are none.
   */
  olderAwaiting(id: string, session: S): S[] | null {
    const there = this.awaiting.get(id);
    if (there === undefined) return null;
    let older: S[] | null = null;
    for (const s of Array.isArray(there) ? there : [there]) {
      if (s !== session && s.connectSentAt < session.connectSentAt && !sameBroker(s, session)) (older ??= []).push(s);
    }
    return older;
  }

  /**
   * `session` (accepted by its server) claims `id`: the newer of it and the session holding `id` (by connectSentAt)
   * holds it from now on. Answers the older one when it runs on another server, which the caller closes (it may be
   * `session` itself); else null (none, or the same broker, which closes it itself).
   */
  claim(id: string, session: S): S | null {
    this.stopAwaiting(id, session);
    const before = this.live.get(id);
    if (before === session) return null;
    if (before !== undefined && session.connectSentAt < before.connectSentAt) {
      return sameBroker(before, session) ? null : session;
    }
    this.live.set(id, session);
    if (this.serials !== null) {
      const serial = ++lastSerial;
      this.serials.set(id, serial);
      this.sharing!.claimed(this.pool, id, serial, brokerPlace(session), session.connectSentAt);
    }
    if (before === undefined || sameBroker(before, session)) return null;
    return before;
  }

  /** `session` has ended, or its server refused it: `id` is forgotten, unless a newer session holds it. */
  release(id: string, session: S): void {
    if (this.live.get(id) !== session) {
      this.stopAwaiting(id, session);
      return;
    }
    this.live.delete(id);
    if (this.serials === null) return;
    const serial = this.serials.get(id)!;
    this.serials.delete(id);
    this.sharing!.released(serial);
  }

  /** The session that holds `id` under `serial` (a takeover the primary ordered), if it still does. */
  heldUnder(id: string, serial: number): S | undefined {
    return this.serials !== null && this.serials.get(id) === serial ? this.live.get(id) : undefined;
  }

  get size(): number {
    return this.live.size;
  }

  /** Sessions waiting for their CONNACK, all IDs together. */
  get awaitingCount(): number {
    let n = 0;
    for (const there of this.awaiting.values()) n += Array.isArray(there) ? there.length : 1;
    return n;
  }

  private stopAwaiting(id: string, session: S): void {
    const there = this.awaiting.get(id);
    if (there === session) {
      this.awaiting.delete(id);
    } else if (Array.isArray(there)) {
      const i = there.indexOf(session);
      if (i < 0) return;
      there.splice(i, 1);
      if (there.length === 1) this.awaiting.set(id, there[0]!);
    }
  }
}
