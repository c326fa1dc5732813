/**
 * The keys a reload does not apply (src/config/restart-only.ts) are compared with what the process started with:
 * a change is named at every reload until a restart, and a file back at the running values is no change.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { LbConfig } from '../../src/config/types.js';
import { TakeoverHistory, restartOnlyChanges } from '../../src/config/restart-only.js';

function config(adminPort: number, workers: string, bufferBytes: number): LbConfig {
  const out = parseConfig(
    `listeners:
  - { name: mqtt, bind: 127.0.0.1:1883, pool: p }
pools:
  p:
    servers: [{ name: s1, address: 127.0.0.1:1884 }]
admin: { bind: 127.0.0.1:${adminPort} }
log: { bufferBytes: ${bufferBytes} }
workers: ${workers}
`,
    '/tmp/lb.yaml',
  );
  if (out.config === null) throw new Error(JSON.stringify(out.problems));
  return out.config;
}

describe('restartOnlyChanges', () => {
  const running = config(9883, '1', 1_048_576);

  it('names every key that differs from the running value, with both values', () => {
    expect(restartOnlyChanges(running, config(9884, '2', 2_097_152))).toEqual([
      { key: 'admin.bind', running: '127.0.0.1:9883', file: '127.0.0.1:9884' },
      { key: 'workers', running: 1, file: 2 },
      { key: 'log.bufferBytes', running: 1_048_576, file: 2_097_152 },
    ]);
  });

  it('says it again for the same file (still not applied), and nothing for a file back at the running values', () => {
    const changed = config(9884, '2', 1_048_576);
    expect(restartOnlyChanges(running, changed).map((c) => c.key)).toEqual(['admin.bind', 'workers']);
    expect(restartOnlyChanges(running, changed).map((c) => c.key)).toEqual(['admin.bind', 'workers']);
    expect(restartOnlyChanges(running, config(9883, '1', 1_048_576))).toEqual([]);
  });

  it('auto is compared as the number of workers it means on this machine', () => {
    expect(restartOnlyChanges(running, config(9883, 'auto', 1_048_576), 2)).toEqual([{ key: 'workers', running: 1, file: 'auto (2)' }]);
    // Said with the number it means (a workers audit: `"running":"auto","file":1` hid how many run).
    expect(restartOnlyChanges(config(9883, 'auto', 1_048_576), running, 2)).toEqual([{ key: 'workers', running: 'auto (2)', file: 1 }]);
    expect(restartOnlyChanges(running, config(9883, 'auto', 1_048_576), 1)).toEqual([]);
    expect(restartOnlyChanges(config(9883, 'auto', 1_048_576), config(9883, '2', 1_048_576), 2)).toEqual([]);
  });
});

describe('TakeoverHistory (pools.<name>.takeover needs a restart)', () => {
  const withTakeover = (pools: Record<string, string | null>): LbConfig => {
    const lines = Object.entries(pools)
      .map(([name, t]) => `  ${name}:\n${t === null ? '' : `    takeover: ${t}\n`}    servers: [{ name: s1, address: 127.0.0.1:1884 }]\n`)
      .join('');
    const out = parseConfig(`listeners:\n  - { name: mqtt, bind: 127.0.0.1:1883, pool: p }\npools:\n${lines}`, '/tmp/lb.yaml');
    if (out.config === null) throw new Error(JSON.stringify(out.problems));
    return out.config;
  };
  const kinds = (c: LbConfig): Record<string, string> => Object.fromEntries(Object.entries(c.pools).map(([n, pc]) => [n, pc.takeover]));

  it("keeps each running pool's value and names the change; a pool the file adds takes the file's, and keeps it from then on", () => {
    const history = new TakeoverHistory(withTakeover({ p: null, q: 'username' }));
    const file = withTakeover({ p: 'client-id', q: 'username', r: 'off' });
    const { config, kept } = history.keep(file);
    expect(kept).toEqual([{ pool: 'p', running: 'client-id-and-username', file: 'client-id' }]);
    expect(kinds(config)).toEqual({ p: 'client-id-and-username', q: 'username', r: 'off' });
    // The rest of the file is applied as it is.
    expect(config.pools.p!.servers).toBe(file.pools.p!.servers);
    expect(config.listeners).toBe(file.listeners);
    history.record(config);
    expect(history.keep(withTakeover({ p: null, q: 'username', r: 'client-id' })).kept).toEqual([{ pool: 'r', running: 'off', file: 'client-id' }]);
  });

  it('a pool removed by a reload and added back by a later one keeps the value it ran with (its sessions run on meanwhile)', () => {
    const history = new TakeoverHistory(withTakeover({ p: null, q: 'client-id' }));
    history.record(history.keep(withTakeover({ p: null })).config);
    const { config, kept } = history.keep(withTakeover({ p: null, q: 'client-id-and-username' }));
    expect(kept).toEqual([{ pool: 'q', running: 'client-id', file: 'client-id-and-username' }]);
    expect(kinds(config)).toEqual({ p: 'client-id-and-username', q: 'client-id' });
  });

  it('a file with the running values is applied as it is, with nothing to say; a reload not applied records nothing', () => {
    const history = new TakeoverHistory(withTakeover({ p: 'client-id' }));
    const file = withTakeover({ p: 'client-id' });
    expect(history.keep(file)).toEqual({ config: file, kept: [] });
    // Kept but never recorded (the reload failed): a later file adding the pool takes its own value.
    history.keep(withTakeover({ p: 'client-id', r: 'off' }));
    expect(history.keep(withTakeover({ p: 'client-id', r: 'username' })).kept).toEqual([]);
  });
});
