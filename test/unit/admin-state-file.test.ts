/** admin.stateFile's format and its atomic write (src/balancer/admin-state-file.ts). */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAdminStates, readAdminStateFile, serializeAdminStates, writeAdminStateFile, type AdminStateEntry } from '../../src/balancer/admin-state-file.js';

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
    // The temporary file's name taken by a directory: the write fails before the rename.
    mkdirSync(`${file}.tmp-${process.pid}`);
    expect(() => writeAdminStateFile(file, [])).toThrow();
    expect(readAdminStateFile(file)).toEqual(ENTRIES);
    rmSync(`${file}.tmp-${process.pid}`, { recursive: true });
    expect(() => writeAdminStateFile(join(dir, 'missing-dir', 'a.json'), ENTRIES)).toThrow(/ENOENT/);
    expect(readdirSync(dir)).toEqual(['admin-state.json']);
  });

  it('says what is wrong with a file that is not one', () => {
    expect(() => parseAdminStates('maint b2')).toThrow(/^not JSON/);
    expect(() => parseAdminStates('[]')).toThrow('not a JSON object');
    expect(() => parseAdminStates('{"version":2,"servers":[]}')).toThrow('version 2: this mqtt-lb reads version 1');
    expect(() => parseAdminStates('{"version":1}')).toThrow('`servers` is not a list');
    expect(() => parseAdminStates('{"version":1,"servers":[{"pool":"p"}]}')).toThrow('servers[0]: needs `pool` and `server` strings');
    expect(() => parseAdminStates('{"version":1,"servers":[{"pool":"p","server":"s","admin":"ready"}]}')).toThrow(
      'servers[0]: `admin` must be "drain" or "maint" (got "ready")',
    );
    const big = join(dir, 'big.json');
    writeFileSync(big, Buffer.alloc((1 << 20) + 1, 0x20));
    expect(() => readAdminStateFile(big)).toThrow('not an admin state file');
  });

  it('keeps only the three fields of an entry', () => {
    expect(parseAdminStates('{"version":1,"servers":[{"pool":"p","server":"s","admin":"drain","note":"x"}]}')).toEqual([{ pool: 'p', server: 's', admin: 'drain' }]);
    expect(serializeAdminStates([])).toBe('{\n  "version": 1,\n  "servers": []\n}\n');
  });
});
