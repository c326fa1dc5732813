/**
 * The keys a reload does not apply (src/config/restart-only.ts) are compared with what the process started with:
 * a change is named at every reload until a restart, and a file back at the running values is no change.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { LbConfig } from '../../src/config/types.js';
import { restartOnlyChanges } from '../../src/config/restart-only.js';

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
