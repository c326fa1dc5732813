/**
 * "did you mean" for unknown keys: the closest allowed key by edit distance, after folding case and
 * `_`/`-` (so `max_connections` and `maxconnections` find `maxConnections`), plus the names operators
 * bring from HAProxy and keepalived.
 */

/** Words from HAProxy / keepalived / EMQX configs and the lb.yaml key they correspond to. */
const FOREIGN_NAMES: Readonly<Record<string, string>> = {
  maxconn: 'maxConnections',
  server_state_file: 'stateFile',
  serverstatefile: 'stateFile',
  inter: 'interval',
  virtual_router_id: 'routerId',
  virtualrouterid: 'routerId',
  vrid: 'routerId',
  unicast_peer: 'peers',
  unicastpeers: 'peers',
  advert_int: 'advertInterval',
  virtual_ipaddress: 'vips',
  vip: 'vips',
  preempt_delay: 'preemptDelay',
  nopreempt: 'preempt',
  auth_pass: 'authKeyFile',
  authkey: 'authKeyFile',
  notify_master: 'notify',
  send_proxy: 'sendProxyProtocol',
  sendproxy: 'sendProxyProtocol',
  accept_proxy: 'acceptProxyProtocol',
  acceptproxy: 'acceptProxyProtocol',
  backends: 'servers',
  backend: 'servers',
  upstreams: 'servers',
  frontends: 'listeners',
  listen: 'bind',
  address: 'bind',
  addr: 'address',
  host: 'address',
  check: 'health',
  healthcheck: 'health',
  algorithm: 'balance',
  strategy: 'balance',
  connecttimeout: 'serverConnectTimeout',
  certificate: 'cert',
  privatekey: 'key',
  loglevel: 'level',
  // HAProxy values and names
  leastconn: 'least-connections',
  timeoutconnect: 'serverConnectTimeout',
  timeoutclient: 'idleTimeout',
  timeoutserver: 'idleTimeout',
  timeouttunnel: 'idleTimeout',
  timeoutclientfin: 'idleTimeout',
  fastinter: 'fastInterval',
  downinter: 'downInterval',
  ssl: 'tls',
  crt: 'cert',
  cafile: 'ca',
  verify: 'requestCert',
  sendproxyv2: 'sendProxyProtocol',
  // keepalived
  state: 'priority',
  trackscript: 'track',
  trackinterface: 'track',
  garpmasterrepeat: 'garp',
  garpmasterdelay: 'garp',
  garpmasterrefresh: 'garp',
};

function fold(s: string): string {
  return s.toLowerCase().replace(/[_-]/g, '');
}

/** Optimal string alignment distance (Levenshtein plus adjacent transposition: `pirority`). */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array<number>(rows * cols).fill(0);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[(i - 1) * cols + j]! + 1, d[i * cols + j - 1]! + 1, d[(i - 1) * cols + j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, d[(i - 2) * cols + j - 2]! + 1);
      }
      d[i * cols + j] = v;
    }
  }
  return d[rows * cols - 1]!;
}

/** The allowed key `unknown` most likely meant, or null when nothing is close enough to be a useful hint. */
export function suggestKey(unknown: string, allowed: readonly string[]): string | null {
  const folded = fold(unknown);
  const foreign = FOREIGN_NAMES[unknown.toLowerCase()] ?? FOREIGN_NAMES[folded];
  if (foreign !== undefined && allowed.includes(foreign)) return foreign;
  // Up to a third of the word may differ, at least 1 edit and at most 3.
  const limit = Math.min(3, Math.max(1, Math.floor(folded.length / 3)));
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const key of allowed) {
    const dist = editDistance(folded, fold(key));
    if (dist < bestDistance) {
      best = key;
      bestDistance = dist;
    }
  }
  return bestDistance <= limit ? best : null;
}
