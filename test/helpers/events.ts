/** Waiting, bounded, for one event of an emitter (a socket's close, a child's exit). */
import type { EventEmitter } from 'node:events';

/** True if `emitter` emits `event` within `ms`; false when the time runs out first (the listener is removed). */
export function eventWithin(emitter: EventEmitter, event: string, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      emitter.off(event, onEvent);
      resolve(false);
    }, ms);
    const onEvent = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    emitter.once(event, onEvent);
  });
}
