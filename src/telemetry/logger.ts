/**
 * The root pino logger. Components take `root.child({ component: 'health' })` once, at creation
 * (pino serializes child bindings once), and log constant messages with fields in an object.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogConfig } from '../config/types.js';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { LogStream, nonBlockingOutput } from './log-stream.js';

/**
 * @param destination where the JSON lines go; default stdout through a LogStream: never blocking on a pipe or a
 *   socket, at most `log.bufferBytes` queued while the reader is behind (beyond, lines are dropped, counted, and
 *   reported once it has caught up), flushed by `logger.flush(cb)` at a stop (bounded) and at process exit.
 */
export function createLogger(config: LogConfig, destination?: DestinationStream): Logger {
  const stdout = destination === undefined ? new LogStream(nonBlockingOutput(1), config.bufferBytes) : null;
  const log = pino(
    {
      name: 'mqtt-lb',
      level: config.level,
      timestamp: pino.stdTimeFunctions.isoTime,
      // CONNECT credentials never reach a log line even if a caller logs a whole object by mistake.
      redact: { paths: ['password', '*.password'], censor: '[redacted]' },
      // An error's cause as an object of its own: our messages already say what the cause says (pino's default
      // serializer appends every cause's message to the error's, which then read twice).
      serializers: { err: serializeError },
      formatters: { log: withErrorCode },
    },
    destination ?? stdout!,
  );
  if (stdout !== null) {
    stdout.onDropsEnded = (dropped) =>
      log.warn({ code: ErrorCodes.LOG_LINES_DROPPED, dropped, bufferBytes: config.bufferBytes }, 'log lines dropped: the log reader did not keep up');
  }
  return log;
}

/**
 * pino's error with its cause; without stack traces for our own errors (MQLB_... codes: a file that cannot be read, an
 * address in use) and for the operating system's (a `syscall` and an errno `code`: a name that does not resolve, a
 * refused connect), which an operator meets and whose message says what and where: the frames only add noise to the
 * line. Any other error keeps its stack: that one is a bug to report.
 */
function serializeError(err: Error): ReturnType<typeof pino.stdSerializers.errWithCause> {
  const out = pino.stdSerializers.errWithCause(err);
  return err instanceof MqttLbError || isSystemError(err) ? withoutStacks(out) : out;
}

function isSystemError(err: Error): boolean {
  const e = err as NodeJS.ErrnoException;
  return typeof e.syscall === 'string' && typeof e.code === 'string';
}

function withoutStacks<T>(serialized: T): T {
  if (serialized === null || typeof serialized !== 'object') return serialized;
  const { stack: _stack, ...rest } = serialized as Record<string, unknown>;
  if (rest['cause'] !== undefined) rest['cause'] = withoutStacks(rest['cause']);
  return rest as T;
}

/**
 * docs/errors.md: "in the JSON log the code is the line's `code` field". A line logged with `{ err }` alone gets
 * the code of the error when it is one of ours (MQLB_...), so that a line is matched on `code` whatever logged it.
 */
function withErrorCode(fields: Record<string, unknown>): Record<string, unknown> {
  if (fields.code !== undefined) return fields;
  const code = (fields.err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && code.startsWith('MQLB_') ? { code, ...fields } : fields;
}

export type { Logger };
