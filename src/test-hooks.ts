/**
 * Test seam, never on by default: with MQTT_LB_TEST_HOOKS=1, SIGUSR2 blocks this process's event loop for
 * 500 ms, as thousands of TLS handshakes would. Used to prove that the failover heartbeat (a worker thread)
 * does not starve and that the lag metric sees a blocked proxy worker.
 */
import type { Logger } from 'pino';

export const BLOCK_MS = 500;

export function installTestHooks(log: Logger): void {
  if (process.env['MQTT_LB_TEST_HOOKS'] !== '1') return;
  process.on('SIGUSR2', () => {
    log.warn({ blockMs: BLOCK_MS }, 'test hook: blocking the event loop for 500 ms');
    const until = Date.now() + BLOCK_MS;
    while (Date.now() < until);
  });
}
