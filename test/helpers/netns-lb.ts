/**
 * The REAL mqtt-lb, mosquitto brokers and MQTT clients inside a NetnsTopology (test/helpers/netns.ts):
 *  - NsLb: `node dist/src/cli.js --config lb.yaml` started in an LB namespace (`ip netns exec`); its pino
 *    JSON log lines (stdout) are the state events; admin HTTP read with curl inside that namespace.
 *  - startNsBroker: /usr/sbin/mosquitto listening on the broker namespace's address.
 *  - clientOp: one run of mqtt-netns-client.mjs inside the client namespace.
 * Every process is started through topo.spawn(), so topo.teardown() stops it even when a test fails.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI_JS, ROOT } from './dist-build.js';
import { waitFor, type NetnsTopology, type NsProcess, type Role } from './netns.js';

export const MQTT_CLIENT = join(ROOT, 'test/helpers/mqtt-netns-client.mjs');
export const MQTT_PROBER = join(ROOT, 'test/helpers/mqtt-vip-prober.mjs');
const MOSQUITTO = '/usr/sbin/mosquitto';

export interface LbStateEvent {
  routerId: number;
  from: string;
  to: string;
  /** Wall-clock ms of the transition, stamped in the heartbeat thread. */
  at: number;
}

export interface FailoverInstanceJson {
  routerId: number;
  state: string;
  priority: number;
  vips: string[];
  peer: { address: string; state: string; lastAdvertAgeMs: number } | null;
}

export interface StatusJson {
  failover: { enabled: boolean; instances?: FailoverInstanceJson[] };
  pools: Array<{ name: string; servers: Array<{ name: string; state: string }> }>;
}

export interface NsBroker {
  name: string;
  host: string;
  port: number;
  proc: NsProcess;
}

export interface LbYamlOptions {
  name: string;
  peer: string;
  keyFile: string;
  priority: number;
  vipCidr: string;
  brokers: readonly NsBroker[];
  adminPort: number;
  advertIntervalMs?: number;
  /** pools.brokers.evictRate (default: lb.yaml's). */
  evictRate?: number;
  /** limits.drainTimeout (default 4s). */
  drainTimeout?: string;
  /** More listeners, as YAML list items indented by 2 (e.g. `  - name: m2\n    bind: 0.0.0.0:1885\n    pool: brokers\n`). */
  extraListeners?: string;
  /** Top-level keys appended at the end (e.g. `workers: 2\n`). */
  extra?: string;
  /** pools.brokers.health spacing and counts (default: interval 400ms, timeout 300ms, rise 1, fall 2). */
  health?: { interval: string; timeout: string; rise: number; fall: number };
  /** Synthetic sessions of the warm-up at start (default 0: none). */
  warmUp?: number;
  /** More keys of the `failover` section, indented by 2 (e.g. `  track:\n    scripts: [...]\n`). */
  failoverExtra?: string;
}

/** A complete lb.yaml for one LB host (design.md §4), brokers health-checked at MQTT level. */
export function lbYaml(o: LbYamlOptions): string {
  const servers = o.brokers.map((b) => `      - name: ${b.name}\n        address: ${b.host}:${b.port}`).join('\n');
  return `listeners:
  - name: mqtt
    bind: 0.0.0.0:1883
    pool: brokers
${o.extraListeners ?? ''}pools:
  brokers:
    balance: client-id-hash
    serverConnectTimeout: 1s
${o.evictRate === undefined ? '' : `    evictRate: ${o.evictRate}\n`}    servers:
${servers}
    health:
      type: mqtt
      # Not too eager on a loaded 2-core box: a pool marked down by a probe blip costs lb1 50 priority, a tie
      # with lb2 (100), which the higher address (lb2) wins.
      interval: ${o.health?.interval ?? '400ms'}
      timeout: ${o.health?.timeout ?? '300ms'}
      rise: ${o.health?.rise ?? 1}
      fall: ${o.health?.fall ?? 2}
      # Both hosts share one hostname (namespaces): distinct probe IDs, or their probes take over each other's session.
      mqtt: { clientId: ${o.name}-health }
admin:
  bind: 127.0.0.1:${o.adminPort}
limits:
  # Sessions not on the VIP drain this long at a stop (the SIGTERM test holds some on the host's own address).
  drainTimeout: ${o.drainTimeout ?? '4s'}
log:
  level: info
# The JIT warm-up (src/warm-up.ts, seconds of CPU per start) is tested by test/integration/warm-up.test.ts.
warmUp: ${o.warmUp ?? 0}
failover:
  interface: eth0
  transport: unicast
  peers: [${o.peer}]
  port: 18831
  authKeyFile: ${o.keyFile}
  advertInterval: ${o.advertIntervalMs ?? 100}ms
  routerId: 51
  priority: ${o.priority}
  vips: [${o.vipCidr}]
  garp: { count: 3, interval: 100ms, repeatAfter: 1s }
${o.failoverExtra ?? ''}${o.extra ?? ''}`;
}

/** One running mqtt-lb process in an LB namespace. */
export class NsLb {
  constructor(
    readonly topo: NetnsTopology,
    readonly role: Role,
    readonly proc: NsProcess,
    readonly adminPort: number,
  ) {}

  /** `env`: more environment (e.g. a PATH with a fake `ip` first). */
  static async start(topo: NetnsTopology, role: Role, configFile: string, adminPort: number, env: NodeJS.ProcessEnv = {}): Promise<NsLb> {
    const proc = topo.spawn(topo.ns[role], process.execPath, [CLI_JS, '--config', configFile], { ...env, MQTT_LB_TEST_HOOKS: '1' });
    const lb = new NsLb(topo, role, proc, adminPort);
    try {
      await proc.waitForLine((l) => l.includes('"mqtt-lb started"'), 20_000);
    } catch (err) {
      throw new Error(`${role}: mqtt-lb did not start: ${(err as Error).message}\nstdout:\n${proc.lines.slice(-30).join('\n')}`);
    }
    return lb;
  }

  /** Every JSON log line so far. */
  logs(): Array<Record<string, unknown>> {
    return this.proc.lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  }

  logsWith(msg: string): Array<Record<string, unknown>> {
    return this.logs().filter((l) => l.msg === msg);
  }

  /** State transitions from the 'failover state changed' log lines (de-duplicated on routerId/from/to/at). */
  transitions(): LbStateEvent[] {
    const seen = new Set<string>();
    const out: LbStateEvent[] = [];
    for (const l of this.logsWith('failover state changed')) {
      const e = { routerId: Number(l.routerId), from: String(l.from), to: String(l.to), at: Number(l.at) };
      const k = `${e.routerId}:${e.from}>${e.to}@${e.at}`;
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(e);
    }
    return out;
  }

  transitionNames(): string[] {
    return this.transitions().map((t) => `${t.from}>${t.to}`);
  }

  get state(): string {
    return this.transitions().at(-1)?.to ?? 'init';
  }

  /** The first transition to `to` at index ≥ `from`. */
  async waitState(to: string, timeoutMs: number, from = 0): Promise<LbStateEvent> {
    let found: LbStateEvent | undefined;
    await waitFor(
      `${this.role} → ${to}`,
      () => {
        found = this.transitions().slice(from).find((t) => t.to === to);
        return found !== undefined || !this.proc.alive;
      },
      timeoutMs,
      5,
    );
    if (found === undefined) throw new Error(`${this.role} exited before reaching ${to}:\n${this.proc.lines.slice(-20).join('\n')}`);
    return found;
  }

  /** GET on the admin server, from inside this host's namespace (its 127.0.0.1). */
  async http(path: string): Promise<{ status: number; body: string }> {
    const r = await this.topo.execOk(this.topo.ns[this.role], 'curl', ['-s', '-m', '3', '-w', '\n%{http_code}', `http://127.0.0.1:${this.adminPort}${path}`]);
    const i = r.lastIndexOf('\n');
    return { status: Number(r.slice(i + 1)), body: r.slice(0, i) };
  }

  async status(): Promise<StatusJson> {
    const r = await this.http('/api/status');
    if (r.status !== 200) throw new Error(`${this.role} /api/status: ${r.status} ${r.body}`);
    return JSON.parse(r.body) as StatusJson;
  }

  async failoverInstance(): Promise<FailoverInstanceJson> {
    const s = await this.status();
    const i = s.failover.instances?.[0];
    if (!s.failover.enabled || i === undefined) throw new Error(`${this.role}: failover section without an instance: ${JSON.stringify(s.failover)}`);
    return i;
  }

  /** `mqtt_lb_failover_state{state=...}` values from /metrics. */
  async failoverStateMetric(): Promise<Record<string, number>> {
    const r = await this.http('/metrics');
    const out: Record<string, number> = {};
    for (const m of r.body.matchAll(/^mqtt_lb_failover_state\{state="(\w+)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
    return out;
  }

  /** `mqtt_lb_failover_peer_state` as `{ "<router id> <peer>": state at 1 }`. */
  async peerStateMetric(): Promise<Record<string, string>> {
    const r = await this.http('/metrics');
    const out: Record<string, string> = {};
    for (const m of r.body.matchAll(/^mqtt_lb_failover_peer_state\{router_id="(\d+)",peer="([^"]+)",state="(\w+)"\} 1$/gm)) out[`${m[1]} ${m[2]}`] = m[3]!;
    return out;
  }

  /** Waits until every server of every pool has `state` in /api/status. */
  async waitServers(state: string, timeoutMs: number): Promise<void> {
    await waitFor(`${this.role}: all servers ${state}`, async () => (await this.status()).pools.every((p) => p.servers.every((s) => s.state === state)), timeoutMs, 50);
  }
}

/** A mosquitto broker listening on the broker namespace's address. */
export async function startNsBroker(topo: NetnsTopology, dir: string, name: string, port: number): Promise<NsBroker> {
  const conf = join(dir, `mosquitto-${name}.conf`);
  await writeFile(
    conf,
    [
      `listener ${port} ${topo.addr.broker}`,
      'allow_anonymous true',
      'persistence false',
      'log_dest stderr', // stdout would be block-buffered into the pipe
      'log_type error',
      'log_type warning',
      'log_type information', // "running" once listening; per-connection lines are notice level (left out)
      // Run as root (no privilege drop): the temp config stays readable.
      'user root',
      '',
    ].join('\n'),
  );
  const proc = topo.spawn(topo.ns.broker, MOSQUITTO, ['-c', conf]);
  await waitFor(`mosquitto ${name} running`, () => proc.stderr.includes(' running') || !proc.alive, 10_000);
  if (!proc.alive) throw new Error(`mosquitto ${name} exited at start: ${proc.stderr}`);
  return { name, host: topo.addr.broker, port, proc };
}

/** Runs one op of mqtt-netns-client.mjs in `role`'s namespace; returns its JSON lines (throws on error). */
export async function clientOp(topo: NetnsTopology, op: Record<string, unknown>, role: Role = 'client', timeoutMs = 20_000): Promise<Array<Record<string, unknown>>> {
  const p = topo.spawn(topo.ns[role], process.execPath, [MQTT_CLIENT, JSON.stringify(op)]);
  const timer = setTimeout(() => p.signal('SIGKILL'), timeoutMs);
  const { code } = await p.exited;
  clearTimeout(timer);
  const lines = p.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  if (code !== 0 || lines.at(-1)?.ev !== 'done') throw new Error(`client op ${String(op.op)} failed (exit ${code}): ${p.lines.join('\n')}\n${p.stderr}`);
  return lines;
}

/** Starts a long-running client op (e.g. hold) in the client namespace. */
export function startClient(topo: NetnsTopology, op: Record<string, unknown>): NsProcess {
  return topo.spawn(topo.ns.client, process.execPath, [MQTT_CLIENT, JSON.stringify(op)]);
}
