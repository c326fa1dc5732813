/**
 * `failover:` of lb.yaml. Its values become arguments of `ip` and `arping` and addresses of UDP adverts,
 * so each one is checked against a strict pattern here, never at the moment it is used.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { DEFAULTS } from './defaults.js';
import { formatDuration } from './duration.js';
import { FAILOVER_TRANSPORTS, KEYS, NAME_RE, NAME_RULE } from './keys.js';
import { INTERFACE_RE, isIPv4Multicast, parseVip } from './net-syntax.js';
import type { FailoverConfig, FailoverInstanceConfig, TrackScriptConfig } from './types.js';
import type { ValidationContext } from './validate-context.js';
import { isScalar } from 'yaml';
import { writtenAsFraction, type ConfigReader, type MapReader, type Slot } from './yaml-reader.js';

/** The advert carries the interval in centiseconds in 2 bytes (design §6b). */
const ADVERT_UNIT_MS = 10;
const ADVERT_MAX_MS = 0xffff * ADVERT_UNIT_MS;

const SHORTHAND_KEYS = ['routerId', 'priority', 'vips'] as const;

/** The shortest `interval` and `timeout` of a track script. */
const TRACK_SCRIPT_MIN_MS = 100;

export function readFailover(ctx: ValidationContext, root: MapReader): FailoverConfig | null {
  const { r } = ctx;
  const slot = root.get('failover');
  if (slot === undefined || r.isNull(slot)) return null; // absent = no VIP management
  const m = r.mapping(slot, KEYS.failover);
  if (m === undefined) return null;
  const d = DEFAULTS.failover;

  const ifaceSlot = m.required('interface', 'the interface the VIPs are added to, e.g. eth0');
  const iface =
    ifaceSlot !== undefined
      ? r.string(ifaceSlot, {
          pattern: INTERFACE_RE,
          rule: 'an interface name is 1 to 15 letters, digits, `_`, `.` or `-`, does not start with `-` or `.` (no alias labels such as `eth0:1`) and is not `help`',
        })
      : undefined;
  if (iface !== undefined && ifaceSlot !== undefined) ctx.hostValue('interface', ifaceSlot, iface);

  const transport = m.oneOf('transport', d.transport, FAILOVER_TRANSPORTS);
  const peers = readPeers(ctx, m, transport);
  const group = readGroup(r, m);

  const keySlot = m.required('authKeyFile', 'the key file written by `mqtt-lb keygen`');
  const authKeyFile = keySlot !== undefined ? ctx.filePath(keySlot) : undefined;

  const notifySlot = m.get('notify');
  const notify = notifySlot === undefined || r.isNull(notifySlot) ? d.notify : (ctx.filePath(notifySlot, 'execute') ?? null);

  return {
    interface: iface ?? '',
    transport,
    peers,
    group,
    port: m.int('port', d.port, 1, 65535),
    authKeyFile: authKeyFile ?? '',
    advertInterval: m.duration('advertInterval', d.advertInterval, {
      min: ADVERT_UNIT_MS,
      max: ADVERT_MAX_MS,
      multipleOf: ADVERT_UNIT_MS,
    }),
    preempt: m.bool('preempt', d.preempt),
    preemptDelay: m.duration('preemptDelay', d.preemptDelay, { min: 0 }),
    instances: readInstances(r, m, peers),
    track: readTrack(ctx, m),
    garp: readGarp(m),
    notify,
  };
}

function readPeers(ctx: ValidationContext, m: MapReader, transport: FailoverConfig['transport']): string[] {
  const { r } = ctx;
  const slot = m.get('peers');
  const peers: string[] = [];
  let written = 0; // entries in the list, valid or not
  if (slot !== undefined && !r.isNull(slot)) {
    const seen = new Set<string>();
    const items = r.list(slot);
    written = items?.length ?? -1;
    for (const item of items ?? []) {
      const text = r.string(item);
      if (text === undefined) continue;
      if (isIPv6(text)) {
        r.error(item, 'IPv6 peers are not supported yet');
      } else if (!isIPv4(text)) {
        r.error(item, `\`${text}\` is not an IPv4 address`);
      } else if (seen.has(text)) {
        r.error(item, `duplicate peer \`${text}\``);
      } else {
        seen.add(text);
        peers.push(text);
        if (transport === 'unicast') ctx.hostValue('peer', item, text);
      }
    }
  }
  if (transport === 'unicast') {
    if (slot === undefined) {
      r.out.error(m.slot.at, `${m.path}.peers`, 'missing required key `peers` (transport unicast sends the adverts to them)');
    } else if (written === 0) {
      r.error(slot, 'must list at least one peer address with transport unicast');
    }
  } else if (slot !== undefined && peers.length > 0) {
    r.warn(slot, 'ignored with transport multicast');
  }
  return peers;
}

function readGroup(r: ConfigReader, m: MapReader): string {
  const slot = m.get('group');
  if (slot === undefined) return DEFAULTS.failover.group;
  const text = r.string(slot);
  if (text === undefined) return DEFAULTS.failover.group;
  if (!isIPv4Multicast(text)) {
    r.error(slot, `\`${text}\` is not an IPv4 multicast address (224.0.0.0 to 239.255.255.255)`);
    return DEFAULTS.failover.group;
  }
  return text; // written but unused with unicast: harmless (the contract's own example does it)
}

/** The shorthand (routerId/priority/vips) is instances[0]; `instances` is for several VIP groups. */
function readInstances(r: ConfigReader, m: MapReader, peers: readonly string[]): FailoverInstanceConfig[] {
  const instancesSlot = m.get('instances');
  const listed = instancesSlot !== undefined && !r.isNull(instancesSlot) ? (r.list(instancesSlot) ?? []) : [];
  const shorthandUsed = SHORTHAND_KEYS.filter((k) => m.has(k));
  const useList = listed.length > 0;
  if (useList && shorthandUsed.length > 0) {
    r.error(
      instancesSlot!,
      `use either \`instances\` or the shorthand ${shorthandUsed.map((k) => `\`${k}\``).join(', ')}, not both`,
    );
  }

  const routerIds: Array<{ slot: Slot; id: number }> = [];
  const vipSlots: Array<{ slot: Slot; vip: string }> = [];
  // The shorthand is read (and its problems reported) even when `instances` wins, so one run shows everything;
  // its ids and VIPs then stay out of the uniqueness checks (the "not both" problem says it all).
  const shorthand = useList
    ? readInstance(r, m, SHORTHAND_BESIDE_LIST, [], [])
    : readInstance(r, m, SHORTHAND, routerIds, vipSlots);
  const instances = useList
    ? listed.flatMap((item) => {
        const im = r.mapping(item, KEYS.instance);
        return im !== undefined ? [readInstance(r, im, LIST_ENTRY, routerIds, vipSlots)] : [];
      })
    : [shorthand];

  // Adverts name their instance by router id, and a VIP held by two instances would flap between them.
  const firstRouterId = new Map<number, Slot>();
  const firstVip = new Map<string, Slot>();
  for (const { slot, id } of routerIds) r.unique(firstRouterId, id, slot, `routerId ${id}`);
  for (const { slot, vip } of vipSlots) {
    const address = vip.split('/')[0]!;
    r.unique(firstVip, address, slot, `VIP \`${address}\``);
    // The peer's own address: whenever this host is master it would take it from the peer (a failover audit).
    if (peers.includes(address)) r.error(slot, `\`${address}\` is the address of a peer (failover.peers): a VIP must be an address no host owns`);
  }
  return instances;
}

/** What an instance mapping must hold: an entry of `instances`, or the shorthand keys of `failover` itself. */
interface InstanceRules {
  routerIdRequired: boolean;
  /** The problem when `vips` is absent; null when absence is fine (the shorthand beside an `instances` list). */
  vipsMissing: string | null;
}
const LIST_ENTRY: InstanceRules = {
  routerIdRequired: true,
  vipsMissing: 'missing required key `vips` (the IPv4 addresses this instance moves)',
};
const SHORTHAND: InstanceRules = {
  routerIdRequired: false,
  vipsMissing: 'missing required key `vips` (or list the VIP groups under `instances`)',
};
const SHORTHAND_BESIDE_LIST: InstanceRules = { routerIdRequired: false, vipsMissing: null };

function readInstance(
  r: ConfigReader,
  m: MapReader,
  rules: InstanceRules,
  routerIds: Array<{ slot: Slot; id: number }>,
  vipSlots: Array<{ slot: Slot; vip: string }>,
): FailoverInstanceConfig {
  const d = DEFAULTS.failoverInstance;
  const idSlot = rules.routerIdRequired ? m.required('routerId', '1 to 255, the same on both hosts') : m.get('routerId');
  const routerId = idSlot !== undefined ? r.int(idSlot, 1, 255) : undefined;
  if (idSlot !== undefined && routerId !== undefined) routerIds.push({ slot: idSlot, id: routerId });

  let vips: string[] = [];
  const vipsSlot = m.get('vips');
  if (vipsSlot === undefined) {
    if (rules.vipsMissing !== null) r.out.error(m.slot.at, `${m.path}.vips`, rules.vipsMissing);
  } else if (r.isNull(vipsSlot)) {
    r.error(vipsSlot, 'must list at least one VIP, e.g. [192.0.2.10/24]');
  } else {
    vips = readVips(r, vipsSlot, vipSlots);
  }
  return {
    routerId: routerId ?? (idSlot === undefined && !rules.routerIdRequired ? d.routerId : 0),
    priority: m.int('priority', d.priority, 1, 254),
    vips,
  };
}

function readVips(r: ConfigReader, slot: Slot, seen: Array<{ slot: Slot; vip: string }>): string[] {
  const items = r.list(slot);
  if (items === undefined) return [];
  if (items.length === 0) {
    r.error(slot, 'must list at least one VIP, e.g. [192.0.2.10/24]');
    return [];
  }
  const vips: string[] = [];
  for (const item of items) {
    const vip = r.parsed(item, parseVip);
    if (vip === undefined) continue;
    vips.push(vip);
    seen.push({ slot: item, vip });
  }
  return vips;
}

function readTrack(ctx: ValidationContext, m: MapReader): FailoverConfig['track'] {
  const d = DEFAULTS.failover.track;
  const t = m.section('track', KEYS.track);
  if (t === undefined) return { listeners: d.listeners, interface: d.interface, pools: { weight: d.pools.weight }, scripts: [] };
  const pools = t.section('pools', KEYS.trackPools);
  return {
    listeners: t.bool('listeners', d.listeners),
    interface: t.bool('interface', d.interface),
    pools: { weight: pools !== undefined ? readTrackWeight(pools) : d.pools.weight },
    scripts: readTrackScripts(ctx, t),
  };
}

/** keepalived's `vrrp_script` blocks, each a list entry (run by src/failover/track-scripts.ts). */
function readTrackScripts(ctx: ValidationContext, t: MapReader): TrackScriptConfig[] {
  const { r } = ctx;
  const slot = t.get('scripts');
  if (slot === undefined || r.isNull(slot)) return [];
  const items = r.list(slot);
  if (items === undefined) return [];
  const d = DEFAULTS.trackScript;
  const scripts: TrackScriptConfig[] = [];
  const firstByName = new Map<string, Slot>();
  for (const item of items) {
    const s = r.mapping(item, KEYS.trackScript);
    if (s === undefined) continue;
    const nameSlot = s.required('name', 'names the script in the log lines');
    const name = nameSlot !== undefined ? (r.string(nameSlot, { pattern: NAME_RE, rule: NAME_RULE }) ?? '') : '';
    if (nameSlot !== undefined && name !== '') r.unique(firstByName, name, nameSlot, `script name \`${name}\``);
    const commandSlot = s.required('command', 'the executable to run, e.g. /usr/local/bin/check-gateway; no shell: its arguments go in `args`');
    const command = commandSlot !== undefined ? ctx.filePath(commandSlot, 'execute') : undefined;
    const argsSlot = s.get('args');
    const args: string[] = [];
    const argItems = argsSlot === undefined || r.isNull(argsSlot) ? [] : (r.list(argsSlot) ?? []);
    for (const a of argItems) {
      // As written: `args: [-c, 1, 010]` passes "1" and "010", not what YAML makes of them as numbers.
      const plain = isScalar(a.node) && a.node.type === 'PLAIN' && typeof a.node.value !== 'string' && a.node.value !== null ? a.node.source : undefined;
      const v = typeof plain === 'string' ? plain : r.string(a, { allowEmpty: true, pattern: /^[^\0]*$/, rule: 'an argument cannot contain NUL' });
      if (v !== undefined) args.push(v);
    }
    // A fork and exec every few ms is a busy core, and a timeout that short fails a healthy check under load.
    const interval = s.duration('interval', d.interval, { min: TRACK_SCRIPT_MIN_MS });
    const timeoutSlot = s.get('timeout');
    const timeout = s.duration('timeout', Math.min(d.timeout, interval), { min: TRACK_SCRIPT_MIN_MS });
    if (timeoutSlot !== undefined && timeout > interval) r.error(timeoutSlot, `must not be longer than \`interval\` (${formatDuration(interval)}): one run at a time`);
    scripts.push({
      name,
      command: command ?? '',
      args,
      interval,
      timeout,
      rise: s.int('rise', d.rise, 1, 100),
      fall: s.int('fall', d.fall, 1, 100),
      weight: readTrackWeight(s, d.weight),
    });
  }
  return scripts;
}

/** keepalived writes `weight -60` to lower the priority; here the weight is always subtracted. */
function readTrackWeight(pools: MapReader, def: number = DEFAULTS.failover.track.pools.weight): number {
  const { r } = pools;
  const slot = pools.get('weight');
  const v = slot !== undefined && isScalar(slot.node) ? slot.node.value : undefined;
  if (slot !== undefined && typeof v === 'number' && Number.isInteger(v) && v < 0 && v >= -254 && !writtenAsFraction(slot.node)) {
    r.error(slot, `must be an integer between 0 and 254 (got ${v}; the weight is subtracted already: write \`${-v}\`)`);
    return def;
  }
  return pools.int('weight', def, 0, 254);
}

function readGarp(m: MapReader): FailoverConfig['garp'] {
  const d = DEFAULTS.failover.garp;
  const g = m.section('garp', KEYS.garp);
  if (g === undefined) return { count: d.count, interval: d.interval, repeatAfter: d.repeatAfter };
  return {
    count: g.int('count', d.count, 0, 100),
    interval: g.duration('interval', d.interval, { min: 0, minExclusive: true }),
    repeatAfter: g.duration('repeatAfter', d.repeatAfter, { min: 0 }),
  };
}

