import { afterEach } from 'vitest';
import { stopAllLbs } from './lb.js';

export type Cleanups = Array<() => Promise<void> | void>;

/**
 * A test file's list of cleanups (brokers, stand-ins, clients, temp files): after each test the balancers it started
 * are stopped, then these run, the last pushed first, each one even when another fails.
 */
export function cleanupsAfterEach(): Cleanups {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    await stopAllLbs();
    while (cleanups.length > 0) {
      try {
        await cleanups.pop()!();
      } catch {
        // keep cleaning up
      }
    }
  });
  return cleanups;
}
