/**
 * The shared lifecycle of a one-shot TCP probe: dial, run a protocol step, and settle exactly once
 * on success, failure, deadline or outside abort; the socket is always gone when the promise settles
 * (except when a step chose to end it gracefully, see `endGracefully`).
 */
import net from 'node:net';
import { lookupServerName } from '../proxy/server-name-cache.js';
import type { CheckResult } from '../balancer/server.js';
import {
  ABORTED_DETAIL,
  elapsedSince,
  errorDetail,
  resultForSocketError,
  type ProbeOutcome,
  type SocketTarget,
} from './probe-outcome.js';

export interface SocketProbeSteps {
  /** TCP is connected: write the first bytes, or settle at once (`probe.settle('ok')`). */
  onConnect(probe: SocketProbeRun): void;
  /** Bytes from the server. */
  onData?(probe: SocketProbeRun, chunk: Buffer): void;
  /** The server closed before the step settled. */
  onEnd?(probe: SocketProbeRun): void;
}

export interface SocketProbeRun {
  readonly socket: net.Socket;
  /** Settle the probe; the first call wins. The socket is destroyed unless `keepSocket` is set. */
  settle(result: CheckResult, detail?: string, keepSocket?: boolean): void;
}

/** How long a gracefully ending probe socket may linger before it is destroyed. */
const GRACEFUL_END_BOUND_MS = 1000;

export function runSocketProbe(
  target: SocketTarget,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  steps: SocketProbeSteps,
): Promise<ProbeOutcome> {
  const startedAt = performance.now();
  if (signal?.aborted) return Promise.resolve({ result: 'error', durationMs: 0, detail: ABORTED_DETAIL });
  let socket: net.Socket;
  try {
    // The sessions' cache of the name (a resolver outage holds the last answer, as for the sessions).
    socket = net.connect({ host: target.host, port: target.port, noDelay: true, lookup: lookupServerName });
  } catch (err) {
    // e.g. a port out of range: a result, never a rejection
    return Promise.resolve({ result: 'error', durationMs: elapsedSince(startedAt), detail: errorDetail(err) });
  }
  return new Promise<ProbeOutcome>((resolve) => {
    let connected = false;
    let settled = false;
    const run: SocketProbeRun = {
      socket,
      settle(result, detail, keepSocket = false) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.removeListener('data', onData);
        if (!keepSocket) socket.destroy();
        const outcome: ProbeOutcome = { result, durationMs: elapsedSince(startedAt) };
        if (detail !== undefined) outcome.detail = detail;
        if (connected) outcome.connected = true;
        resolve(outcome);
      },
    };
    const onAbort = (): void => run.settle('error', ABORTED_DETAIL);
    const onData = (chunk: Buffer): void => steps.onData?.(run, chunk);
    // A name the resolver has not answered for yet: said so, rather than blaming the network (an audit's finding).
    let resolved = net.isIP(target.host) !== 0;
    const timer = setTimeout(
      () =>
        run.settle(
          'timeout',
          connected ? `no answer within ${timeoutMs} ms` : resolved ? `no connection within ${timeoutMs} ms` : `no address for ${target.host} within ${timeoutMs} ms (the resolver did not answer)`,
        ),
      timeoutMs,
    );
    signal?.addEventListener('abort', onAbort, { once: true });
    // After settling, errors (e.g. a reset while ending) must not become uncaught exceptions.
    socket.on('error', (err: NodeJS.ErrnoException) => run.settle(connected ? 'error' : resultForSocketError(err), errorDetail(err)));
    socket.on('data', onData);
    socket.once('end', () => {
      if (steps.onEnd) steps.onEnd(run);
      else run.settle('error', 'connection closed by server');
    });
    socket.once('close', () => run.settle('error', 'connection closed'));
    socket.once('lookup', () => (resolved = true));
    socket.once('connect', () => {
      connected = true;
      steps.onConnect(run);
    });
  });
}

/**
 * End a probe socket politely (FIN after the pending bytes) and destroy it when done, or after a bound
 * if the server never closes its side.
 */
export function endGracefully(socket: net.Socket, lastBytes?: Buffer): void {
  const bound = setTimeout(() => socket.destroy(), GRACEFUL_END_BOUND_MS);
  bound.unref();
  socket.once('close', () => clearTimeout(bound));
  socket.resume(); // discard whatever the server still sends
  if (lastBytes) socket.end(lastBytes);
  else socket.end();
}
