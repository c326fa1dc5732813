import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { FailoverConfig } from '../../src/config/types.js';
import { planFailoverReload } from '../../src/failover/reload.js';

const BASE = `listeners:
  - name: mqtt
    bind: 0.0.0.0:1883
    pool: brokers
pools:
  brokers:
    servers:
      - name: b1
        address: 127.0.0.1:1884
failover:
  interface: eth0
  peers: [10.0.0.2]
  authKeyFile: /etc/mqtt-lb/failover.key
  priority: 150
  vips: [192.0.2.10/24]
`;

function failover(text: string): FailoverConfig | null {
  const out = parseConfig(text, 'lb.yaml');
  expect(out.problems ?? []).toEqual([]);
  return out.config!.failover;
}

describe('planFailoverReload', () => {
  it('applies priorities, preempt, preemptDelay, track, garp and notify; the rest waits for a restart', () => {
    const running = failover(BASE)!;
    expect(planFailoverReload(running, failover(BASE))).toEqual({ next: running, applied: [], restartOnly: [] });
    const prio = planFailoverReload(running, failover(BASE.replace('priority: 150', 'priority: 50')));
    expect(prio.applied).toEqual(['failover.priority']);
    expect(prio.restartOnly).toEqual([]);
    expect(prio.next!.instances[0]!.priority).toBe(50);
    expect(prio.next!.instances[0]!.vips).toEqual(['192.0.2.10/24']);
    const live = planFailoverReload(running, failover(`${BASE}  preempt: false\n  preemptDelay: 5s\n  track: { pools: { weight: 0 } }\n  garp: { count: 2 }\n`));
    expect(live.applied).toEqual(['failover.preempt', 'failover.preemptDelay', 'failover.track', 'failover.garp']);
    expect(live.next).toMatchObject({ preempt: false, preemptDelay: 5000, track: { pools: { weight: 0 } }, garp: { count: 2 } });
    // Track scripts are part of `track`: added, changed or removed by a reload.
    const scripts = planFailoverReload(running, failover(`${BASE}  track:\n    scripts: [{ name: gw, command: /bin/true, weight: 30 }]\n`));
    expect(scripts.applied).toEqual(['failover.track']);
    expect(scripts.next!.track.scripts).toMatchObject([{ name: 'gw', command: '/bin/true', weight: 30 }]);
    // What needs a restart stays as it runs in `next`, and is named.
    const both = planFailoverReload(running, failover(BASE.replace('10.0.0.2', '10.0.0.3').replace('priority: 150', 'priority: 200') + '  advertInterval: 1s\n'));
    expect(both.applied).toEqual(['failover.priority']);
    expect(both.restartOnly).toEqual(['failover.peers', 'failover.advertInterval']);
    expect(both.next).toMatchObject({ peers: ['10.0.0.2'], advertInterval: 100 });
    expect(both.next!.instances[0]!.priority).toBe(200);
  });

  it('other VIPs, or instances added or removed, need a restart; the priorities of the instances that stay still apply', () => {
    const running = failover(BASE)!;
    const vips = planFailoverReload(running, failover(BASE.replace('192.0.2.10/24', '192.0.2.11/24').replace('priority: 150', 'priority: 120')));
    expect(vips.applied).toEqual(['failover.priority']);
    expect(vips.restartOnly).toEqual(['failover.instances']);
    expect(vips.next!.instances).toEqual([{ routerId: 51, priority: 120, vips: ['192.0.2.10/24'] }]);
    const two = BASE.replace('  priority: 150\n  vips: [192.0.2.10/24]\n', '  instances:\n    - { routerId: 51, priority: 150, vips: [192.0.2.10/24] }\n    - { routerId: 52, priority: 100, vips: [192.0.2.20/24] }\n');
    const added = planFailoverReload(running, failover(two));
    expect(added.restartOnly).toEqual(['failover.instances']);
    expect(added.next!.instances).toEqual(running.instances);
    const removed = planFailoverReload(failover(two)!, failover(BASE.replace('priority: 150', 'priority: 90')));
    expect(removed.restartOnly).toEqual(['failover.instances']);
    expect(removed.next!.instances.map((i) => [i.routerId, i.priority])).toEqual([[51, 90], [52, 100]]);
  });

  it('a section added or removed is `failover`, applied by a restart only', () => {
    const without = BASE.slice(0, BASE.indexOf('failover:'));
    expect(planFailoverReload(failover(BASE), failover(without)).restartOnly).toEqual(['failover']);
    expect(planFailoverReload(null, failover(BASE))).toEqual({ next: null, applied: [], restartOnly: ['failover'] });
    expect(planFailoverReload(null, null)).toEqual({ next: null, applied: [], restartOnly: [] });
  });
});
