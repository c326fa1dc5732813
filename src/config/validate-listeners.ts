/** `listeners:` of lb.yaml: names, binds, TLS and PROXY-protocol sources. */
import { DEFAULTS } from './defaults.js';
import { EVICT_WITH, KEYS, NAME_RE, NAME_RULE, REFUSE_WITH } from './keys.js';
import type { ListenerConfig, TlsConfig } from './types.js';
import { readCidrList, type ValidationContext } from './validate-context.js';
import { isScalar } from 'yaml';
import { describe, YAML11_BOOLEAN_WORD, type MapReader, type Slot } from './yaml-reader.js';

/** A listener plus where its cross-checked values are, for problems found later (pool, bind). */
export interface ListenerDraft {
  config: ListenerConfig;
  poolSlot: Slot | undefined;
  bindSlot: Slot | undefined;
}

export function readListeners(ctx: ValidationContext, slot: Slot): ListenerDraft[] {
  const { r } = ctx;
  const items = r.list(slot);
  if (items === undefined) return [];
  if (items.length === 0) {
    r.error(slot, 'must list at least one listener');
    return [];
  }
  const drafts: ListenerDraft[] = [];
  const firstByName = new Map<string, Slot>();
  for (const item of items) {
    const m = r.mapping(item, KEYS.listener);
    if (m === undefined) continue;
    const draft = readListener(ctx, m);
    const nameSlot = m.get('name');
    const name = draft.config.name;
    if (name !== '' && nameSlot !== undefined) r.unique(firstByName, name, nameSlot, `listener name \`${name}\``);
    drafts.push(draft);
  }
  return drafts;
}

function readListener(ctx: ValidationContext, m: MapReader): ListenerDraft {
  const { r } = ctx;
  const nameSlot = m.required('name', 'used as the metric label');
  const name = nameSlot !== undefined ? (r.string(nameSlot, { pattern: NAME_RE, rule: NAME_RULE }) ?? '') : '';

  const bindSlot = m.required('bind', 'host:port, e.g. 0.0.0.0:1883');
  const bind = bindSlot !== undefined ? r.hostPort(bindSlot) : undefined;

  const poolSlot = m.required('pool', 'the name of a pool under `pools`');
  const pool = poolSlot !== undefined ? (r.string(poolSlot) ?? '') : '';

  const config: ListenerConfig = {
    name,
    bind: bind?.text ?? '',
    address: bind?.address ?? { host: '', port: 0 },
    pool,
    maxConnections: m.int('maxConnections', DEFAULTS.listener.maxConnections, 1),
    maxConnectionsWritten: m.has('maxConnections'),
    tls: readTls(ctx, m),
    // CIDRs whose connections must open with a PROXY header.
    acceptProxyProtocol: readCidrList(ctx.r, m, 'acceptProxyProtocol', DEFAULTS.listener.acceptProxyProtocol),
    refuseWith: m.oneOf('refuseWith', DEFAULTS.listener.refuseWith, REFUSE_WITH),
    evictWith: m.oneOf('evictWith', DEFAULTS.listener.evictWith, EVICT_WITH),
  };
  return {
    config,
    poolSlot: pool !== '' ? poolSlot : undefined,
    bindSlot: bind !== undefined ? bindSlot : undefined,
  };
}

/** `requestCert`: true, false or `optional`. */
function readRequestCert(ctx: ValidationContext, m: MapReader): TlsConfig['requestCert'] {
  const slot = m.get('requestCert');
  if (slot === undefined) return DEFAULTS.tls.requestCert;
  if (isScalar(slot.node) && slot.node.value === 'optional') return 'optional';
  const { r } = ctx;
  // Another word is neither; a YAML 1.1 word (`yes`, `on`) is left to r.bool, whose message says why it is no boolean.
  if (isScalar(slot.node) && typeof slot.node.value === 'string' && !YAML11_BOOLEAN_WORD.test(slot.node.value)) {
    r.error(slot, `must be true, false or \`optional\` (got ${describe(slot.node)})`);
    return DEFAULTS.tls.requestCert;
  }
  return r.bool(slot) ?? DEFAULTS.tls.requestCert;
}

function readTls(ctx: ValidationContext, listener: MapReader): TlsConfig | null {
  const { r } = ctx;
  const m = listener.section('tls', KEYS.tls);
  if (m === undefined) return null;
  const certSlot = m.required('cert', 'the PEM certificate chain file');
  const keySlot = m.required('key', 'the PEM private key file');
  const caSlot = m.get('ca');
  const tls: TlsConfig = {
    cert: (certSlot !== undefined ? ctx.filePath(certSlot) : undefined) ?? '',
    key: (keySlot !== undefined ? ctx.filePath(keySlot) : undefined) ?? '',
    ca: caSlot === undefined || r.isNull(caSlot) ? DEFAULTS.tls.ca : (ctx.filePath(caSlot) ?? null),
    requestCert: readRequestCert(ctx, m),
    certAsUsername: m.bool('certAsUsername', DEFAULTS.tls.certAsUsername),
    material: null, // read with the files (load.ts), when they are checked
  };
  const certAsUsernameSlot = m.get('certAsUsername');
  if (tls.certAsUsername && tls.requestCert !== true && certAsUsernameSlot !== undefined) {
    r.error(
      certAsUsernameSlot,
      tls.requestCert === 'optional'
        ? 'needs `requestCert: true`: with `optional` a client without a certificate would send the broker a username of its own choosing'
        : 'needs `requestCert: true`: without it there is no verified client certificate to read',
    );
  }
  const requestCertSlot = m.get('requestCert');
  if (!tls.requestCert && tls.ca !== null && caSlot !== undefined) {
    // HAProxy's `ca-file` comes with `verify required`; here a `ca` alone would look like mutual TLS and be none.
    r.warn(caSlot, 'used only with `requestCert: true` or `optional`: without it no client certificate is asked for or checked');
  }
  if (tls.requestCert && tls.ca === null && requestCertSlot !== undefined) {
    r.warn(requestCertSlot, 'no `ca` given: client certificates are checked against Node\'s default root CAs');
  }
  return tls;
}

