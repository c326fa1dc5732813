/**
 * Helpers for tests with several real mosquitto brokers behind one or more LBs: start N brokers, tag each
 * with a retained `lbtest/whoami` message naming it, and ask "which broker did this client reach?".
 */
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';
import { startMosquitto, type Broker } from './mosquitto.js';

export interface NamedBroker extends Broker {
  name: string;
}

export async function startBrokers(names: string[]): Promise<NamedBroker[]> {
  const out: NamedBroker[] = [];
  try {
    for (const name of names) {
      const b = (await startMosquitto()) as NamedBroker;
      b.name = name;
      out.push(b);
      await tagBroker(b);
    }
  } catch (err) {
    await Promise.all(out.map((b) => b.stop()));
    throw err;
  }
  return out;
}

/** Publish a retained message naming the broker, directly (not through the LB). */
export async function tagBroker(b: NamedBroker): Promise<void> {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${b.port}`, { clientId: `tagger-${b.name}`, reconnectPeriod: 0, connectTimeout: 5000 });
  await c.publishAsync('lbtest/whoami', b.name, { retain: true, qos: 1 });
  await c.endAsync();
}

export async function connectVia(port: number, opts: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
}

/** Which broker does a client reach through the LB: read the retained whoami tag. */
export async function whichBroker(client: MqttClient, timeoutMs = 5000): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no whoami message')), timeoutMs);
    const onMessage = (topic: string, payload: Buffer): void => {
      if (topic !== 'lbtest/whoami') return;
      clearTimeout(t);
      client.removeListener('message', onMessage);
      void client.unsubscribeAsync('lbtest/whoami').finally(() => resolve(payload.toString()));
    };
    client.on('message', onMessage);
    client.subscribe('lbtest/whoami', { qos: 0 }, (err) => {
      if (err) {
        clearTimeout(t);
        reject(err);
      }
    });
  });
}

/** The first of `${prefix}0` .. `${prefix}39` that the LB on `port` sends to `broker` (asked one by one); throws if none. */
export async function clientIdOn(port: number, broker: string, prefix: string): Promise<string> {
  for (let i = 0; i < 40; i++) if ((await brokerFor(port, `${prefix}${i}`)) === broker) return `${prefix}${i}`;
  throw new Error(`none of ${prefix}0..39 goes to ${broker}`);
}

/** Connect with a client ID, ask which broker, disconnect. */
export async function brokerFor(port: number, clientId: string, opts: IClientOptions = {}): Promise<string> {
  const c = await connectVia(port, { clientId, ...opts });
  try {
    return await whichBroker(c);
  } finally {
    await c.endAsync(true);
  }
}
