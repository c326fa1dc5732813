/**
 * Servers given by host name (`address: localhost:PORT`): the sessions' dials resolve the name through
 * src/proxy/server-name-cache.ts (one lookup shared by the dials that arrive together, then an answer reused
 * for a second), on both socket engines: HandleSocket's `resolve`, and net.connect's `lookup` adapter.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { brokerFor, startBrokers, type NamedBroker } from '../helpers/cluster.js';
import { lbYaml } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { startLb, stopAllLbs, sleep, SOCKET_ENGINES, socketEngineOf } from '../helpers/lb.js';

describe.each(SOCKET_ENGINES)('servers by host name ($engine sockets)', ({ engine, env }) => {
  let brokers: NamedBroker[] = [];
  afterAll(async () => {
    await stopAllLbs();
    await Promise.all(brokers.map((b) => b.stop()));
  });

  it('clients that arrive together, and later ones, reach the brokers behind `localhost:PORT`, sticky by client ID', async () => {
    brokers = await startBrokers(['n1', 'n2']);
    const [port, admin] = [await freePort(), await freePort()];
    const yaml = lbYaml({ port, admin, servers: brokers.map((b) => ({ name: b.name, port: b.port })), health: { type: 'tcp', interval: '1s' } });
    const byName = yaml.replaceAll('address: 127.0.0.1:', 'address: localhost:');
    expect(byName).toContain(`address: localhost:${brokers[1]!.port}`);
    const lb = await startLb(byName, { waitReady: `http://127.0.0.1:${admin}/readyz`, env });
    expect(await socketEngineOf(lb)).toBe(engine);

    const ids = Array.from({ length: 40 }, (_, i) => `named-${i}`);
    const first = await Promise.all(ids.map((id) => brokerFor(port, id)));
    expect(new Set(first)).toEqual(new Set(['n1', 'n2']));
    // Past the answer's first second (refreshed in the background while it is used): the same brokers.
    await sleep(1200);
    const again = await Promise.all(ids.map((id) => brokerFor(port, id)));
    expect(again).toEqual(first);
  });
});
