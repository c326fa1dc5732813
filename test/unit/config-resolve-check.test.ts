/**
 * `mqtt-lb check` resolving host names as a start would (src/config/resolve-check.ts), with a stand-in resolver:
 * binds that would fail, binds that resolve onto each other, servers that would be down.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { resolveFindings as resolveStructured, type Finding, type Lookup } from '../../src/config/resolve-check.js';
import type { LbConfig } from '../../src/config/types.js';

const NAMES: Record<string, string> = { localhost: '127.0.0.1', 'loopback.example': '127.0.0.1', 'lb.example': '10.0.0.5', 'broker.example': '10.0.0.11' };

const lookup: Lookup = (host) => {
  const address = NAMES[host];
  if (address !== undefined) return Promise.resolve(address);
  return Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' }));
};

function config(listeners: string[], admin: string, servers: string[]): LbConfig {
  const text = `listeners:
${listeners.map((b, i) => `  - { name: l${i}, bind: "${b}", pool: p }`).join('\n')}
pools:
  p:
    servers:
${servers.map((a, i) => `      - { name: s${i}, address: "${a}" }`).join('\n')}
admin: { bind: "${admin}", token: "a-token-for-the-admin-api" }
`;
  const parsed = parseConfig(text, 'lb.yaml');
  expect(parsed.problems).toEqual([]);
  return parsed.config!;
}

/** The findings as `path: message` lines (the CLI puts FILE:LINE:COL in front: test/integration/cli.test.ts). */
async function resolveFindings(config: LbConfig, resolver: Lookup, timeoutMs?: number): Promise<{ errors: string[]; warnings: string[] }> {
  const found = await resolveStructured(config, resolver, timeoutMs);
  const text = (f: Finding): string => `${f.path}: ${f.message}`;
  return { errors: found.errors.map(text), warnings: found.warnings.map(text) };
}

describe('check: host names resolved as a start would', () => {
  it('nothing to say when every name resolves and no binds meet', async () => {
    expect(await resolveFindings(config(['localhost:1883', 'lb.example:1883'], '127.0.0.1:9883', ['broker.example:1883', '10.0.0.12:1883']), lookup)).toEqual({ errors: [], warnings: [] });
  });

  it('a listener or admin bind whose name does not resolve: an error (the start would exit 2)', async () => {
    const found = await resolveFindings(config(['nosuch.invalid:1883'], 'gone.invalid:9883', ['10.0.0.11:1883']), lookup);
    expect(found.errors).toEqual([
      'listeners[0].bind: host name `nosuch.invalid` does not resolve here (ENOTFOUND): a start would fail to bind it (exit 2)',
      'admin.bind: host name `gone.invalid` does not resolve here (ENOTFOUND): a start would fail to bind it (exit 2)',
    ]);
  });

  it('a name that resolves onto another bind of the same port (or a wildcard there): an error', async () => {
    expect((await resolveFindings(config(['localhost:1883', '127.0.0.1:1883'], '127.0.0.1:9883', ['10.0.0.11:1883']), lookup)).errors).toEqual([
      'listeners[1].bind: `127.0.0.1:1883` and listeners[0].bind `localhost:1883` bind the same address once resolved (127.0.0.1 and 127.0.0.1, port 1883): a start would fail (EADDRINUSE)',
    ]);
    expect((await resolveFindings(config(['localhost:1883'], 'loopback.example:1883', ['10.0.0.11:1883']), lookup)).errors).toEqual([
      'admin.bind: `loopback.example:1883` and listeners[0].bind `localhost:1883` bind the same address once resolved (127.0.0.1 and 127.0.0.1, port 1883): a start would fail (EADDRINUSE)',
    ]);
    // Other ports, or names that resolve apart: no error.
    expect((await resolveFindings(config(['localhost:1883', 'lb.example:1883'], 'localhost:9883', ['10.0.0.11:1883']), lookup)).errors).toEqual([]);
  });

  it('a server whose name does not resolve: a warning (the balancer starts; the server is down until it resolves)', async () => {
    expect(await resolveFindings(config(['127.0.0.1:1883'], '127.0.0.1:9883', ['broker.example:1883', 'old-broker.invalid:1883']), lookup)).toEqual({
      errors: [],
      warnings: ['pools.p.servers[1].address: host name `old-broker.invalid` does not resolve here (ENOTFOUND): the balancer starts, and this server is down until it resolves'],
    });
  });

  it('a resolver that does not answer is bounded', async () => {
    const hanging: Lookup = () => new Promise(() => {});
    const started = performance.now();
    const found = await resolveFindings(config(['lb.example:1883'], '127.0.0.1:9883', ['10.0.0.11:1883']), hanging, 200);
    expect(performance.now() - started).toBeLessThan(2000);
    expect(found.errors).toEqual(['listeners[0].bind: host name `lb.example` does not resolve here (no answer within 200 ms): a start would fail to bind it (exit 2)']);
  });
});

describe('locate: a config path back to FILE:LINE:COL (for what check finds after parsing)', () => {
  it('finds values in block and flow style, and a pool name with dots in it', () => {
    const text = `listeners:
  - { name: a, bind: "127.0.0.1:1883", pool: eu.west }
pools:
  eu.west:
    servers:
      - name: b1
        address: broker.example:1883
`;
    const { locate, problems } = parseConfig(text, 'lb.yaml');
    expect(problems).toEqual([]);
    expect(locate?.('listeners[0].bind')).toBe('lb.yaml:2:22');
    expect(locate?.('pools.eu.west.servers[0].address')).toBe('lb.yaml:7:18');
    expect(locate?.('admin.bind')).toBeNull(); // not written: the caller says the file alone
  });
});
