/**
 * The interface's unresolved neighbour entries, dropped when its carrier comes back (`ip neigh flush dev IFACE nud
 * incomplete nud failed`). While the link was down, every packet this host sent (health probes, the sessions'
 * retransmits) left an INCOMPLETE entry that the kernel re-solicits only at its retransmit timer, once a second;
 * a packet queued behind such an entry after the link is back waits for that timer. The netns failover test saw a
 * broker's entry still INCOMPLETE 420 ms after link-up, and every health probe sent then timed out. A dropped entry
 * is created anew by the next packet, with an ARP request at once. Resolved (REACHABLE, STALE) and static entries
 * are kept.
 */
import { ErrorCodes, MqttLbError } from '../errors.js';
import { describeResult, runCommand } from './command.js';
import { checkInterfaceName, IP_COMMAND, IP_TIMEOUT_MS } from './vip.js';

export async function flushUnresolvedNeighbours(iface: string): Promise<void> {
  checkInterfaceName(iface);
  const args = ['neigh', 'flush', 'dev', iface, 'nud', 'incomplete', 'nud', 'failed'];
  const r = await runCommand(IP_COMMAND, args, { timeoutMs: IP_TIMEOUT_MS });
  if (r.code !== 0) throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, describeResult(IP_COMMAND, args, r));
}
