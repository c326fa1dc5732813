#!/usr/bin/env node
/**
 * The entry point of the mqtt-lb command. Only this is loaded before the early signal handlers are in place
 * (early-signals.ts: a SIGHUP or SIGTERM right after the start must not kill the balancer); the command itself,
 * with the config parser and everything it loads, comes after them (cli-main.ts).
 */
import './early-signals.js';
import { exitOnStartFailure } from './load-failure.js';

// Loading the command opens a file per module: at a low open-file limit it fails here (load-failure.ts).
await import('./cli-main.js').catch(exitOnStartFailure);
