/**
 * The client ID a health probe connects with. Brokers in a cluster treat client IDs cluster-wide and a
 * second CONNECT with the same ID takes the first session over (3.1.1 [MQTT-3.1.4-2], v5 [MQTT-3.1.4-3]):
 * the ID must differ per LB host and per server, and never be a real client's.
 */
import { createHash } from 'node:crypto';

/** MQTT 3.1 only guarantees client IDs of 1..23 characters (3.1.1 keeps that floor, [MQTT-3.1.3-5]). */
const MQTT31_MAX_CLIENT_ID = 23;

/** The placeholders a configured probe client ID may use; anything else in braces is sent as written (`check` warns). */
export const CLIENT_ID_PLACEHOLDERS = ['{hostname}', '{pool}', '{server}', '{pid}'] as const;

/** Who is probing what: the names the placeholders stand for. */
export interface ProbeNames {
  hostname: string;
  pool: string;
  server: string;
}

/** The `{...}` parts of a configured ID that are no placeholder (a typo such as `{sever}`, or `{port}`). */
export function unknownPlaceholders(configured: string): string[] {
  const known: readonly string[] = CLIENT_ID_PLACEHOLDERS;
  return [...new Set(configured.match(/\{[^{}]*\}/g) ?? [])].filter((p) => !known.includes(p));
}

/**
 * `configured` null: `mqtt-lb-health-<hostname>-<server>`. A configured ID may use the placeholders
 * `{hostname}` and `{server}` (without them every server of the pool gets the same ID, which a clustered
 * broker treats as one session), `{pool}` for two pools of one balancer that reach one cluster under the same
 * server names, and `{pid}` for several balancers on one host.
 * For MQTT 3.1 (level 3) an ID longer than 23 characters is shortened to `mqttlb-` + 16 hex digits of its
 * SHA-256, so it stays distinct per host and server.
 */
export function healthClientId(configured: string | null, names: ProbeNames, version: 3 | 4 | 5, pid = process.pid): string {
  const id =
    configured === null
      ? `mqtt-lb-health-${names.hostname}-${names.server}`
      : configured
          .replaceAll('{hostname}', names.hostname)
          .replaceAll('{pool}', names.pool)
          .replaceAll('{server}', names.server)
          .replaceAll('{pid}', String(pid));
  if (version === 3 && Buffer.byteLength(id) > MQTT31_MAX_CLIENT_ID) {
    return `mqttlb-${createHash('sha256').update(id).digest('hex').slice(0, 16)}`;
  }
  return id;
}
