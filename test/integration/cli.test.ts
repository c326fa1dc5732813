/** The mqtt-lb command as users run it (design.md §3): check, keygen, exit codes. */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, LAUNCHER as BIN, startLb, stopAllLbs, sleep } from '../helpers/lb.js';
import { ROOT } from '../helpers/dist-build.js';
import { freePort } from '../helpers/mosquitto.js';
import { startedPid, waitGone } from '../helpers/processes.js';

/** The installed command (package.json "bin"): the launcher script. */

const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-cli-'));

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A balancer on a free port whose one server is unreachable (TCP probes): it starts, serves its admin port, and stops. */
async function unreachableServerConfig(admin: number): Promise<string> {
  return `listeners:
  - { name: mqtt, bind: 127.0.0.1:${await freePort()}, pool: p }
pools:
  p:
    servers: [{ name: s, address: 127.0.0.1:1 }]
    health: { type: tcp }
admin: { bind: 127.0.0.1:${admin} }
# These starts wait for 'mqtt-lb started' within seconds (under npx too): no warm-up (warm-up.test.ts has it).
warmUp: 0
`;
}

/** The environment with this Node first on PATH (the launcher and npx run \`node\` from PATH). */
function withThisNode(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` };
}

function file(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}

afterAll(async () => {
  await stopAllLbs();
  rmSync(dir, { recursive: true, force: true });
});

describe('mqtt-lb CLI', () => {
  it('check accepts the repository demo config', () => {
    const r = run(['check', '--config', 'lb.yaml']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('check warns when the config file is writable by its group or others (whoever writes it runs commands as the service)', () => {
    const f = file('shared.yaml', `listeners:\n  - { name: mqtt, bind: "127.0.0.1:1883", pool: p }\npools:\n  p:\n    servers: [{ name: b1, address: "127.0.0.1:1883" }]\n`);
    chmodSync(f, 0o666);
    const open = run(['check', '--config', f]);
    expect(open.status).toBe(0);
    expect(open.stderr).toContain(`warning: ${f} is writable by others (mode 666): whoever can write it controls this balancer, and runs commands with its rights (failover.notify, track scripts) at the next reload (chmod go-w)`);
    chmodSync(f, 0o664);
    expect(run(['check', '--config', f]).stderr).toContain(`warning: ${f} is writable by its group (mode 664)`);
    chmodSync(f, 0o644);
    expect(run(['check', '--config', f]).stderr).not.toContain('is writable by');
    // In a directory anyone may write (not sticky), anyone may replace it.
    const open777 = mkdtempSync(path.join(dir, 'open-'));
    chmodSync(open777, 0o777);
    const inOpen = path.join(open777, 'lb.yaml');
    writeFileSync(inOpen, readFileSync(f));
    expect(run(['check', '--config', inOpen]).stderr).toContain(`warning: ${inOpen} is writable by anyone who replaces it in its directory (mode 777)`);
    if (process.getuid?.() === 0) {
      // Owned by another user (as root here: chown works).
      chownSync(f, 65534, 65534);
      expect(run(['check', '--config', f]).stderr).toContain(`warning: ${f} is writable by its owner, uid 65534, neither root nor this user`);
    }
  });

  it('check resolves host names as a start would: a listener name that does not resolve is an error, a server one a warning', () => {
    const f = file(
      'names.yaml',
      `listeners:\n  - { name: mqtt, bind: "nosuch-listener.invalid:1883", pool: p }\npools:\n  p:\n    servers:\n      - { name: b1, address: "127.0.0.1:1883" }\n      - { name: b2, address: "nosuch-broker.invalid:1883" }\n`,
    );
    const r = run(['check', '--config', f]);
    expect(r.status).toBe(1);
    // At the value, as every other problem of the file is said.
    expect(r.stderr).toMatch(/^warning: \S+names\.yaml:7:30 pools\.p\.servers\[1\]\.address: host name `nosuch-broker\.invalid` does not resolve here \(\w+\): the balancer starts, and this server is down until it resolves$/m);
    expect(r.stderr).toMatch(/^\S+names\.yaml:2:25 listeners\[0\]\.bind: host name `nosuch-listener\.invalid` does not resolve here \(\w+\): a start would fail to bind it \(exit 2\)$/m);
  });

  it('check prints every problem as FILE:LINE:COL key.path: message and exits 1', () => {
    const f = file(
      'bad.yaml',
      `listeners:
  - name: mqtt
    bind: 0.0.0.0:1883
    pool: brokerz
pools:
  brokers:
    serverConnectTimeout: 3
    servers:
      - name: b1
        adress: 10.0.0.1:1883
`,
    );
    const r = run(['check', '--config', f]);
    expect(r.status).toBe(1);
    const all = r.stderr.trim().split('\n');
    // Warnings (a pool no listener uses) come as `warning: FILE:LINE:COL ...`; problems have no prefix.
    const lines = all.filter((l) => !l.startsWith('warning: '));
    for (const w of all.filter((l) => l.startsWith('warning: '))) expect(w).toMatch(/^warning: .+:\d+:\d+ /);
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const l of lines) expect(l).toMatch(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+ [\\w.\\[\\]]+: .+`));
    expect(r.stderr).toContain(`${f}:4:11 listeners[0].pool:`);
    expect(r.stderr).toContain(`${f}:7:27 pools.brokers.serverConnectTimeout:`);
    expect(r.stderr).toMatch(/servers\[0\]\.adress: .*did you mean `address`/);
  });

  it('every problem reaches a slow reader on a pipe (check, and a start that refuses the config)', () => {
    // An lb.yaml with 3,000 unknown keys (a file with none of lb.yaml's keys is one problem: "is this an mqtt-lb config file?").
    const many = file('many.yaml', `listeners: []\npools: {}\n${Array.from({ length: 3000 }, (_, i) => `k${i}: 1\n`).join('')}`);
    const expected = run(['check', '--config', many]).stderr.split('\n').length - 1;
    expect(expected).toBeGreaterThan(3000); // ~300 KB: more than a pipe holds
    for (const args of [['check', '--config', many], ['--config', many]]) {
      // The reader starts after the balancer has exited: the pipe alone cannot hold the output.
      const r = spawnSync('sh', ['-c', '"$@" 2>&1 | (sleep 1; wc -l)', 'sh', process.execPath, CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
      expect(Number(r.stdout.trim()), args.join(' ')).toBe(expected);
    }
  });

  it('an open-file limit that leaves room for no session: check exits 1, a start exits 2 (MQLB_START_FD_LIMIT)', async () => {
    const cfg = file('nofds.yaml', await unreachableServerConfig(await freePort()));
    const under150 = (args: string[]) => spawnSync('sh', ['-c', 'ulimit -n 150 && exec "$@"', 'sh', process.execPath, CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
    const checked = under150(['check', '--config', cfg]);
    expect(checked.status).toBe(1);
    expect(checked.stderr).toMatch(/^error: the open-file limit 150 leaves no room for a client session .* at least \d+/m);
    expect(checked.stdout).not.toContain('ok');
    const started = under150(['--config', cfg]);
    expect(started.status).toBe(2);
    expect(started.stderr).toMatch(/cannot start \(MQLB_START_FD_LIMIT\): the open-file limit 150 leaves no room/);
    // So low that loading the modules fails (EMFILE): the same code, one line, no stack trace.
    // Every limit from there down to where Node cannot load its entry (a new user's audit: 20-26 gave a stack trace
    // and exit 1, from the entry's own import; 28-33 named ERR_MODULE_NOT_FOUND, which reads like a broken install).
    for (const limit of [22, 24, 26, 28, 30, 32, 34, 40]) {
      const tiny = spawnSync('sh', ['-c', `ulimit -n ${limit} && exec "$@"`, 'sh', process.execPath, CLI, '--config', cfg], { encoding: 'utf8', timeout: 20_000 });
      expect(tiny.status, `ulimit -n ${limit}`).toBe(2);
      expect(tiny.stderr, `ulimit -n ${limit}`).toMatch(/^mqtt-lb: cannot start \(MQLB_START_FD_LIMIT\): the open-file limit is too low even to load mqtt-lb \(EMFILE\)/);
      expect(tiny.stderr).not.toMatch(/^\s+at /m);
    }
    // The launcher says so for a start below 64, and for any command below 20 (under ~18 Node itself crashes before
    // any of our code); `check` and the other commands say their own from there (a re-audit: `check` was refused too).
    const launch = (limit: number, args: string[]) => spawnSync('sh', ['-c', `ulimit -n ${limit} && exec "$@"`, 'sh', BIN, ...args], { encoding: 'utf8', timeout: 20_000 });
    const refused = (limit: number) => `mqtt-lb: cannot start (MQLB_START_FD_LIMIT): the open-file limit is too low to run mqtt-lb (hard limit ${limit}): raise it (ulimit -n, systemd LimitNOFILE) to a few thousand at least\n`;
    for (const [limit, args] of [[15, ['--version']], [63, ['--config', cfg]], [63, ['run', '-c', cfg]]] as const) {
      const launched = launch(limit, [...args]);
      expect(launched.status, `ulimit -n ${limit} ${args.join(' ')}`).toBe(2);
      expect(launched.stderr).toBe(refused(limit));
    }
    expect(launch(63, ['--version'])).toMatchObject({ status: 0, stdout: expect.stringMatching(/^\d+\.\d+\.\d+/) });
    const checked63 = launch(63, ['check', '--config', cfg]);
    expect(checked63.status).toBe(1);
    expect(checked63.stderr).toMatch(/^error: the open-file limit 63 leaves no room for a client session/m);
    expect(launch(64, ['--version']).status).toBe(0);
  });

  it('running with an invalid config exits 1 without starting', () => {
    const r = run(['--config', file('bad2.yaml', 'listeners: []\npools: {}\n')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/bad2\.yaml:\d+:\d+ /);
  });

  it('keygen prints base64 of 32 random bytes', () => {
    const a = run(['keygen']);
    const b = run(['keygen']);
    expect(a.status).toBe(0);
    expect(Buffer.from(a.stdout.trim(), 'base64').length).toBe(32);
    expect(a.stdout).not.toBe(b.stdout);
  });

  it('exits 2 when it cannot start (listener port in use)', async () => {
    const blocker = net.createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    try {
      const admin = await freePort();
      const lb = await startLb(`listeners:
  - { name: mqtt, bind: 127.0.0.1:${port}, pool: p }
pools:
  p:
    servers: [{ name: s, address: 127.0.0.1:1 }]
    health: { type: tcp }
admin: { bind: 127.0.0.1:${admin} }
`);
      expect(await lb.exited).toBe(2);
      expect(lb.logs.some((l) => l.msg === 'cannot start')).toBe(true);
      expect(lb.stderr.join('')).toBe(`mqtt-lb: cannot start (MQLB_START_BIND): listener mqtt: cannot bind 127.0.0.1:${port}: EADDRINUSE (something already listens there: another mqtt-lb on this config? \`ss -ltnp 'sport = :${port}'\` names it)\n`);
      await lb.stop();
    } finally {
      blocker.close();
    }
  });

  it('exits 2 when a file the valid config names is missing (design.md §3: a missing key file), saying where', () => {
    const f = file(
      'missing-cert.yaml',
      `listeners:
  - name: mqtts
    bind: 127.0.0.1:1
    pool: p
    tls: { cert: nowhere.crt, key: nowhere.key }
pools:
  p:
    servers: [{ name: s, address: 127.0.0.1:1 }]
`,
    );
    const r = run(['--config', f]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${f}:5:18 listeners[0].tls.cert: file \`nowhere.crt\``);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toBe('mqtt-lb: cannot start (MQLB_START_FILE): a file the config names is missing or unusable');
    // As every failed start (operations.md): a fatal `cannot start` line in the log, with the code.
    const fatal = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; code?: string }).find((l) => l.level === 60);
    expect(fatal).toMatchObject({ msg: 'cannot start', code: 'MQLB_START_FILE' });
    // check reports the same problems as a config error (exit 1).
    expect(run(['check', '--config', f]).status).toBe(1);
  });

  it('unknown options are a usage error', () => {
    const r = run(['--bogus']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('unknown option');
    // A config file given without --config (a new user's audit): said how to give it.
    expect(run(['check', 'my-lb.yaml']).stderr).toContain('mqtt-lb: unknown option: my-lb.yaml (a config file is given as `--config my-lb.yaml`)');
    expect(run(['/etc/mqtt-lb/lb.yaml']).stderr).toContain('mqtt-lb: unknown command: /etc/mqtt-lb/lb.yaml (a config file is given as `--config /etc/mqtt-lb/lb.yaml`)');
    // An admin URL that no admin server can have is one too (exit 1), not an unreachable server (exit 2).
    const ftp = run(['status', '--admin', 'ftp://127.0.0.1:9883']);
    expect(ftp.status).toBe(1);
    expect(ftp.stderr).toContain('not an admin URL: ftp://127.0.0.1:9883');
  });

  it('status --config FILE asks the running instance at that file\'s admin.bind', async () => {
    const admin = await freePort();
    const lb = await startLb(await unreachableServerConfig(admin), { waitPort: admin });
    try {
      const r = run(['status', '--config', lb.configFile]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^mqtt-lb \S+ {2}up /);
      expect(r.stdout).toContain('POOL p');
    } finally {
      await lb.stop();
    }
    const invalid = file('status-invalid.yaml', 'listeners: []\n');
    const bad = run(['status', '--config', invalid]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain(`${invalid}:1:`);
  });

  it('an option the command does not use is a usage error, not silently ignored', () => {
    const cases: Array<[string[], string]> = [
      [['status', '--config', 'lb.yaml', '--admin', 'http://127.0.0.1:9883'], 'status takes --admin URL or --config FILE (its admin.bind), not both'],
      [['check', '--config', 'lb.yaml', '--admin', 'http://127.0.0.1:9883'], '--admin is for `mqtt-lb status`'],
      [['--admin', '127.0.0.1:9883'], '--admin is for `mqtt-lb status`'],
      [['keygen', '--config', 'lb.yaml'], 'keygen takes no options'],
    ];
    for (const [argv, message] of cases) {
      const r = run(argv);
      expect(r.status, argv.join(' ')).toBe(1);
      expect(r.stderr, argv.join(' ')).toContain(message);
      expect(r.stdout, argv.join(' ')).toBe('');
    }
  });

  it('help, as a command or a flag, prints the usage with every command and exits 0', () => {
    for (const argv of [['help'], ['--help'], ['-h']]) {
      const r = run(argv);
      expect(r.status, argv.join(' ')).toBe(0);
      for (const command of ['run', 'check', 'status', 'keygen', 'help']) expect(r.stdout).toContain(`mqtt-lb ${command === 'run' ? '[run]' : command}`);
    }
  });

  it('the installed command execs node itself with its runtime settings: one process, signals reach the balancer', async () => {
    const admin = await freePort();
    const config = file('bin.yaml', await unreachableServerConfig(admin));
    const env = withThisNode();
    // Core files allowed as far as the hard limit lets (the test would prove nothing under a caller's limit of 0).
    const launch = (extra: NodeJS.ProcessEnv) =>
      spawn('sh', ['-c', 'ulimit -c "$(ulimit -Hc)" 2>/dev/null; exec "$@"', 'sh', BIN, '--config', config], { stdio: 'ignore', env: { ...env, ...extra } });
    const inspect = async (pid: number): Promise<{ argv: string[]; tunables: string | undefined; coreLimit: string | undefined }> => {
      // Bounded wait for the exec from sh to node, then for the admin port (the balancer is up).
      for (let i = 0; i < 100; i++) {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        if (argv.some((a) => a.endsWith('dist/src/cli.js'))) {
          const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
          const tunables = environ.find((e) => e.startsWith('GLIBC_TUNABLES='))?.slice('GLIBC_TUNABLES='.length);
          const coreLimit = /^Max core file size\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1];
          return { argv, tunables, coreLimit };
        }
        await sleep(50);
      }
      throw new Error('the launcher did not exec node');
    };
    const stop = async (child: ReturnType<typeof launch>): Promise<number | null> => {
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      for (let i = 0; i < 100; i++) {
        if (await fetch(`http://127.0.0.1:${admin}/healthz`).then((r) => r.ok, () => false)) break;
        await sleep(100);
      }
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    };

    const plain = launch({ GLIBC_TUNABLES: '' });
    const a = await inspect(plain.pid!);
    expect(a.argv).toContain('--max-semi-space-size=8');
    expect(a.argv).toContain('--single-threaded-gc');
    expect(a.tunables).toBe('glibc.malloc.trim_threshold=268435456');
    // No core file: one would hold the keys and the token. MQTT_LB_CORE_DUMPS=1 keeps the caller's limit.
    expect(a.coreLimit).toBe('0');
    expect(await stop(plain)).toBe(0);
    const dumpable = launch({ MQTT_LB_CORE_DUMPS: '1' });
    const hard = /^Max core file size\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
    expect((await inspect(dumpable.pid!)).coreLimit).toBe(hard);
    expect(await stop(dumpable)).toBe(0);

    // A caller's own tunables are kept and the trim threshold appended; MQTT_LB_NODE_FLAGS replaces the flags.
    // Seen through a stand-in `node` that prints what it was given (glibc rewrites a multi-tunable value in
    // /proc/PID/environ, though it applies every tunable).
    const fakeBin = mkdtempSync(path.join(dir, 'fake-node-'));
    writeFileSync(path.join(fakeBin, 'node'), '#!/bin/sh\nprintf "%s\\n" "$GLIBC_TUNABLES" "$@"\n', { mode: 0o755 });
    const seen = spawnSync(BIN, ['--config', config], {
      encoding: 'utf8',
      timeout: 10_000,
      env: { ...env, PATH: `${fakeBin}:${env.PATH}`, GLIBC_TUNABLES: 'glibc.malloc.arena_max=2', MQTT_LB_NODE_FLAGS: '--max-semi-space-size=2 --abort-on-uncaught-exception' },
    });
    const [tunables, ...argv] = seen.stdout.trim().split('\n');
    expect(tunables).toBe('glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=268435456');
    expect(argv.slice(0, 2)).toEqual(['--max-semi-space-size=2', '--abort-on-uncaught-exception']);
    expect(path.resolve(argv[2]!)).toBe(CLI);
    expect(argv.slice(3)).toEqual(['--config', config]);
  });

  it('under `npx mqtt-lb`, a SIGTERM or SIGKILL to npx stops the balancer instead of orphaning it on its ports', async () => {
    // npm forwards SIGTERM to its `sh -c` only; the shell dies and the balancer ran on with no parent.
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      const admin = await freePort();
      const config = file(`npx-${signal}.yaml`, `${await unreachableServerConfig(admin)}limits: { drainTimeout: 1s }\n`);
      const env = withThisNode();
      const npx = spawn('npx', ['--no-install', 'mqtt-lb', '--config', config], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      npx.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      npx.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      let pid = 0;
      try {
        pid = await startedPid(() => out, 10_000);
        expect(pid, out).toBeGreaterThan(0);
        expect(pid).not.toBe(npx.pid);
        npx.kill(signal);
        // Not kill(pid, 0): the balancer is an orphan now, and a zombie until pid 1 reaps it (in some containers never).
        expect(await waitGone(pid, 10_000), out).toBe(true);
        expect(out).toContain('"msg":"stop requested: the launching process has gone"');
        expect(out).toContain('"msg":"stopped"');
      } finally {
        npx.kill('SIGKILL');
        // An orphaned balancer (the defect this guards against) must not outlive the test.
        if (pid > 0) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }
    }
  }, 60_000);
});
