/**
 * admin.stateFile end to end: the BUILT mqtt-lb keeps the servers' admin states across a restart, in front of real
 * mosquitto brokers (docs/configuration.md `admin.stateFile`, operations.md "Draining a broker for maintenance").
 * Run alone after `npx tsc -p .` (the LB runs from dist/).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cleanupsAfterEach } from '../helpers/cleanups.js';
import { brokerFor, startBrokers, type NamedBroker } from '../helpers/cluster.js';
import { startLb, type LbProcess } from '../helpers/lb.js';
import { serverAction } from '../helpers/server-state.js';
import { lbYaml, type HealthSpec } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';

const HEALTH: HealthSpec = { type: 'mqtt', interval: '300ms', timeout: '250ms', rise: 2, fall: 2 };

const cleanups = cleanupsAfterEach();

interface StatusServer {
  name: string;
  state: string;
  admin: string;
  lastCheck: { result: string } | null;
}

async function statusServers(admin: number): Promise<Record<string, StatusServer>> {
  const r = await fetch(`http://127.0.0.1:${admin}/api/status`, { signal: AbortSignal.timeout(2000) });
  const doc = (await r.json()) as { pools: Array<{ name: string; servers: StatusServer[] }> };
  return Object.fromEntries(doc.pools.find((p) => p.name === 'brokers')!.servers.map((s) => [s.name, s]));
}

describe('admin.stateFile', () => {
  async function setUp(): Promise<{ brokers: NamedBroker[]; yaml: string; port: number; admin: number; stateFile: string }> {
    const brokers = await startBrokers(['b1', 'b2', 'b3']);
    cleanups.push(() => Promise.all(brokers.map((b) => b.stop())).then(() => undefined));
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-admin-state-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const stateFile = path.join(dir, 'admin-state.json');
    const port = await freePort();
    const admin = await freePort();
    const yaml = lbYaml({ port, admin, servers: brokers.map((b) => ({ name: b.name, port: b.port })), health: HEALTH, adminStateFile: stateFile });
    return { brokers, yaml, port, admin, stateFile };
  }

  const start = (yaml: string, admin: number): Promise<LbProcess> => startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });

  it('keeps drain and maint across a restart: restored before the first health checks, the clients of those servers placed elsewhere', async () => {
    const { yaml, port, admin, stateFile } = await setUp();
    const first = await start(yaml, admin);
    // One client ID that b1 wins and one that b2 wins (HRW: each server wins about a third).
    const idOf: Record<string, string> = {};
    for (let i = 0; i < 60 && (idOf['b1'] === undefined || idOf['b2'] === undefined); i++) {
      const id = `state-file-${i}`;
      idOf[await brokerFor(port, id)] ??= id;
    }
    expect(idOf['b1']).toBeDefined();
    expect(idOf['b2']).toBeDefined();

    await serverAction(admin, 'b1', 'drain');
    await serverAction(admin, 'b2', 'maint');
    await serverAction(admin, 'b2', 'maint'); // the same again: said as no change
    expect(first.logs.filter((l) => l['msg'] === 'server admin state set').map((l) => [l['server'], l['admin'], l['was']])).toEqual([
      ['b1', 'drain', 'ready'],
      ['b2', 'maint', 'ready'],
      ['b2', 'maint', 'maint'],
    ]);
    expect(JSON.parse(readFileSync(stateFile, 'utf8'))).toEqual({
      version: 1,
      servers: [
        { pool: 'brokers', server: 'b1', admin: 'drain' },
        { pool: 'brokers', server: 'b2', admin: 'maint' },
      ],
    });
    expect(await first.stop()).toBe(0);

    const second = await start(yaml, admin);
    const restored = second.logs.find((l) => l['msg'] === 'server admin states restored');
    expect(restored).toMatchObject({ level: 30, file: stateFile, servers: ['brokers/b1: drain', 'brokers/b2: maint'] });
    // Restored before the first health checks: the first-verdicts line counts b2 nowhere, and b2 was never probed.
    const firstChecks = second.logs.find((l) => l['msg'] === 'first health checks done');
    expect(second.logs.indexOf(restored!)).toBeLessThan(second.logs.indexOf(firstChecks!));
    expect(firstChecks).toMatchObject({ up: 2, down: 0, unknown: 0 });
    const s = await statusServers(admin);
    expect(s['b1']).toMatchObject({ admin: 'drain', state: 'drain' });
    expect(s['b2']).toMatchObject({ admin: 'maint', state: 'maint', lastCheck: null });
    expect(s['b3']).toMatchObject({ admin: 'ready', state: 'up' });
    expect(await brokerFor(port, idOf['b1']!)).toBe('b3');
    expect(await brokerFor(port, idOf['b2']!)).toBe('b3');

    // Back to ready: the file lists nothing, and the next start has every server ready.
    await serverAction(admin, 'b1', 'ready');
    await serverAction(admin, 'b2', 'ready');
    expect(JSON.parse(readFileSync(stateFile, 'utf8'))).toEqual({ version: 1, servers: [] });
    expect(await second.stop()).toBe(0);
    const third = await start(yaml, admin);
    expect(third.logs.some((l) => l['msg'] === 'server admin states restored')).toBe(false);
    expect(Object.values(await statusServers(admin)).map((x) => x.admin)).toEqual(['ready', 'ready', 'ready']);
    expect(await brokerFor(port, idOf['b2']!)).toBe('b2');
  });

  it('a file naming a server the config no longer has drops it with a warning; an unusable file is ignored and never written over', async () => {
    const { yaml, admin, stateFile } = await setUp();
    writeFileSync(
      stateFile,
      JSON.stringify({ version: 1, servers: [{ pool: 'brokers', server: 'b9', admin: 'maint' }, { pool: 'brokers', server: 'b2', admin: 'maint' }] }),
    );
    const first = await start(yaml, admin);
    expect(first.logs.find((l) => l['msg'] === 'admin state file names servers the config does not have: dropped')).toMatchObject({ level: 40, servers: ['brokers/b9'] });
    expect((await statusServers(admin))['b2']!.admin).toBe('maint');
    expect(await first.stop()).toBe(0);

    writeFileSync(stateFile, 'b2 maint\n');
    const second = await start(yaml, admin);
    const unusable = second.logs.find((l) => l['msg'] === 'admin state file unusable: every server starts ready');
    expect(unusable).toMatchObject({ level: 40, file: stateFile, code: 'MQLB_ADMIN_STATE_FILE', err: { code: 'MQLB_ADMIN_STATE_FILE' } });
    // An expected failure: no stack trace, at any depth (docs/errors.md).
    expect(JSON.stringify(unusable)).not.toContain('"stack"');
    expect(Object.values(await statusServers(admin)).map((x) => x.admin)).toEqual(['ready', 'ready', 'ready']);
    // Not ours to replace (a path naming another file by mistake): the change applies, its save fails loudly.
    await serverAction(admin, 'b3', 'drain');
    expect((await statusServers(admin))['b3']!.admin).toBe('drain');
    const unsaved = await second.waitForLog((l) => l['msg'] === 'cannot save the admin states: a restart will not keep them');
    expect(unsaved).toMatchObject({ code: 'MQLB_ADMIN_STATE_FILE', err: { code: 'MQLB_ADMIN_STATE_FILE' } });
    expect(JSON.stringify(unsaved)).not.toContain('"stack"');
    expect(readFileSync(stateFile, 'utf8')).toBe('b2 maint\n');
    // Moved away: the next change writes it.
    rmSync(stateFile);
    await serverAction(admin, 'b3', 'maint');
    expect(JSON.parse(readFileSync(stateFile, 'utf8'))).toEqual({ version: 1, servers: [{ pool: 'brokers', server: 'b3', admin: 'maint' }] });
  });

  it('a reload that removes a server drops its state from the file; a failed save is logged and the state still applies', async () => {
    const { yaml, admin, stateFile } = await setUp();
    const lb = await start(yaml, admin);
    await serverAction(admin, 'b3', 'maint');
    await serverAction(admin, 'b2', 'drain');
    const twoServers = yaml.replace(/\n {6}- name: b3\n {8}address: [^\n]+/, '');
    expect(twoServers).not.toContain('b3');
    lb.writeConfig(twoServers);
    lb.reload();
    await lb.waitForLog((l) => l['msg'] === 'config reloaded');
    expect(JSON.parse(readFileSync(stateFile, 'utf8'))).toEqual({ version: 1, servers: [{ pool: 'brokers', server: 'b2', admin: 'drain' }] });

    // The directory gone: the change applies, the save fails loudly.
    rmSync(path.dirname(stateFile), { recursive: true, force: true });
    await serverAction(admin, 'b1', 'maint');
    expect((await statusServers(admin))['b1']!.admin).toBe('maint');
    expect(await lb.waitForLog((l) => l['msg'] === 'cannot save the admin states: a restart will not keep them')).toMatchObject({
      level: 50,
      code: 'MQLB_ADMIN_STATE_FILE',
      file: stateFile,
      err: { code: 'MQLB_ADMIN_STATE_FILE', cause: { code: 'ENOENT' } },
    });
  });

  it('with workers, the primary restores the states and every worker routes by them', async () => {
    const { yaml, port, admin, stateFile } = await setUp();
    writeFileSync(
      stateFile,
      JSON.stringify({ version: 1, servers: [{ pool: 'brokers', server: 'b1', admin: 'drain' }, { pool: 'brokers', server: 'b2', admin: 'maint' }] }),
    );
    const lb = await start(`${yaml}workers: 2\n`, admin);
    expect(lb.logs.filter((l) => l['msg'] === 'server admin states restored')).toHaveLength(1);
    const reached = new Set<string>();
    // Twelve clients, each a new connection: the kernel spreads them over both workers.
    for (let i = 0; i < 12; i++) reached.add(await brokerFor(port, `workers-${i}`));
    expect([...reached]).toEqual(['b3']);
  });
});
