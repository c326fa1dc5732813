/**
 * The root pino logger. Components take `root.child({ component: 'health' })` once, at creation
 * (pino serializes child bindings once), and log constant messages with fields in an object.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogConfig } from '../config/types.js';

/**
 * @param destination where the JSON lines go; default stdout, written synchronously so that the last
 *   lines before an exit (a failed start, a shutdown) are never lost in a buffer.
 */
export function createLogger(config: LogConfig, destination?: DestinationStream): Logger {
  return pino(
    {
      name: 'mqtt-lb',
      level: config.level,
      timestamp: pino.stdTimeFunctions.isoTime,
      // CONNECT credentials never reach a log line even if a caller logs a whole object by mistake.
      redact: { paths: ['password', '*.password'], censor: '[redacted]' },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

export type { Logger };
