/**
 * `pools.<name>.serverConnackTimeout`: a routed session whose server has not sent its first byte (the CONNACK, or
 * a 5.0 AUTH) this long after its CONNECT went to it. A broker that takes TCP without serving MQTT (a stopped or
 * wedged process: the kernel still completes handshakes into its backlog) would otherwise hold its clients until
 * each gives up on its own timer (mqtt.js: 30 s; Paho Python and mosquitto_sub: never), told nothing; HAProxy leaves
 * them to `timeout server` and then resets them. Nothing of the server has reached such a client, so it can still be
 * answered in MQTT (session.ts connackOverdue).
 *
 * How, at one timer per timeout value rather than one per session: every session of a queue has the same timeout
 * and joins at its end, so a queue is in deadline order and only its head is ever due first. Sessions leave it
 * at their server's first read (usually within a millisecond) or at their end, in O(1): an intrusive doubly
 * linked list, the links kept on the session. A queue's timer is armed for its head when it was empty and re-armed
 * from its own expiry; a head that left early only makes the timer find nothing due and re-arm, at most once per
 * timeout. Sessions are never held here past their end (a deferred queue of references would keep every closed
 * session of the last timeout alive: at 15,000 setups a second and 10 s, 150,000 of them).
 */
import { monotonicNow } from '../monotonic-clock.js';

/** What a queue holds of a session (session.ts ClientSession): its links, owned by ConnackDeadlines. */
export interface ConnackWaiter {
  connackDueAt: number;
  connackPrev: ConnackWaiter | null;
  connackNext: ConnackWaiter | null;
  /** The server it waits for (the log line names it). */
  readonly server: { readonly pool: string; readonly name: string } | null;
  /** The queue it is in; null: in none. */
  connackQueue: object | null;
  /** Its deadline passed with nothing from its server: true if it was closed for it (it may be ending already). */
  connackOverdue(): boolean;
}

/** Starts a one-shot timer that does not keep the process alive; returns its cancel function (tests inject one). */
export type ScheduleOnce = (fire: () => void, delayMs: number) => () => void;

function unrefTimeout(fire: () => void, delayMs: number): () => void {
  const timer = setTimeout(fire, delayMs);
  timer.unref();
  return () => clearTimeout(timer);
}

class Queue {
  head: ConnackWaiter | null = null;
  tail: ConnackWaiter | null = null;
  cancel: (() => void) | null = null;
  constructor(readonly timeoutMs: number) {}
}

export class ConnackDeadlines {
  private readonly queues = new Map<number, Queue>();
  private count = 0;

  /** `closed` hears of the sessions one expiry closed (for a log line), per timeout value. */
  constructor(
    private readonly closed: (sessions: ConnackWaiter[], timeoutMs: number) => void,
    private readonly now: () => number = monotonicNow,
    private readonly schedule: ScheduleOnce = unrefTimeout,
  ) {}

  /** Sessions waiting for their server's first byte (tests, status). */
  get waiting(): number {
    return this.count;
  }

  /** `waiter`'s CONNECT has just gone to its server: due in `timeoutMs` (> 0). */
  add(waiter: ConnackWaiter, timeoutMs: number): void {
    let queue = this.queues.get(timeoutMs);
    if (queue === undefined) {
      queue = new Queue(timeoutMs);
      this.queues.set(timeoutMs, queue);
    }
    waiter.connackDueAt = this.now() + timeoutMs;
    waiter.connackQueue = queue;
    waiter.connackPrev = queue.tail;
    waiter.connackNext = null;
    if (queue.tail === null) queue.head = waiter;
    else queue.tail.connackNext = waiter;
    queue.tail = waiter;
    this.count++;
    if (queue.cancel === null) this.arm(queue, timeoutMs);
  }

  /** Its server has answered, or it has ended: no longer waiting (idempotent). Its queue's timer stays armed. */
  remove(waiter: ConnackWaiter): void {
    const queue = waiter.connackQueue as Queue | null;
    if (queue === null) return;
    const prev = waiter.connackPrev;
    const next = waiter.connackNext;
    if (prev === null) queue.head = next;
    else prev.connackNext = next;
    if (next === null) queue.tail = prev;
    else next.connackPrev = prev;
    waiter.connackPrev = null;
    waiter.connackNext = null;
    waiter.connackQueue = null;
    this.count--;
  }

  /** Stop every timer and forget every session (idempotent): the process is stopping. */
  close(): void {
    for (const queue of this.queues.values()) {
      queue.cancel?.();
      queue.cancel = null;
      while (queue.head !== null) this.remove(queue.head);
    }
    this.queues.clear();
  }

  private arm(queue: Queue, delayMs: number): void {
    queue.cancel = this.schedule(() => this.expire(queue), Math.max(1, Math.ceil(delayMs)));
  }

  private expire(queue: Queue): void {
    queue.cancel = null;
    const now = this.now();
    let closed: ConnackWaiter[] | null = null;
    let head = queue.head;
    while (head !== null && head.connackDueAt <= now) {
      this.remove(head);
      if (head.connackOverdue()) (closed ??= []).push(head);
      head = queue.head;
    }
    if (head !== null) this.arm(queue, head.connackDueAt - now);
    if (closed !== null) this.closed(closed, queue.timeoutMs);
  }
}
