/**
 * L4 probe: the server accepts a TCP connection within the timeout (HAProxy L4OK / L4TOUT / L4CON).
 * It proves the port is open, not that the broker answers MQTT (see mqtt.ts for that).
 */
import type { ProbeOutcome, SocketTarget } from './probe-outcome.js';
import { endGracefully, runSocketProbe } from './socket-probe.js';
import { probeProxyHeader } from './proxy-header.js';

export interface TcpProbeOptions {
  timeout: number; // ms, connect included
  /** The pool's sendProxyProtocol: a broker that expects a PROXY header gets one (v2 LOCAL / v1 UNKNOWN). */
  proxyProtocol?: 'off' | 'v1' | 'v2';
}

export function probeTcp(target: SocketTarget, opts: TcpProbeOptions, signal?: AbortSignal): Promise<ProbeOutcome> {
  const header = probeProxyHeader(opts.proxyProtocol ?? 'off');
  return runSocketProbe(target, opts.timeout, signal, {
    onConnect(probe) {
      // Close with FIN rather than RST: brokers log resets as errors (bifromq #167); one that requires a PROXY
      // header would also log a connection without one, so it is sent first.
      probe.settle('ok', undefined, true);
      endGracefully(probe.socket, header ?? undefined);
    },
  });
}
