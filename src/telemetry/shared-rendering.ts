/**
 * An admin answer that costs real CPU to build (/metrics: collect and render every series; /api/status), built at
 * a bounded share of the event loop however many requests ask for it, so that no stream of them can take the loop
 * from the sessions and the health checks. Measured before: 3,000 GET /metrics pipelined on one connection (126 KB,
 * one write) were rendered back to back, ~1.6 ms each with 6 servers (10-50 ms with 50): the proxy stalled ~5 s,
 * and probes with a 300 ms timeout marked every server down.
 *
 * Every answer is still read at request time (built after the request arrived), but:
 * - requests that arrive before a build starts share it;
 * - after a build, the next one (of either answer: they share a RenderBudget) waits until IDLE_FACTOR times its
 *   duration has passed (at most MAX_WAIT_MS), so building takes at most ~1/(1 + IDLE_FACTOR) of the loop (the
 *   duration is wall time: awaits inside a build count too). A scraper or the status page, seconds apart, never
 *   waits; a flood waits, not the sessions.
 */
import { performance } from 'node:perf_hooks';

export const IDLE_FACTOR = 10;
export const MAX_WAIT_MS = 1000;

/** The earliest start of the next build, shared by the renderings of one admin server (one budget for all). */
export class RenderBudget {
  readyAt = -Infinity;
}

export class SharedRendering<T> {
  /** The build that has started (requests arriving now need the next one). */
  private current: Promise<T> | null = null;
  /** The next build, not started yet: joined by every request until it starts. */
  private next: Promise<T> | null = null;

  constructor(
    private readonly build: () => T | Promise<T>,
    private readonly now: () => number = () => performance.now(),
    private readonly budget: RenderBudget = new RenderBudget(),
  ) {}

  get(): Promise<T> {
    if (this.next !== null) return this.next;
    const previous = this.current;
    const next = (previous === null ? Promise.resolve() : previous.then(noop, noop)).then(() => this.waitForBudget()).then(() => this.start());
    this.next = next;
    return next;
  }

  private waitForBudget(): Promise<void> {
    const wait = this.budget.readyAt - this.now();
    return wait <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, Math.min(wait, MAX_WAIT_MS)));
  }

  private start(): Promise<T> {
    this.next = null;
    const startedAt = this.now();
    const current = Promise.resolve()
      .then(() => this.build())
      .finally(() => {
        const took = this.now() - startedAt;
        this.budget.readyAt = this.now() + Math.min(MAX_WAIT_MS, took * IDLE_FACTOR);
        this.current = null;
      });
    this.current = current;
    return current;
  }
}

function noop(): void {}
