/**
 * What a reload says of the new file, as a start says it: with `workers`, a cap below the worker count (each worker
 * takes at least one, so the balancer admits more than the cap). A workers audit lowered a cap to 1 by SIGHUP:
 * two sessions were admitted and the log said nothing, where a start with that file warned.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { delayedBroker } from '../helpers/delayed-broker.js';
import { lbYaml } from '../helpers/lb-config.js';
import { startLb, stopAllLbs } from '../helpers/lb.js';
import { freePort } from '../helpers/mosquitto.js';

describe('a reload with workers', () => {
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    await stopAllLbs();
    for (const c of closers.splice(0)) await c();
  });

  it('warns of a cap the new file sets below the worker count, as a start does', async () => {
    const broker = await delayedBroker(0);
    closers.push(() => broker.close());
    const [port, admin] = [await freePort(), await freePort()];
    const base = { port, admin, servers: [{ name: 'b1', port: broker.port }], health: { type: 'tcp' as const, interval: '1s', timeout: '500ms' }, extra: 'workers: 2\n' };
    const lb = await startLb(lbYaml(base), { waitReady: `http://127.0.0.1:${admin}/readyz` });
    const mark = lb.logs.length;
    lb.writeConfig(lbYaml({ ...base, limits: '  maxConnections: 1\n' }));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded', 10_000);
    const warnings = lb.logs.slice(mark).filter((l) => l.msg === 'config warning').map((l) => String(l.detail));
    expect(warnings).toContain('limits.maxConnections 1 is below workers (2): each worker takes at least 1, so up to 2 in all');
    // `workers` needs a restart: the cores are not said again.
    expect(warnings.filter((w) => w.includes('cores'))).toEqual([]);
  }, 30_000);
});
