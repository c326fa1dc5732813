/**
 * Descriptor budget. Node's net.Server silently accepts-and-closes once the process is out of descriptors
 * (libuv's EMFILE trick), so clients would be reset instead of told. We size the caps so that never happens:
 * each proxied session costs two descriptors (client + server), and a reserve stays free for health probes,
 * the admin port, failover, logs and the CONNACKs of refused clients.
 */
import { readFileSync } from 'node:fs';

/** The soft RLIMIT_NOFILE of this process, or null where /proc is not available. */
export function openFileLimit(): number | null {
  try {
    const text = readFileSync('/proc/self/limits', 'utf8');
    const m = /^Max open files\s+(\d+|unlimited)\s+/m.exec(text);
    if (m === null) return null;
    return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return null;
  }
}

export interface BudgetInput {
  fileLimit: number | null;
  globalMax: number;
  listeners: Array<{ name: string; maxConnections: number }>;
  servers: number; // all servers of all pools (one probe each at most)
}

export interface Budget {
  globalMax: number;
  listenerMax: Map<string, number>;
  warnings: string[];
}

/** Descriptors kept free: stdio, admin server and its clients, failover socket and children, probes. */
export function reserveFor(servers: number): number {
  return 64 + servers * 2;
}

export function clampToBudget(input: BudgetInput): Budget {
  const warnings: string[] = [];
  const listenerMax = new Map<string, number>();
  if (input.fileLimit === null) {
    for (const l of input.listeners) listenerMax.set(l.name, l.maxConnections);
    return { globalMax: input.globalMax, listenerMax, warnings };
  }
  // Refused clients hold a descriptor while their CONNACK lingers: budget ~5% headroom for them.
  const usable = Math.max(0, input.fileLimit - reserveFor(input.servers));
  const sessions = Math.floor(usable / 2 / 1.05);
  let globalMax = input.globalMax;
  if (globalMax > sessions) {
    warnings.push(`limits.maxConnections ${globalMax} clamped to ${sessions}: the open-file limit is ${input.fileLimit} and each session needs two descriptors`);
    globalMax = sessions;
  }
  for (const l of input.listeners) {
    let max = l.maxConnections;
    if (max > sessions) {
      warnings.push(`listeners.${l.name}.maxConnections ${max} clamped to ${sessions}: the open-file limit is ${input.fileLimit} and each session needs two descriptors`);
      max = sessions;
    }
    listenerMax.set(l.name, max);
  }
  return { globalMax, listenerMax, warnings };
}
