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
 * Per process: with `workers`, two connections that land on different workers are not seen together; across LB
 * hosts neither (documented).
 */
import type { Server } from './server.js';

export interface ClientIdHolder {
  readonly server: Server | null;
}

export class ClientIdRegistry<S extends ClientIdHolder> {
  private readonly live = new Map<string, S>();

  /** The session that holds `id` now, if any. */
  holderOf(id: string): S | undefined {
    return this.live.get(id);
  }

  /** `session` (accepted by its server) now holds `id`: the session it displaces on another server, which the caller closes; else null. */
  claim(id: string, session: S): S | null {
    const before = this.live.get(id);
    this.live.set(id, session);
    if (before === undefined || before === session || before.server === session.server) return null;
    return before;
  }

  /** `session` has ended: `id` is forgotten, unless a newer session holds it. */
  release(id: string, session: S): void {
    if (this.live.get(id) === session) this.live.delete(id);
  }

  get size(): number {
    return this.live.size;
  }
}
