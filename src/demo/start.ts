/**
 * `npm start`: start embedded demo brokers for every loopback server in the config, then run mqtt-lb
 * on that config in this process. With real brokers, run `mqtt-lb --config FILE` instead.
 */
import { loadConfig } from '../config/load.js';
import { ConfigError, MqttLbError, formatProblem } from '../errors.js';
import { startDemoCluster } from './brokers.js';
import { runBalancer } from '../run.js';
import { printErr } from '../cli-output.js';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

async function main(): Promise<void> {
  const file = process.argv[2] ?? 'lb.yaml';
  let config;
  try {
    config = loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      printErr(err.problems.map((p) => formatProblem(p) + '\n').join(''));
      process.exit(1);
    }
    // A file that cannot be read: one line, as `mqtt-lb` itself says it.
    if (err instanceof MqttLbError) {
      printErr(`${err.message} (${err.code})\n`);
      process.exit(1);
    }
    throw err;
  }
  const addresses = [];
  for (const pool of Object.values(config.pools)) {
    for (const s of pool.servers) if (LOOPBACK.has(s.host)) addresses.push({ host: s.host, port: s.port });
  }
  if (addresses.length === 0) {
    // Nothing to stand in for: this is a real deployment's file.
    printErr(`demo: ${file} names no loopback server, so there is nothing for \`npm start\` (the demo) to embed: run it with \`npx mqtt-lb --config ${file}\`\n`);
    process.exit(1);
  }
  let cluster;
  try {
    cluster = await startDemoCluster(addresses);
  } catch (err) {
    // Like the balancer's own "cannot start" (a port in use): one clear line and exit 2, not a stack trace.
    const inUse = (err as NodeJS.ErrnoException).code === 'EADDRINUSE';
    const hint = inUse ? ` (\`npm start\` runs demo brokers on the config's loopback servers; with real brokers there, run \`npx mqtt-lb --config ${file}\`)` : '';
    printErr(`demo: cannot start the embedded brokers: ${(err as Error).message}${hint}\n`);
    process.exit(2);
  }
  // On stderr, with the other plain-text lines: stdout is the JSON log, one object per line.
  printErr(`demo: ${addresses.length} embedded aedes brokers (MQTT 3.1/3.1.1, one shared bus) on ${addresses.map((a) => `${a.host}:${a.port}`).join(', ')}\n`);
  const code = await runBalancer(file);
  await cluster.close();
  process.exit(code);
}

void main();
