/**
 * The logging surface the failover code needs. A pino `Logger` satisfies it; inside the worker thread a shim
 * forwards records to the proxy process's logger (one logger, one set of transports and levels).
 */
export interface LogSink {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Makes log fields safe for postMessage (structured clone): errors become plain objects. */
export function cloneableFields(obj: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v instanceof Error) {
      const code = (v as NodeJS.ErrnoException).code;
      out[k] = code === undefined ? { name: v.name, message: v.message } : { name: v.name, message: v.message, code };
    } else if (typeof v === 'bigint') {
      out[k] = v.toString();
    } else if (typeof v !== 'function' && typeof v !== 'symbol') {
      out[k] = v;
    }
  }
  return out;
}

/** Logs at most once per `everyMs` per key, with the number of suppressed repeats (send errors, drops). */
export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(
    private readonly log: LogSink,
    private readonly everyMs: number,
    private readonly now: () => number,
  ) {}

  warn(key: string, obj: object, msg: string): void {
    this.emit('warn', key, obj, msg);
  }

  error(key: string, obj: object, msg: string): void {
    this.emit('error', key, obj, msg);
  }

  private emit(level: 'warn' | 'error', key: string, obj: object, msg: string): void {
    const t = this.now();
    const e = this.last.get(key);
    if (e !== undefined && t - e.at < this.everyMs) {
      e.suppressed++;
      return;
    }
    const fields = e !== undefined && e.suppressed > 0 ? { ...obj, suppressed: e.suppressed } : obj;
    if (level === 'error') this.log.error(fields, msg);
    else this.log.warn(fields, msg);
    this.last.set(key, { at: t, suppressed: 0 });
  }
}
