/**
 * Embedded demo brokers for `npm start` on a machine with no broker installed: one aedes broker per
 * loopback server of the demo config, all sharing one message bus and one store, so they behave as a
 * small cluster (a subscriber on one and a publisher on the other exchange messages; retained messages
 * and session take-over are cluster-wide). aedes 1.2 speaks MQTT 3.1 and 3.1.1 only, not MQTT 5.
 *
 * aedes is a devDependency: this module is only loaded by the demo launcher, never by `mqtt-lb` itself.
 */
import net from 'node:net';
import { Aedes } from 'aedes';

export interface DemoCluster {
  ports: number[];
  close(): Promise<void>;
}

export async function startDemoCluster(addresses: Array<{ host: string; port: number }>): Promise<DemoCluster> {
  const first = await Aedes.createBroker({ id: 'demo-0' });
  const brokers: Aedes[] = [first];
  for (let i = 1; i < addresses.length; i++) {
    brokers.push(await Aedes.createBroker({ id: `demo-${i}`, mq: (first as unknown as { mq: unknown }).mq, persistence: (first as unknown as { persistence: unknown }).persistence }));
  }
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < addresses.length; i++) {
      const broker = brokers[i]!;
      const server = net.createServer((socket) => broker.handle(socket));
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(addresses[i]!.port, addresses[i]!.host, () => resolve());
      });
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  return {
    ports: addresses.map((a) => a.port),
    async close() {
      for (const s of servers) s.close();
      // Shared mq/persistence: close the secondaries first.
      for (const b of brokers.slice(1).reverse()) await new Promise<void>((r) => b.close(() => r()));
      await new Promise<void>((r) => first.close(() => r()));
    },
  };
}
