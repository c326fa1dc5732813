/**
 * L4 probe: the server accepts a TCP connection within the timeout (HAProxy L4OK / L4TOUT / L4CON).
 * It proves the port is open, not that the broker answers MQTT (see mqtt.ts for that).
 */
import type { ProbeOutcome, SocketTarget } from './probe-outcome.js';
import { endGracefully, runSocketProbe } from './socket-probe.js';

export interface TcpProbeOptions {
  timeout: number; // ms, connect included
}

export function probeTcp(target: SocketTarget, opts: TcpProbeOptions, signal?: AbortSignal): Promise<ProbeOutcome> {
  return runSocketProbe(target, opts.timeout, signal, {
    onConnect(probe) {
      // Close with FIN rather than RST: brokers log resets as errors (bifromq #167).
      probe.settle('ok', undefined, true);
      endGracefully(probe.socket);
    },
  });
}
