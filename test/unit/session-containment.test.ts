/**
 * Reliability case 37: a CONNECT scanner that throws (a bug of ours on hostile input) must cost that one
 * client, never the process. The scanner is replaced by one that throws for one client ID; the session is
 * driven through a stand-in socket (the session only needs the ProxySocket interface).
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it, vi } from 'vitest';
import pino from 'pino';
import { Writable } from 'node:stream';
import { ListenerStats, type ProxyContext } from '../../src/proxy/context.js';
import { VerdictWaits } from '../../src/proxy/verdict-wait.js';
import { ConnackDeadlines } from '../../src/proxy/connack-deadlines.js';
import type { ProxySocket } from '../../src/proxy/proxy-socket.js';
import { connectPacket } from '../helpers/raw-client.js';

vi.mock('../../src/proxy/connect-scanner.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/proxy/connect-scanner.js')>();
  return {
    ...real,
    scanConnect: (buf: Buffer, max: number) => {
      if (buf.includes(Buffer.from('poison'))) throw new TypeError('scanner bug');
      return real.scanConnect(buf, max);
    },
  };
});

const { ClientSession } = await import('../../src/proxy/session.js');

class StandInSocket extends EventEmitter implements ProxySocket {
  destroyed = false;
  bytesRead = 0;
  writableLength = 0;
  allowHalfOpen = false;
  remoteAddress = '192.0.2.7';
  remotePort = 40000;
  written: Buffer[] = [];
  write(data: Buffer): boolean {
    this.written.push(data);
    return true;
  }
  end(data?: Buffer): this {
    if (data !== undefined) this.written.push(data);
    return this;
  }
  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true;
      setImmediate(() => this.emit('close', false));
    }
    return this;
  }
  resetAndDestroy(): this {
    return this.destroy();
  }
  setKeepAlive(): this {
    return this;
  }
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
}

function rig() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  const ctx: ProxyContext = {
    log: pino({ level: 'debug' }, sink),
    limits: { clientConnectTimeout: 5000, maxConnectBytes: 65536, maxConnections: 100, acceptRate: 0, acceptQueue: 0, drainTimeout: 0, idleTimeout: 0, perSource: { maxConnections: 0, connectRate: 0, exempt: [] }, maxMemory: 0, maxPendingConnectBytes: 67_108_864 },
    logSessions: false,
    pool: () => undefined,
    totalActive: 0,
    totalAdmitted: 0,
    maxConnections: 100,
    descriptorRoom: Number.POSITIVE_INFINITY,
    overloaded: false,
    pendingConnectBytes: 0,
    onPendingConnectBytesFull: () => {},
    connectGrowthBudget: Number.POSITIVE_INFINITY,
    remeasureConnectGrowthBudget: () => true,
    onServerConnected: () => {},
    onDialFailure: () => {},
    onServerSilent: () => {},
    verdictWaits: new VerdictWaits(),
    connackDeadlines: new ConnackDeadlines(() => {}),
    poolPendingUntil: () => 0,
  };
  const ended: unknown[] = [];
  const listener = { stats: new ListenerStats('mqtt', '127.0.0.1:1883', false), poolName: 'brokers', ctx, maxConnections: 100, refuseWith: 'connack' as const, evictWith: 'disconnect' as const, proxyHeader: () => null, sessionEnded: (s: unknown) => ended.push(s), readingConnect: new Set<InstanceType<typeof ClientSession>>() };
  return { lines, listener, ended };
}

describe('a CONNECT scanner that throws', () => {
  it('closes that client as malformed and logs the error; the next client is read as usual', async () => {
    const { lines, listener, ended } = rig();
    const bad = new StandInSocket();
    const session = new ClientSession(bad, listener, performance.now());
    expect(() => bad.emit('data', connectPacket({ clientId: 'poison' }))).not.toThrow();
    expect(bad.destroyed).toBe(true);
    expect(session.closed).toBe(true);
    expect(listener.stats.rejected.get('malformed')).toBe(1);
    expect(lines.find((l) => l.msg === 'CONNECT scanner failed: client closed')).toMatchObject({ level: 50, client: '192.0.2.7', err: { message: 'scanner bug' } });
    await new Promise((r) => setImmediate(r));
    expect(ended).toEqual([session]);

    // Another client: read and routed as usual (no pool here, so refused "no server" with a CONNACK).
    const good = new StandInSocket();
    new ClientSession(good, listener, performance.now());
    good.emit('data', connectPacket({ clientId: 'fine' }));
    expect(listener.stats.rejected.get('no_server')).toBe(1);
    expect(Buffer.concat(good.written)).toEqual(Buffer.from([0x20, 0x02, 0x00, 0x03]));
    good.destroy();
  });
});
