/**
 * `listeners[].refuseWith: close`: a client refused for want of a server (or of room) gets a close without a CONNACK,
 * as behind HAProxy. Why it exists: mqtt.js 5 stops reconnecting for good on any CONNACK refusal unless the client
 * sets `reconnectOnConnackError` (an audit saw a whole fleet stay away after every broker was down for a moment),
 * while on a plain close it reconnects. Through the BUILT mqtt-lb, against a broker port nobody listens on.
 */
import mqtt from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { afterAll, describe, expect, it } from 'vitest';
import { lbYaml } from '../helpers/lb-config.js';
import { startLb, stopAllLbs, type LbProcess } from '../helpers/lb.js';
import { freePort } from '../helpers/mosquitto.js';
import { connectPacket, exchange, parsePackets } from '../helpers/raw-client.js';

afterAll(async () => {
  await stopAllLbs();
});

/** Two listeners, `mqtt` with `refuseWith: close` and `answering` with the default, before one server that is down. */
async function lbWithNoServerUp(): Promise<{ lb: LbProcess; closePort: number; connackPort: number; admin: number }> {
  const [closePort, connackPort, admin, dead] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const lb = await startLb(
    lbYaml({
      listeners: [
        { port: closePort, extra: '    refuseWith: close\n' },
        { name: 'answering', port: connackPort },
      ],
      admin,
      servers: [{ name: 'dead', port: dead }],
      health: { type: 'tcp', interval: '200ms', timeout: '100ms', rise: 1, fall: 1 },
      log: '  level: debug\n',
    }),
    { waitPort: closePort },
  );
  await lb.waitForLog((l) => l.msg === 'server state changed' && l.to === 'down');
  return { lb, closePort, connackPort, admin };
}

describe('refuseWith: close', () => {
  it('no server up: a close without a CONNACK (a FIN, not a reset), counted as no_server; a protocol level we do not speak is still answered', async () => {
    const { lb, closePort: port, connackPort, admin } = await lbWithNoServerUp();
    const sub = mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 0 }] } as mqttPacket.ISubscribePacket);
    for (const protocolVersion of [3, 4, 5] as const) {
      const got = await exchange(port, [Buffer.concat([connectPacket({ clientId: `c${protocolVersion}`, protocolVersion }), sub])], { waitMs: 2000 });
      expect(got.data.length, `level ${protocolVersion}`).toBe(0);
      expect(got.closed, `level ${protocolVersion}`).toBe(true);
      expect(got.error, `level ${protocolVersion}`).toBeNull();
    }
    // The other listener keeps the default: the CONNACK.
    const answered = await exchange(connackPort, [connectPacket({ clientId: 'told', protocolVersion: 5 })], { waitMs: 2000 });
    expect(parsePackets(answered.data, 5)[0]).toMatchObject({ cmd: 'connack', reasonCode: 0x88 });
    // Level 6 under the name MQTT: "unacceptable protocol version" [MQTT-3.1.2-2], whatever refuseWith says.
    const level6 = connectPacket({ clientId: 'future' });
    expect(level6[8]).toBe(4);
    level6[8] = 6;
    const badLevel = await exchange(port, [level6], { waitMs: 2000 });
    expect([...badLevel.data]).toEqual([0x20, 0x02, 0x00, 0x01]);
    // The debug line says who was refused, and how (the client ID: a refused client is found by it).
    expect(lb.logs.find((l) => l.msg === 'connect refused' && l.clientId === 'c5')).toMatchObject({ listener: 'mqtt', reason: 'no_server', connack: false });
    expect(lb.logs.find((l) => l.msg === 'connect refused' && l.clientId === 'told')).toMatchObject({ listener: 'answering', reason: 'no_server', connack: true });
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    expect(metrics).toMatch(/mqtt_lb_connect_rejected_total\{listener="mqtt",reason="no_server"\} 3/);
    expect(metrics).toMatch(/mqtt_lb_connect_rejected_total\{listener="answering",reason="no_server"\} 1/);
    await lb.stop();
  });

  it('an mqtt.js client with its default options keeps reconnecting while refused with a close (with a CONNACK refusal it stops for good)', async () => {
    const { lb, closePort, connackPort } = await lbWithNoServerUp();
    const watch = async (port: number): Promise<{ reconnects: number; refusals: number }> => {
      const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: `fleet-${port}`, reconnectPeriod: 100, connectTimeout: 1000 });
      const seen = { reconnects: 0, refusals: 0 };
      client.on('reconnect', () => seen.reconnects++);
      client.on('error', () => seen.refusals++);
      await new Promise((r) => setTimeout(r, 1500));
      client.end(true);
      return seen;
    };
    const [closing, answering] = await Promise.all([watch(closePort), watch(connackPort)]);
    console.log(`[refuseWith] mqtt.js in 1.5 s: close -> ${closing.reconnects} reconnects; connack -> ${answering.reconnects} reconnects, ${answering.refusals} refusal errors`);
    expect(closing.reconnects).toBeGreaterThanOrEqual(3);
    expect(closing.refusals).toBe(0);
    // The behaviour that makes `close` worth having (mqtt.js 5's default): one refusal, then silence.
    expect(answering.refusals).toBe(1);
    expect(answering.reconnects).toBe(0);
    await lb.stop();
  });
});
