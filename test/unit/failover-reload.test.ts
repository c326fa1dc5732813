import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { FailoverConfig } from '../../src/config/types.js';
import { failoverChanges } from '../../src/failover/reload.js';

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

describe('failoverChanges', () => {
  it('names the keys a reloaded file would change, none when it is the same', () => {
    const running = failover(BASE);
    expect(failoverChanges(running, failover(BASE))).toEqual([]);
    expect(failoverChanges(running, failover(BASE.replace('priority: 150', 'priority: 200')))).toEqual(['failover.instances']);
    expect(failoverChanges(running, failover(BASE.replace('192.0.2.10/24', '192.0.2.11/24')))).toEqual(['failover.instances']);
    expect(failoverChanges(running, failover(`${BASE}  track: { pools: { weight: 0 } }\n`))).toEqual(['failover.track']);
    expect(failoverChanges(running, failover(BASE.replace('10.0.0.2', '10.0.0.3') + '  advertInterval: 1s\n'))).toEqual(['failover.peers', 'failover.advertInterval']);
  });

  it('a section added or removed is `failover`', () => {
    const without = BASE.slice(0, BASE.indexOf('failover:'));
    expect(failoverChanges(failover(BASE), failover(without))).toEqual(['failover']);
    expect(failoverChanges(null, failover(BASE))).toEqual(['failover']);
    expect(failoverChanges(null, null)).toEqual([]);
  });
});
