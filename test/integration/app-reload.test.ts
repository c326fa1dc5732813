/**
 * Reload against stop, in process (App with a real mosquitto): a stop that begins while a reload binds wins,
 * so nothing the reload bound accepts during the drain; listeners a reload removed are forgotten once their
 * last session ends. (The CLI-level reload tests are in proxy.test.ts.)
 */
import net from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import type { LbConfig } from '../../src/config/types.js';
import { freePort, startMosquitto, type Broker } from '../helpers/mosquitto.js';
import { connectPacket } from '../helpers/raw-client.js';
import { sleep } from '../helpers/lb.js';

let broker: Broker;
beforeAll(async () => {
  broker = await startMosquitto();
});
afterAll(async () => {
  await broker?.stop();
});

function config(listeners: Array<{ name: string; port: number }>, admin: number, servers = ['m1']): LbConfig {
  const yaml = `listeners:
${listeners.map((l) => `  - name: ${l.name}\n    bind: 127.0.0.1:${l.port}\n    pool: brokers\n`).join('')}pools:
  brokers:
    servers:
${servers.map((name) => `      - name: ${name}\n        address: 127.0.0.1:${broker.port}\n`).join('')}    health:
      type: none
limits:
  drainTimeout: 3s
admin:
  bind: 127.0.0.1:${admin}
`;
  const out = parseConfig(yaml, '/tmp/lb.yaml');
  if (out.config === null) throw new Error(JSON.stringify(out.problems));
  return out.config;
}

/** 'accepts', or the connect error's code. */
function probe(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve('accepts');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** A session through `port` that stays open (CONNECT answered by mosquitto). */
async function session(port: number, clientId: string): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('error', () => {});
  await new Promise<void>((resolve) => s.once('connect', () => resolve()));
  const answered = new Promise<void>((resolve) => s.once('data', () => resolve()));
  s.write(connectPacket({ clientId }));
  await answered;
  return s;
}

/** Drains `server` of `pool` and expects `held`, the session on it, to be closed within 3 s. */
async function drainCloses(app: App, pool: string, server: string, held: net.Socket): Promise<void> {
  const closed = new Promise<void>((resolve) => held.once('close', () => resolve()));
  expect(app.setServerAdmin(pool, server, 'drain')).toBe(true);
  await Promise.race([closed, sleep(3000).then(() => Promise.reject(new Error('the drain did not close the session')))]);
}

describe('reload and stop in one process', () => {
  it('a stop that begins while a reload binds wins: nothing the reload bound or moved accepts during the drain', async () => {
    const [a, moved, movedTo, added, admin] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
    const app = new App(config([{ name: 'a', port: a }, { name: 'm', port: moved }], admin), pino({ level: 'silent' }));
    await app.start();
    const held = await session(a, 'held-through-stop');
    try {
      const reloading = app.reload(config([{ name: 'a', port: a }, { name: 'b', port: added }, { name: 'm', port: movedTo }], admin)).then(
        () => 'applied',
        (e: { code?: string }) => e.code ?? 'error',
      );
      const stopped = app.stop();
      expect(await reloading).toBe('MQLB_RELOAD_WHILE_STOPPING');
      await sleep(200);
      // Draining (the held session keeps the stop waiting): no listener accepts, old or new.
      expect([await probe(a), await probe(added), await probe(moved), await probe(movedTo)]).toEqual(['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED']);
      held.destroy();
      await stopped;
    } finally {
      held.destroy();
      await app.stop();
    }
  });

  it('a server removed by one reload and added by the next takes its sessions back: a drain closes them', async () => {
    const [a, admin] = [await freePort(), await freePort()];
    const app = new App(config([{ name: 'a', port: a }], admin, ['m1', 'm2']), pino({ level: 'silent' }));
    await app.start();
    const held = await session(a, 'through-remove-and-readd');
    try {
      const home = app.poolMap.get('brokers')!.servers.find((s) => s.sessions.size === 1)!;
      const other = home.name === 'm1' ? 'm2' : 'm1';
      await app.reload(config([{ name: 'a', port: a }], admin, [other]));
      expect(held.destroyed).toBe(false); // a reload never drops a session
      await app.reload(config([{ name: 'a', port: a }], admin, ['m1', 'm2']));
      const back = app.poolMap.get('brokers')!.servers.find((s) => s.name === home.name)!;
      expect(back.sessions.size).toBe(1);
      await drainCloses(app, 'brokers', home.name, held);
    } finally {
      held.destroy();
      await app.stop();
    }
  });

  it('a server removed from a pool, then the pool removed, then both added back: the session is reachable again', async () => {
    const [a, admin] = [await freePort(), await freePort()];
    // Listener on pool `main`; pool `side` (m1, m2) is what the reloads remove and re-add.
    const cfg = (side: string[] | null, listenerPool: string): LbConfig => {
      const pool = (name: string, servers: string[]) =>
        `  ${name}:\n    servers:\n${servers.map((n) => `      - name: ${n}\n        address: 127.0.0.1:${broker.port}\n`).join('')}    health:\n      type: none\n`;
      const out = parseConfig(
        `listeners:\n  - name: a\n    bind: 127.0.0.1:${a}\n    pool: ${listenerPool}\npools:\n${pool('main', ['m0'])}${side === null ? '' : pool('side', side)}admin:\n  bind: 127.0.0.1:${admin}\n`,
        '/tmp/lb.yaml',
      );
      if (out.config === null) throw new Error(JSON.stringify(out.problems));
      return out.config;
    };
    const app = new App(cfg(['m1', 'm2'], 'side'), pino({ level: 'silent' }));
    await app.start();
    const held = await session(a, 'through-pool-removal');
    try {
      const home = app.poolMap.get('side')!.servers.find((s) => s.sessions.size === 1)!;
      const other = home.name === 'm1' ? 'm2' : 'm1';
      await app.reload(cfg([other], 'main')); // the server goes, its session stays
      await app.reload(cfg(null, 'main')); // then the whole pool
      await app.reload(cfg(['m1', 'm2'], 'main'));
      const back = app.poolMap.get('side')!.servers.find((s) => s.name === home.name)!;
      expect(back.sessions.size).toBe(1);
      await drainCloses(app, 'side', home.name, held);
    } finally {
      held.destroy();
      await app.stop();
    }
  });

  it('a pool renamed by a reload while sessions run on it: they continue, and a warn line says they are out of view', async () => {
    const [a, admin] = [await freePort(), await freePort()];
    const cfg = (name: string): LbConfig => {
      const out = parseConfig(
        `listeners:\n  - name: a\n    bind: 127.0.0.1:${a}\n    pool: ${name}\npools:\n  ${name}:\n    servers:\n      - name: m1\n        address: 127.0.0.1:${broker.port}\n    health:\n      type: none\nadmin:\n  bind: 127.0.0.1:${admin}\n`,
        '/tmp/lb.yaml',
      );
      if (out.config === null) throw new Error(JSON.stringify(out.problems));
      return out.config;
    };
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const app = new App(cfg('p'), log);
    await app.start();
    const held = await session(a, 'through-a-pool-rename');
    try {
      await app.reload(cfg('q'));
      expect(lines.filter((l) => l.msg === 'pool removed while sessions run on it: they continue, out of the status, metrics and drains of any pool')).toEqual([
        expect.objectContaining({ level: 40, pool: 'p', sessions: 1 }),
      ]);
      expect(app.poolMap.get('q')!.servers[0]!.sessions.size).toBe(0); // what the status shows
      expect(held.destroyed).toBe(false);
      await app.reload(cfg('p')); // renamed back: in view again
      await drainCloses(app, 'p', 'm1', held);
    } finally {
      held.destroy();
      await app.stop();
    }
  });

  it('/readyz needs a server a CONNECT can be routed to: an up server of weight 0 is not one', async () => {
    const [a, admin] = [await freePort(), await freePort()];
    const app = new App(config([{ name: 'a', port: a }], admin), pino({ level: 'silent' }));
    await app.start();
    try {
      expect(app.ready()).toEqual({ ok: true });
      const only = app.poolMap.get('brokers')!.servers[0]!;
      only.config = { ...only.config, weight: 0 };
      expect(app.ready()).toEqual({ ok: false, reason: 'pool brokers has no server taking new sessions (every server up is drained, in maintenance or of weight 0)' });
      only.config = { ...only.config, weight: 1 };
      app.setServerAdmin('brokers', only.name, 'drain');
      expect(app.ready()).toMatchObject({ ok: false });
      app.setServerAdmin('brokers', only.name, 'ready');
      only.setHealth('down');
      expect(app.ready()).toEqual({ ok: false, reason: 'pool brokers has no server up' });
      app.setServerAdmin('brokers', only.name, 'maint');
      expect(app.ready()).toEqual({ ok: false, reason: `pool brokers has no server up (in maintenance: ${only.name})` });
    } finally {
      await app.stop();
    }
  });

  // An ops audit: turned on by a reload, probes put every server held up by `none` to unknown without a line, and
  // the next one read `from: unknown`.
  it('health checks turned on by a reload: each server held up is said to be unknown until its first probe, then up', async () => {
    const [a, admin] = [await freePort(), await freePort()];
    const lines: Array<Record<string, unknown>> = [];
    const sink = { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) };
    const app = new App(config([{ name: 'a', port: a }], admin), pino({ level: 'info' }, sink));
    await app.start();
    try {
      const probed = config([{ name: 'a', port: a }], admin);
      const next = { ...probed, pools: { brokers: { ...probed.pools.brokers!, health: { ...probed.pools.brokers!.health, type: 'tcp' as const } } } };
      await app.reload(next);
      const changes = async () => lines.filter((l) => l.msg === 'server state changed' && l.server === 'm1').map((l) => `${String(l.from)}>${String(l.to)}`);
      for (let i = 0; i < 100 && !(await changes()).includes('unknown>up'); i++) await sleep(20);
      expect(await changes()).toEqual(['up>unknown', 'unknown>up']);
      expect(lines.find((l) => l.msg === 'server state changed' && l.to === 'unknown')).toMatchObject({ pool: 'brokers', detail: 'health checks enabled: its first probe decides' });
    } finally {
      await app.stop();
    }
  });

  it('a listener removed by a reload keeps its sessions in view until they end, then is forgotten', async () => {
    const [a, b, admin] = [await freePort(), await freePort(), await freePort()];
    const app = new App(config([{ name: 'a', port: a }, { name: 'b', port: b }], admin), pino({ level: 'silent' }));
    await app.start();
    try {
      const onB = await session(b, 'on-removed-listener');
      await app.reload(config([{ name: 'a', port: a }], admin));
      expect(app.retiredListenerCount).toBe(1);
      expect(await probe(b)).toBe('ECONNREFUSED');
      const closed = new Promise<void>((resolve) => onB.once('close', () => resolve()));
      onB.end();
      await closed;
      const until = Date.now() + 5000;
      while (app.retiredListenerCount > 0 && Date.now() < until) await sleep(20);
      expect(app.retiredListenerCount).toBe(0);
    } finally {
      await app.stop();
    }
  });
});
