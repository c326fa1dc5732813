/**
 * What `mqtt-lb check` learns by resolving the host names of a valid config, as a start would: a listener or the
 * admin port bound by a name that does not resolve, or that resolves onto another bind's address (`localhost:1883`
 * beside `127.0.0.1:1883`), passed `check` and then failed the start (exit 2, EADDRINUSE or ENOTFOUND: an audit).
 * A server name that does not resolve is a warning: the balancer starts, and that server is down until it does.
 * Validation itself (validate.ts) stays free of the network: the literal addresses are judged there.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { bindsCollide } from './net-syntax.js';
import type { HostPort, LbConfig } from './types.js';

/** The first address of a name, as `server.listen({ host })` and a dial take it (dns.lookup, the OS resolver). */
export type Lookup = (host: string) => Promise<string>;

const defaultLookup: Lookup = async (host) => (await dnsLookup(host)).address;

const LOOKUP_TIMEOUT_MS = 3000;

interface Bind {
  path: string;
  written: string;
  address: HostPort;
}

/** One thing resolution found, at a config path (`listeners[0].bind`): the CLI puts its FILE:LINE:COL in front. */
export interface Finding {
  path: string;
  message: string;
}

export interface ResolveFindings {
  errors: Finding[];
  warnings: Finding[];
}

/** Resolves each host name once (bounded); the address, or why not. */
type Resolution = { address: string } | { error: string };

async function resolveAll(hosts: Iterable<string>, lookup: Lookup, timeoutMs: number): Promise<Map<string, Resolution>> {
  const names = [...new Set(hosts)].filter((h) => isIP(h) === 0);
  const results = await Promise.all(
    names.map(async (host): Promise<[string, Resolution]> => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        timer.unref();
      });
      try {
        return [host, { address: await Promise.race([lookup(host), late]) }];
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        return [host, { error: e.code ?? e.message }];
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return new Map(results);
}

export async function resolveFindings(config: Pick<LbConfig, 'listeners' | 'admin' | 'pools'>, lookup: Lookup = defaultLookup, timeoutMs = LOOKUP_TIMEOUT_MS): Promise<ResolveFindings> {
  const binds: Bind[] = config.listeners.map((l, i) => ({ path: `listeners[${i}].bind`, written: l.bind, address: l.address }));
  binds.push({ path: 'admin.bind', written: config.admin.bind, address: config.admin.address });
  const servers = Object.values(config.pools).flatMap((p) => p.servers.map((s, i) => ({ path: `pools.${p.name}.servers[${i}].address`, host: s.host })));
  const resolved = await resolveAll([...binds.map((b) => b.address.host), ...servers.map((s) => s.host)], lookup, timeoutMs);
  const errors: Finding[] = [];
  const warnings: Finding[] = [];
  const bound: Array<Bind & { resolved: HostPort }> = [];
  for (const b of binds) {
    const r = resolved.get(b.address.host);
    if (r === undefined) {
      bound.push({ ...b, resolved: b.address });
    } else if ('error' in r) {
      errors.push({ path: b.path, message: `host name \`${b.address.host}\` does not resolve here (${r.error}): a start would fail to bind it (exit 2)` });
    } else {
      bound.push({ ...b, resolved: { host: r.address, port: b.address.port } });
    }
  }
  // Pairs the literal check could not see: one side at least a name.
  for (let i = 0; i < bound.length; i++) {
    for (let j = 0; j < i; j++) {
      const [a, b] = [bound[j]!, bound[i]!];
      if (isIP(a.address.host) !== 0 && isIP(b.address.host) !== 0) continue;
      if (!bindsCollide(a.resolved, b.resolved)) continue;
      errors.push({
        path: b.path,
        message: `\`${b.written}\` and ${a.path} \`${a.written}\` bind the same address once resolved (${b.resolved.host} and ${a.resolved.host}, port ${b.address.port}): a start would fail (EADDRINUSE)`,
      });
    }
  }
  for (const s of servers) {
    const r = resolved.get(s.host);
    if (r !== undefined && 'error' in r) {
      warnings.push({ path: s.path, message: `host name \`${s.host}\` does not resolve here (${r.error}): the balancer starts, and this server is down until it resolves` });
    }
  }
  return { errors, warnings };
}
