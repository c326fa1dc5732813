/** admin.stateFile's format and its atomic write (src/balancer/admin-state-file.ts). */
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAdminStates, readAdminStateFile, serializeAdminStates, writeAdminStateFile, type AdminStateEntry } from '../../src/balancer/admin-state-file.js';
import { restoreAdminStates } from '../../src/balancer/admin-states.js';
import { Pool } from '../../src/balancer/pool.js';
import { poolConfig } from './balancer-fixtures.js';
import { logSink } from './health-fixtures.js';

const ENTRIES: AdminStateEntry[] = [
  { pool: 'brokers', server: 'b2', admin: 'maint' },
  { pool: 'edge', server: 'e1', admin: 'drain' },
];

describe('admin state file', () => {
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-admin-state-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads back what it writes, one server per line', () => {
    const file = join(dir, 'admin-state.json');
    writeAdminStateFile(file, ENTRIES);
    expect(readAdminStateFile(file)).toEqual(ENTRIES);
    expect(readFileSync(file, 'utf8')).toBe(
      '{\n  "version": 1,\n  "servers": [\n    {"pool":"brokers","server":"b2","admin":"maint"},\n    {"pool":"edge","server":"e1","admin":"drain"}\n  ]\n}\n',
    );
    writeAdminStateFile(file, []);
    expect(readAdminStateFile(file)).toEqual([]);
    expect(readFileSync(file, 'utf8')).toBe('{\n  "version": 1,\n  "servers": []\n}\n');
    expect(readdirSync(dir)).toEqual(['admin-state.json']); // no temporary file left beside it
  });

  it('no file yet is no states (null), not an error', () => {
    expect(readAdminStateFile(join(dir, 'none.json'))).toBeNull();
  });

  it('a failed write leaves the old file whole and no temporary file', () => {
    const file = join(dir, 'admin-state.json');
    writeAdminStateFile(file, ENTRIES);
    // The write fails (no such directory): nothing is left behind, and the error is the write's.
    expect(() => writeAdminStateFile(join(dir, 'missing-dir', 'a.json'), ENTRIES)).toThrow(/ENOENT/);
    expect(readAdminStateFile(file)).toEqual(ENTRIES);
    expect(readdirSync(dir)).toEqual(['admin-state.json']);
  });

  it('says what is wrong with a file that is not one', () => {
    expect(() => parseAdminStates('maint b2')).toThrow(/^not JSON/);
    expect(() => parseAdminStates('[]')).toThrow('not a JSON object');
    expect(() => parseAdminStates('{"version":2,"servers":[]}')).toThrow('not version 1, the one this mqtt-lb reads');
    expect(() => parseAdminStates('{"version":1}')).toThrow('`servers` is not a list');
    const big = join(dir, 'big.json');
    writeFileSync(big, Buffer.alloc((1 << 20) + 1, 0x20));
    expect(() => readAdminStateFile(big)).toThrow('not an admin state file');
  });

  // The review: the size guard came after reading the whole file, and a path naming another file lost it.
  it('judges a path before reading it: a device or a FIFO is refused at once, not read or waited on', () => {
    expect(() => readAdminStateFile('/dev/zero')).toThrow('not a regular file');
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(() => readAdminStateFile(fifo)).toThrow('not a regular file');
    expect(() => readAdminStateFile(dir)).toThrow(expect.objectContaining({ code: 'EISDIR' }));
  });

  // A security audit: in a directory others can write, the temporary file's predictable name let a local user put a
  // symbolic link there and have the states written over any file this process may write.
  it('writes its temporary file under a name no one can guess, never through a link planted beside it', () => {
    const shared = join(dir, 'shared');
    mkdirSync(shared);
    const state = join(shared, 'admin-state.json');
    const victim = join(dir, 'victim.txt');
    writeFileSync(victim, 'precious\n');
    // Every name the old code used, and a few more around this pid.
    for (const suffix of [`${process.pid}`, `${process.pid}-0`, '0']) symlinkSync(victim, `${state}.tmp-${suffix}`);
    writeAdminStateFile(state, ENTRIES);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(lstatSync(state).isSymbolicLink()).toBe(false);
    expect(readAdminStateFile(state)).toEqual(ENTRIES);
    // Nothing of ours is left beside it; the planted links are not ours to remove.
    expect(readdirSync(shared).filter((n) => !lstatSync(join(shared, n)).isSymbolicLink())).toEqual(['admin-state.json']);
  });

  it('does not quote a file it cannot parse (a path naming a secret must not show its first bytes)', () => {
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'SECRETSHADOWLINE:x:1\n');
    let message = '';
    try {
      writeAdminStateFile(secret, ENTRIES);
    } catch (err) {
      message = JSON.stringify({ message: (err as Error).message, cause: String((err as Error).cause) });
    }
    expect(message).toContain('not an admin state file (not JSON)');
    expect(message).not.toContain('SECRET');
  });

  it('never writes over a file that is not a state file, and writes through a symbolic link to the file it names', () => {
    const other = join(dir, 'lb.yaml');
    writeFileSync(other, 'listeners: []\n');
    expect(() => writeAdminStateFile(other, ENTRIES)).toThrow(/lb\.yaml is not an admin state file \(not JSON\): left alone/);
    expect(readFileSync(other, 'utf8')).toBe('listeners: []\n');
    mkdirSync(join(dir, 'var'));
    const real = join(dir, 'var', 'state.json');
    writeAdminStateFile(real, []);
    const link = join(dir, 'state-link.json');
    symlinkSync(real, link);
    writeAdminStateFile(link, ENTRIES);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readAdminStateFile(real)).toEqual(ENTRIES);
    expect(readdirSync(join(dir, 'var'))).toEqual(['state.json']);
  });

  // An admin audit: one hand-written `"ready"` or `"disabled"` entry threw the whole file away (its `maint` servers went
  // back into service at the start); a touched, empty file was never written over; a server named twice, silently.
  it('skips an entry it cannot use and keeps the others; an empty file has no entries', () => {
    const skipped: string[] = [];
    const text = JSON.stringify({
      version: 1,
      servers: [
        { pool: 'p', server: 'a', admin: 'maint' },
        { pool: 'p', server: 'b', admin: 'disabled' },
        { pool: 'p' },
        'x',
        { pool: 'p', server: 'c', admin: 'ready' },
        { pool: 'p', server: 'd', admin: 'drain' },
        { pool: 'p', server: 'e', admin: 'maint' },
        { pool: 'p', server: 'd', admin: 'maint' },
        { pool: 'p', server: 'e', admin: 'ready' },
      ],
    });
    expect(parseAdminStates(text, skipped)).toEqual([
      { pool: 'p', server: 'a', admin: 'maint' },
      { pool: 'p', server: 'd', admin: 'maint' },
    ]);
    expect(skipped).toEqual([
      'servers[1] (p/b): `admin` must be "drain", "maint" or "ready"',
      'servers[2]: needs `pool` and `server` strings',
      'servers[3]: needs `pool` and `server` strings',
      'servers[5] (p/d): named again in servers[7], which counts',
      'servers[6] (p/e): named again in servers[8], which counts',
    ]);
    expect(parseAdminStates('')).toEqual([]);
    expect(parseAdminStates(' \n')).toEqual([]);
    const empty = join(dir, 'touched.json');
    writeFileSync(empty, '');
    writeAdminStateFile(empty, ENTRIES);
    expect(readAdminStateFile(empty)).toEqual(ENTRIES);
  });

  it('a start restores the usable entries and says which it skipped', () => {
    const file = join(dir, 'state.json');
    writeFileSync(file, JSON.stringify({ version: 1, servers: [{ pool: 'brokers', server: 'b1', admin: 'disabled' }, { pool: 'brokers', server: 'b2', admin: 'maint' }] }));
    const pools = new Map([['brokers', new Pool(poolConfig({ servers: ['b1', 'b2'] }))]]);
    const { log, lines } = logSink();
    restoreAdminStates(file, pools, log);
    expect(pools.get('brokers')!.servers.map((s) => s.admin)).toEqual(['ready', 'maint']);
    expect(lines.filter((l) => l.level === 40)).toMatchObject([{ msg: 'admin state file entries skipped: the others are restored', file, entries: ['servers[0] (brokers/b1): `admin` must be "drain", "maint" or "ready"'] }]);
  });

  it('keeps only the three fields of an entry', () => {
    expect(parseAdminStates('{"version":1,"servers":[{"pool":"p","server":"s","admin":"drain","note":"x"}]}')).toEqual([{ pool: 'p', server: 's', admin: 'drain' }]);
    expect(serializeAdminStates([])).toBe('{\n  "version": 1,\n  "servers": []\n}\n');
  });
});
