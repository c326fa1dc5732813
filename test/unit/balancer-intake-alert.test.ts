import { describe, expect, it } from 'vitest';
import { IntakeAlert } from '../../src/balancer/intake-alert.js';

const NO_INTAKE_MSG = 'pool takes no new sessions: its clients are refused (CONNACK server unavailable)';
import type { Server } from '../../src/balancer/server.js';
import { logSink, makeServer } from './health-fixtures.js';

function setup(names = ['b1', 'b2']) {
  const { log, lines } = logSink();
  const alert = new IntakeAlert(log);
  const servers = names.map((n) => makeServer(n, 'up'));
  const pool = { name: 'brokers', servers };
  const alerts = () => lines.filter((l) => l.msg === NO_INTAKE_MSG);
  return { alert, servers, pool, alerts, lines };
}

describe('IntakeAlert: a pool whose servers are up but take no new session', () => {
  it('drain b1, then b2 dies: one error line per outage, with what holds the servers up back; its end said', () => {
    const { alert, servers, pool, alerts, lines } = setup();
    const [b1, b2] = servers as [Server, Server];
    alert.check([pool]);
    b1.setAdmin('drain');
    alert.check([pool]);
    expect(alerts()).toHaveLength(0); // b2 takes the sessions
    b2.setHealth('down');
    alert.check([pool]);
    alert.check([pool]);
    expect(alerts()).toHaveLength(1);
    expect(alerts()[0]).toMatchObject({ level: 50, pool: 'brokers', drained: ['b1'], maint: [], weight0: [] });
    b2.setHealth('up'); // over, and said
    alert.check([pool]);
    alert.check([pool]);
    expect(lines.filter((l) => l.msg === 'pool takes new sessions again: its clients are served')).toMatchObject([{ level: 30, pool: 'brokers' }]);
    b2.setHealth('down'); // a second outage
    alert.check([pool]);
    expect(alerts()).toHaveLength(2);
  });

  it('leaves a pool with no server up to the health checker (`pool has no server up`) once it has said so, maint included', () => {
    const { alert, servers, pool, alerts } = setup();
    const [b1, b2] = servers as [Server, Server];
    b1.setAdmin('maint');
    b1.setHealth('unknown'); // as the checker does: not probed in maintenance
    b2.setHealth('down'); // the last server up found down by a probe: the checker's line is out
    alert.check([pool], () => true);
    expect(alerts()).toHaveLength(0);
    b2.setAdmin('maint'); // and then in maintenance too: still the same outage, said once
    alert.check([pool], () => true);
    expect(alerts()).toHaveLength(0);
  });

  it('says it when maintenance alone closes the pool, which no probe sees: every server, or the last one up', () => {
    const all = setup();
    for (const s of all.servers) {
      s.setAdmin('maint');
      s.setHealth('unknown');
    }
    all.alert.check([all.pool], () => false);
    expect(all.alerts()).toHaveLength(1);
    expect(all.alerts()[0]).toMatchObject({ pool: 'brokers', drained: [], maint: ['b1', 'b2'], weight0: [] });
    // b2 died while b1 served (no line: b1 was up), then b1 is put in maintenance.
    const last = setup();
    const [b1, b2] = last.servers as [Server, Server];
    b2.setHealth('down');
    last.alert.check([last.pool], () => false);
    expect(last.alerts()).toHaveLength(0);
    b1.setAdmin('maint');
    b1.setHealth('unknown');
    last.alert.check([last.pool], () => false);
    last.alert.check([last.pool], () => false);
    expect(last.alerts()).toHaveLength(1);
    expect(last.alerts()[0]).toMatchObject({ maint: ['b1'] });
  });

  it('names servers in maintenance, and ready servers of weight 0', () => {
    const { alert, servers, pool, alerts } = setup(['b1', 'b2', 'b3']);
    const [b1, b2, b3] = servers as [Server, Server, Server];
    b1.setAdmin('maint');
    b1.setHealth('unknown');
    b2.setAdmin('drain');
    (b3.config as { weight: number }).weight = 0;
    alert.check([pool]);
    expect(alerts()).toHaveLength(1);
    expect(alerts()[0]).toMatchObject({ drained: ['b2'], maint: ['b1'], weight0: ['b3'] });
  });

  it('a pool gone from the served list starts afresh when it comes back', () => {
    const { alert, servers, pool, alerts } = setup(['b1']);
    servers[0]!.setAdmin('drain');
    alert.check([pool]);
    alert.check([]);
    alert.check([pool]);
    expect(alerts()).toHaveLength(2);
  });
});
