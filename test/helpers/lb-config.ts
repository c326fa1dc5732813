/**
 * The lb.yaml the integration and browser tests start the built mqtt-lb with: listeners on 127.0.0.1 feeding
 * one pool `brokers`, its servers and health check, limits, the admin bind and the log level. Each test file
 * keeps its own tailored values (health timing, limits, log level) as constants and passes them in; what it
 * leaves out is either not written (health, limits: the contract's defaults apply) or written with the
 * contract's default (balance client-id-hash, log level info).
 */

/** A listener bound to 127.0.0.1:`port` whose pool is `brokers`. */
export interface ListenerSpec {
  /** Default `mqtt`. */
  name?: string;
  port: number;
  /** Further keys of the listener, as YAML lines indented by 4 (e.g. `    maxConnections: 1\n`). */
  extra?: string;
  /** The keys under `tls:`, as YAML lines indented by 6 (e.g. `      cert: …\n      key: …`). */
  tls?: string;
}

/** A server of the pool, on 127.0.0.1. */
export interface ServerSpec {
  name: string;
  port: number;
  backup?: boolean;
  /** Omitted: no `weight:` (the contract's default, 1). */
  weight?: number;
  /** Omitted: no `maxConnections:` (no cap). */
  maxConnections?: number;
}

export interface HealthSpec {
  type: 'mqtt' | 'tcp' | 'http' | 'none';
  /** Durations as lb.yaml writes them (`300ms`, `1s`). */
  interval?: string;
  timeout?: string;
  rise?: number;
  fall?: number;
  /** Further keys under `health:`, as YAML lines indented by 6 (e.g. `      http: { port: 8080 }\n`). */
  extra?: string;
}

interface LbYamlCommon {
  admin: number;
  servers: ServerSpec[];
  /** Default `client-id-hash` (the contract's default). */
  balance?: string;
  /** Further keys of the pool before `servers:`, as YAML lines indented by 4 (e.g. `    retries: 0\n`). */
  pool?: string;
  /** Omitted: no `health:` (the contract's default check). */
  health?: HealthSpec;
  /** The keys under `limits:`, as YAML lines indented by 2; omitted: no `limits:` section. */
  limits?: string;
  adminToken?: string;
  /** `admin.stateFile` (an absolute path). */
  adminStateFile?: string;
  /** The keys under `log:`, as YAML lines indented by 2; default `  level: info\n`. */
  log?: string;
  /** Top-level keys appended at the end (e.g. `workers: 2\n`). */
  extra?: string;
}

/** One listener `mqtt` on `port`, or the `listeners` given. */
export type LbYamlOptions = LbYamlCommon & ({ port: number; listeners?: never } | { port?: never; listeners: ListenerSpec[] });

export function serverLines(list: readonly ServerSpec[]): string {
  return list
    .map((s) => `      - name: ${s.name}\n        address: 127.0.0.1:${s.port}${s.backup === true ? '\n        backup: true' : ''}${s.weight === undefined ? '' : `\n        weight: ${s.weight}`}${s.maxConnections === undefined ? '' : `\n        maxConnections: ${s.maxConnections}`}`)
    .join('\n');
}

export function healthYaml(h: HealthSpec): string {
  const keys: Array<[string, string | number | undefined]> = [
    ['type', h.type],
    ['interval', h.interval],
    ['timeout', h.timeout],
    ['rise', h.rise],
    ['fall', h.fall],
  ];
  const lines = keys.filter(([, v]) => v !== undefined).map(([k, v]) => `      ${k}: ${v}\n`);
  return `    health:\n${lines.join('')}${h.extra ?? ''}`;
}

function listenerLines(l: ListenerSpec): string {
  const tls = l.tls === undefined ? '' : `    tls:\n${l.tls}\n`;
  return `  - name: ${l.name ?? 'mqtt'}\n    bind: 127.0.0.1:${l.port}\n    pool: brokers\n${l.extra ?? ''}${tls}`;
}

export function lbYaml(o: LbYamlOptions): string {
  const listeners = o.listeners ?? [{ port: o.port }];
  return `listeners:
${listeners.map(listenerLines).join('')}pools:
  brokers:
    balance: ${o.balance ?? 'client-id-hash'}
${o.pool ?? ''}    servers:
${serverLines(o.servers)}
${o.health === undefined ? '' : healthYaml(o.health)}${o.limits === undefined ? '' : `limits:\n${o.limits}`}admin:
  bind: 127.0.0.1:${o.admin}
${o.adminToken === undefined ? '' : `  token: ${o.adminToken}\n`}${o.adminStateFile === undefined ? '' : `  stateFile: ${o.adminStateFile}\n`}log:
${o.log ?? '  level: info\n'}${o.extra ?? ''}`;
}
