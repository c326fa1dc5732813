/**
 * Picks and parameterises the probe for one server from its pool's health config.
 */
import type { Server } from '../balancer/server.js';
import type { PoolConfig } from '../config/types.js';
import { healthClientId } from './client-id.js';
import { healthUrlFor, probeHttp } from './http.js';
import { probeMqtt } from './mqtt.js';
import type { ProbeOutcome } from './probe-outcome.js';
import { probeTcp } from './tcp.js';

export interface ServerProbeContext {
  /** This LB host's name, part of the default MQTT probe client ID. */
  hostname: string;
}

export type ServerProbe = (server: Server, pool: PoolConfig, signal: AbortSignal) => Promise<ProbeOutcome>;

export function probeServer(server: Server, pool: PoolConfig, ctx: ServerProbeContext, signal: AbortSignal): Promise<ProbeOutcome> {
  const health = pool.health;
  const port = health.port ?? server.config.port;
  const target = { host: server.config.host, port };
  // A PROXY header goes only where the pool's traffic goes: the traffic port speaks it (hence a LOCAL/UNKNOWN
  // header there), a separate probe port is another listener (HAProxy sends one there only with check-send-proxy).
  const proxyProtocol = port === server.config.port ? pool.sendProxyProtocol : 'off';
  switch (health.type) {
    case 'tcp':
      return probeTcp(target, { timeout: health.timeout, proxyProtocol }, signal);
    case 'mqtt':
      return probeMqtt(
        target,
        {
          timeout: health.timeout,
          version: health.mqtt.version,
          clientId: healthClientId(health.mqtt.clientId, { hostname: ctx.hostname, pool: server.pool, server: server.name }, health.mqtt.version),
          username: health.mqtt.username,
          password: health.mqtt.password,
          proxyProtocol,
        },
        signal,
      );
    case 'http':
      return probeHttp({ url: healthUrlFor(server.config, health.http) }, { timeout: health.timeout }, signal);
    case 'none':
      return Promise.resolve({ result: 'ok', durationMs: 0 });
  }
}
