/** Files named by lb.yaml (TLS, failover key, notify hook) must exist when files are checked. */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { tlsCertificateWarning } from '../../src/config/tls-material.js';
import { ConfigError, ConfigFileError, formatProblem } from '../../src/errors.js';
import { createTestPki, type TestPki } from '../helpers/tls-certs.js';
import { generateKey } from '../../src/failover/key.js';

/** Lines 1-10; tls on lines 5-9, failover on 11-17. */
const CONFIG = `listeners:
  - name: mqtts
    bind: 0.0.0.0:8883
    pool: brokers
    tls:
      cert: certs/server.crt
      key: certs/server.key
      ca: ca.crt
      requestCert: true
pools: { brokers: { servers: [{ name: b1, address: "10.0.0.11:1883" }] } }
failover:
  interface: eth0
  peers: [10.0.0.2]
  authKeyFile: failover.key
  vips: [192.0.2.10/24]
  notify: hooks/notify.sh
`;

/** The host checks, against a host of the config's interface only: what this machine has must not change the outcome. */
const CHECKS = { checkFiles: true, hostAddresses: new Map([['eth0', ['192.0.2.2']]]) };

describe('files named by the config', () => {
  let dir = '';
  let pki: TestPki;
  beforeAll(() => {
    pki = createTestPki();
  });
  afterAll(() => {
    pki?.cleanup();
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-files-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function createAll(): void {
    mkdirSync(join(dir, 'certs'), { recursive: true });
    mkdirSync(join(dir, 'hooks'), { recursive: true });
    writeFileSync(join(dir, 'certs/server.crt'), pki.read(pki.serverCert));
    writeFileSync(join(dir, 'certs/server.key'), pki.read(pki.serverKey), { mode: 0o600 });
    writeFileSync(join(dir, 'ca.crt'), pki.read(pki.caCert));
    writeFileSync(join(dir, 'failover.key'), `${generateKey()}\n`);
    writeFileSync(join(dir, 'hooks/notify.sh'), '#!/bin/sh\n');
    chmodSync(join(dir, 'hooks/notify.sh'), 0o755);
  }

  it('resolves relative paths against the config file directory', () => {
    createAll();
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, CONFIG);
    const config = loadConfig(file);
    expect(config.listeners[0]!.tls).toEqual({
      cert: join(dir, 'certs/server.crt'),
      key: join(dir, 'certs/server.key'),
      ca: join(dir, 'ca.crt'),
      requestCert: true,
      certAsUsername: false,
      // The files' text as checked: what the TLS servers (every worker's, restarted ones too) are built from.
      material: { cert: pki.read(pki.serverCert).toString(), key: pki.read(pki.serverKey).toString(), ca: pki.read(pki.caCert).toString() },
    });
    expect(config.failover!.authKeyFile).toBe(join(dir, 'failover.key'));
    expect(config.failover!.notify).toBe(join(dir, 'hooks/notify.sh'));
  });

  it('reports every missing file at its key, in file order', () => {
    const file = join(dir, 'lb.yaml');
    const out = parseConfig(CONFIG, file, CHECKS);
    expect(out.config).toBeNull();
    expect(out.problems.map(formatProblem)).toEqual([
      `${file}:6:13 listeners[0].tls.cert: file \`certs/server.crt\` (${join(dir, 'certs/server.crt')}) does not exist`,
      `${file}:7:12 listeners[0].tls.key: file \`certs/server.key\` (${join(dir, 'certs/server.key')}) does not exist`,
      `${file}:8:11 listeners[0].tls.ca: file \`ca.crt\` (${join(dir, 'ca.crt')}) does not exist`,
      `${file}:14:16 failover.authKeyFile: file \`failover.key\` (${join(dir, 'failover.key')}) does not exist: \`mqtt-lb keygen > FILE\` makes one (mode 0600; the same file on both LB hosts)`,
      `${file}:16:11 failover.notify: file \`hooks/notify.sh\` (${join(dir, 'hooks/notify.sh')}) does not exist`,
    ]);
    // A dangling symbolic link (a certificate renewal that went wrong) says where it points (a TLS audit).
    mkdirSync(join(dir, 'certs'), { recursive: true });
    symlinkSync(join(dir, 'certs/renewed.crt'), join(dir, 'certs/server.crt'));
    expect(parseConfig(CONFIG, file, CHECKS).problems.map(formatProblem)[0]).toBe(
      `${file}:6:13 listeners[0].tls.cert: file \`certs/server.crt\` (${join(dir, 'certs/server.crt')}) is a symbolic link to \`${join(dir, 'certs/renewed.crt')}\`, which does not exist`,
    );
  });

  it('does not touch the file system unless asked (parseConfig default)', () => {
    const out = parseConfig(CONFIG, join(dir, 'lb.yaml'));
    expect(out.problems).toEqual([]);
    expect(out.config).not.toBeNull();
    expect(out.config!.listeners[0]!.tls!.material).toBeNull();
  });

  it('loadConfig checks files and throws ConfigError', () => {
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, CONFIG);
    expect(() => loadConfig(file)).toThrow(ConfigError);
  });

  it('wants regular files, and an executable notify hook', () => {
    createAll();
    rmSync(join(dir, 'ca.crt'));
    mkdirSync(join(dir, 'ca.crt')); // a directory where a file is expected
    chmodSync(join(dir, 'hooks/notify.sh'), 0o644);
    const file = join(dir, 'lb.yaml');
    const out = parseConfig(CONFIG, file, CHECKS);
    expect(out.problems.map(formatProblem)).toEqual([
      `${file}:8:11 listeners[0].tls.ca: \`ca.crt\` (${join(dir, 'ca.crt')}) is not a regular file`,
      `${file}:16:11 failover.notify: file \`hooks/notify.sh\` (${join(dir, 'hooks/notify.sh')}) is not executable`,
    ]);
  });

  it('a notify hook given arguments (keepalived\'s `notify_master "/x/notify.sh MASTER"`) says how it is called', () => {
    createAll();
    const file = join(dir, 'lb.yaml');
    const ARGS = 'arguments cannot be given, the hook is called as `notify STATE ROUTER_ID`';
    const out = parseConfig(CONFIG.replace('notify: hooks/notify.sh', 'notify: "hooks/notify.sh MASTER"'), file, CHECKS);
    expect(out.problems.map(formatProblem)).toEqual([
      `${file}:16:11 failover.notify: file \`hooks/notify.sh MASTER\` (${join(dir, 'hooks/notify.sh MASTER')}) does not exist: ${ARGS}`,
    ]);
    const absolute = parseConfig(CONFIG.replace('notify: hooks/notify.sh', 'notify: /nonexistent/notify.sh BACKUP'), file, CHECKS);
    expect(absolute.problems.map(formatProblem)).toEqual([`${file}:16:11 failover.notify: file \`/nonexistent/notify.sh BACKUP\` does not exist: ${ARGS}`]);
    // At start, the same line (exit 2: only a file is wrong).
    writeFileSync(file, CONFIG.replace('notify: hooks/notify.sh', 'notify: "hooks/notify.sh MASTER"'));
    expect(() => loadConfig(file)).toThrow(expect.objectContaining({ message: expect.stringContaining(ARGS) }));
    // A hook whose file name has a space in it is a hook.
    writeFileSync(join(dir, 'hooks/my notify.sh'), '#!/bin/sh\n');
    chmodSync(join(dir, 'hooks/my notify.sh'), 0o755);
    expect(parseConfig(CONFIG.replace('notify: hooks/notify.sh', 'notify: "hooks/my notify.sh"'), file, CHECKS).problems).toEqual([]);
  });

  it('failover.track.scripts: each command must exist, be executable and be safe from other users; arguments go in `args`', () => {
    createAll();
    const file = join(dir, 'lb.yaml');
    writeFileSync(join(dir, 'hooks/check.sh'), '#!/bin/sh\n');
    chmodSync(join(dir, 'hooks/check.sh'), 0o755);
    const withScript = (command: string): string => `${CONFIG}  track:\n    scripts:\n      - { name: gw, command: ${command}, args: [10.0.0.1] }\n`;
    const problems = (command: string): string[] => parseConfig(withScript(command), file, CHECKS).problems.map(formatProblem);
    expect(problems('hooks/check.sh')).toEqual([]);
    const config = parseConfig(withScript('hooks/check.sh'), file, CHECKS).config!;
    expect(config.failover!.track.scripts).toEqual([
      { name: 'gw', command: join(dir, 'hooks/check.sh'), args: ['10.0.0.1'], interval: 2000, timeout: 1000, rise: 1, fall: 1, weight: 0 },
    ]);
    expect(problems('hooks/missing.sh')).toEqual([
      `${file}:19:30 failover.track.scripts[0].command: file \`hooks/missing.sh\` (${join(dir, 'hooks/missing.sh')}) does not exist`,
    ]);
    expect(problems('"hooks/check.sh 10.0.0.1"')).toEqual([
      `${file}:19:30 failover.track.scripts[0].command: file \`hooks/check.sh 10.0.0.1\` (${join(dir, 'hooks/check.sh 10.0.0.1')}) does not exist: arguments go in \`args\` (a list), without a shell`,
    ]);
    chmodSync(join(dir, 'hooks/check.sh'), 0o644);
    expect(problems('hooks/check.sh')).toEqual([`${file}:19:30 failover.track.scripts[0].command: file \`hooks/check.sh\` (${join(dir, 'hooks/check.sh')}) is not executable`]);
    chmodSync(join(dir, 'hooks/check.sh'), 0o777);
    expect(problems('hooks/check.sh')).toEqual([
      `${file}:19:30 failover.track.scripts[0].command: it is writable by others (mode 777): whoever can change the script runs commands with this process's privileges (chmod go-w, chown root)`,
    ]);
  });

  // Reference catalogue #85, keepalived's enable_script_security: the hook runs with this process's capabilities.
  it('refuses a notify hook that another user could change: the file or a directory above it writable by others', () => {
    createAll();
    const file = join(dir, 'lb.yaml');
    const hook = join(dir, 'hooks/notify.sh');
    const problems = (): string[] => parseConfig(CONFIG, file, CHECKS).problems.map(formatProblem);
    expect(problems()).toEqual([]);
    chmodSync(hook, 0o777);
    expect(problems()).toEqual([
      `${file}:16:11 failover.notify: it is writable by others (mode 777): whoever can change the hook runs commands with this process's privileges (chmod go-w, chown root)`,
    ]);
    chmodSync(hook, 0o755);
    chmodSync(join(dir, 'hooks'), 0o777); // anyone could put another notify.sh in its place
    expect(problems()).toEqual([
      `${file}:16:11 failover.notify: directory ${join(dir, 'hooks')} on its path is writable by others (mode 777): whoever can change the hook runs commands with this process's privileges (chmod go-w, chown root)`,
    ]);
    chmodSync(join(dir, 'hooks'), 0o1777); // sticky, as /tmp: only the file's owner may replace it
    expect(problems()).toEqual([]);
    // A symlink in a directory others may write: they could re-point it, whatever its target's modes.
    chmodSync(join(dir, 'hooks'), 0o755);
    mkdirSync(join(dir, 'open'));
    chmodSync(join(dir, 'open'), 0o777);
    rmSync(hook);
    writeFileSync(join(dir, 'hooks/real.sh'), '#!/bin/sh\n', { mode: 0o755 });
    symlinkSync(join(dir, 'hooks/real.sh'), join(dir, 'open/notify.sh'));
    symlinkSync(join(dir, 'open/notify.sh'), hook);
    expect(problems()).toEqual([
      `${file}:16:11 failover.notify: directory ${join(dir, 'open')} on its path is writable by others (mode 777): whoever can change the hook runs commands with this process's privileges (chmod go-w, chown root)`,
    ]);
    // A relative target is read from the symlink's real directory, as the kernel does (`..` after a symlinked
    // directory): here hooks/notify.sh -> ../x through `via` -> real/deep runs real/x (mode 777), not the decoy x.
    rmSync(hook);
    mkdirSync(join(dir, 'real/deep'), { recursive: true });
    writeFileSync(join(dir, 'real/x'), '#!/bin/sh\n', { mode: 0o777 });
    chmodSync(join(dir, 'real/x'), 0o777);
    writeFileSync(join(dir, 'x'), '#!/bin/sh\n', { mode: 0o755 });
    symlinkSync(join(dir, 'real/deep'), join(dir, 'via'));
    symlinkSync('../x', join(dir, 'real/deep/link'));
    symlinkSync(join(dir, 'via/link'), hook);
    expect(problems()).toEqual([
      `${file}:16:11 failover.notify: the file it runs, ${join(dir, 'real/x')}, is writable by others (mode 777): whoever can change the hook runs commands with this process's privileges (chmod go-w, chown root)`,
    ]);
    // `..` after a symlink goes up from where the symlink led, as in the kernel: hooks/notify.sh -> L/../evil.sh
    // with L -> ../open/sub runs open/evil.sh, in the world-writable directory (a decoy sits in hooks/).
    rmSync(hook);
    mkdirSync(join(dir, 'open/sub'));
    writeFileSync(join(dir, 'open/evil.sh'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(dir, 'hooks/evil.sh'), '#!/bin/sh\n', { mode: 0o755 });
    symlinkSync('../open/sub', join(dir, 'hooks/L'));
    symlinkSync('L/../evil.sh', hook);
    expect(problems()).toEqual([
      `${file}:16:11 failover.notify: directory ${join(dir, 'open')} on its path is writable by others (mode 777): whoever can change the hook runs commands with this process's privileges (chmod go-w, chown root)`,
    ]);
  });

  // Only this host can tell (check, start, reload), and only with the host checks: pure parsing does not look.
  it("warns about a failover peer that is this host's own address (a config copied from the other host unchanged)", () => {
    createAll();
    chmodSync(join(dir, 'failover.key'), 0o600);
    const file = join(dir, 'lb.yaml');
    const host = new Map([
      ['lo', ['127.0.0.1', '::1']],
      ['eth0', ['10.0.0.2', 'fe80::1']],
    ]);
    const out = parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: host });
    expect(out.problems).toEqual([]);
    expect(out.warnings).toEqual([
      `${file}:13:11 failover.peers[0]: \`10.0.0.2\` is an address of this host (eth0): adverts sent to it reach no peer, and this host is master alone; list the other LB host's address`,
    ]);
    expect(parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: new Map([['eth0', ['10.0.0.1']]]) }).warnings).toEqual([]);
    expect(parseConfig(CONFIG, file, { hostAddresses: host }).warnings).toEqual([]);
    // The interface: not here, or without an IPv4 address (adverts need one): the start would fail.
    expect(parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: new Map([['eth1', ['10.0.0.1']]]) }).warnings).toEqual([
      `${file}:12:14 failover.interface: \`eth0\` is not an interface of this host with an address: failover waits until it has one (adverts need a source address): no VIP on this host meanwhile, while the proxy serves`,
    ]);
    // An address with a label (ifupdown's eth0:0) is the interface's: `ip addr show dev eth0` lists it.
    expect(parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: new Map([['eth0', ['fe80::1']], ['eth0:0', ['10.0.0.1']]]) }).warnings).toEqual([]);
    expect(parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: new Map([['eth0', ['fe80::1']]]) }).warnings).toEqual([
      `${file}:12:14 failover.interface: \`eth0\` has no IPv4 address on this host: failover waits until it has one (adverts need a source address): no VIP on this host meanwhile, while the proxy serves`,
    ]);
    // Its only IPv4 address is a VIP: most likely the host's own address written as a VIP, which the start refuses.
    expect(parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: new Map([['eth0', ['192.0.2.10', 'fe80::1']]]) }).warnings).toEqual([
      `${file}:12:14 failover.interface: \`eth0\` has no IPv4 address besides the VIP 192.0.2.10: is it this host's own address? A VIP must be an address no host owns (it is removed whenever this host is not master); the start refuses (exit 2)`,
    ]);
    // A master: its own address and the VIP.
    expect(parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: new Map([['eth0', ['10.0.0.1', '192.0.2.10']]]) }).warnings).toEqual([]);
  });

  // A failover audit: without arping a preempting host took the VIP and clients kept the old master's MAC for ~30 s.
  it('warns when the programs the failover runs (ip, arping) are not on PATH', () => {
    createAll();
    chmodSync(join(dir, 'failover.key'), 0o600);
    const file = join(dir, 'lb.yaml');
    const host = new Map([['eth0', ['10.0.0.1']]]);
    const without = (missing: string[]) => parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: host, onPath: (p) => !missing.includes(p) }).warnings;
    expect(without([])).toEqual([]);
    expect(without(['arping'])).toEqual([
      `${file}:12:14 failover: \`arping\` (iputils-arping) is not on PATH: a host that takes a VIP over cannot announce it, and clients whose ARP entry names the old master do not reach it until the entry expires (~30 s; apt-get install iputils-arping)`,
    ]);
    expect(without(['ip', 'arping'])).toHaveLength(2);
    expect(without(['ip'])[0]).toContain('failover: `ip` (iproute2) is not on PATH: no VIP can be added or removed');
  });

  it('warns when a TLS private key is readable by every user of the host (not when by its group: ssl-cert)', () => {
    createAll();
    chmodSync(join(dir, 'failover.key'), 0o600);
    const file = join(dir, 'lb.yaml');
    const host = new Map([['eth0', ['10.0.0.1']]]);
    chmodSync(join(dir, 'certs/server.key'), 0o644);
    expect(parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: host }).warnings).toEqual([
      `${file}:7:12 listeners[0].tls.key: is readable by every user of this host (mode 644): anyone can impersonate this listener with it (chmod o-r)`,
    ]);
    chmodSync(join(dir, 'certs/server.key'), 0o640);
    expect(parseConfig(CONFIG, file, { checkFiles: true, hostAddresses: host }).warnings).toEqual([]);
  });

  it('warns when the failover key file is readable by group or others', () => {
    createAll();
    const file = join(dir, 'lb.yaml');
    chmodSync(join(dir, 'failover.key'), 0o600);
    expect(parseConfig(CONFIG, file, CHECKS).warnings).toEqual([]);
    chmodSync(join(dir, 'failover.key'), 0o644);
    const out = parseConfig(CONFIG, file, CHECKS);
    expect(out.problems).toEqual([]);
    expect(out.warnings).toEqual([`${file}:14:16 failover.authKeyFile: is readable by group or others (mode 644): anyone who reads it can forge adverts (chmod 600)`]);
  });

  // What start would refuse, check refuses too, at the listener's tls: (haproxy -c loads certificates as well).
  it('loads the TLS material: a key of another certificate, a certificate that is not PEM, a CA file of no certificate', () => {
    const file = join(dir, 'lb.yaml');
    const problemsWith = (write: () => void): string[] => {
      createAll();
      write();
      return parseConfig(CONFIG, file, CHECKS).problems.map(formatProblem);
    };
    expect(problemsWith(() => {})).toEqual([]);
    const other = pki.issueClient('someone-else');
    const mismatch = problemsWith(() => writeFileSync(join(dir, 'certs/server.key'), pki.read(other.key)));
    // At the key's value (line 7), which is the file that is wrong.
    expect(mismatch).toEqual([`${file}:7:12 listeners[0].tls.key: the key does not belong to the certificate (both ec, but of another key pair)`]);
    expect(problemsWith(() => writeFileSync(join(dir, 'certs/server.crt'), 'not a certificate'))).toEqual([
      `${file}:6:13 listeners[0].tls.cert: holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    ]);
    expect(problemsWith(() => writeFileSync(join(dir, 'ca.crt'), pki.read(pki.serverKey)))).toEqual([
      `${file}:8:11 listeners[0].tls.ca: holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    ]);
    // A chain in reverse order (issuer first): said so, at the certificate file.
    const reversed = Buffer.concat([pki.read(pki.caCert), pki.read(pki.serverCert)]);
    expect(problemsWith(() => writeFileSync(join(dir, 'certs/server.crt'), reversed))).toEqual([
      `${file}:6:13 listeners[0].tls.cert: the certificates are in the wrong order: the key belongs to certificate 2 of 2; the server's own certificate must come first, then its intermediates`,
    ]);
    // A key of another type (RSA beside the EC certificate): OpenSSL alone let it pass, and every handshake failed.
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    expect(problemsWith(() => writeFileSync(join(dir, 'certs/server.key'), rsa))).toEqual([
      `${file}:7:12 listeners[0].tls.key: the key does not belong to the certificate (a rsa key; the certificate's is ec)`,
    ]);
    // An encrypted key: said so, with what to do.
    const encrypted = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'secret' });
    const enc = problemsWith(() => writeFileSync(join(dir, 'certs/server.key'), encrypted));
    expect(enc).toHaveLength(1);
    expect(enc[0]).toContain(':7:12 listeners[0].tls.key: the key is encrypted');
    // The certificate's file given as the key: said so, not OpenSSL's "DECODER routines::unsupported".
    expect(problemsWith(() => writeFileSync(join(dir, 'certs/server.key'), pki.read(pki.serverCert)))).toEqual([
      `${file}:7:12 listeners[0].tls.key: holds a certificate, not a private key (-----BEGIN PRIVATE KEY-----): is it the certificate's file?`,
    ]);
    // Neither a key nor a certificate: no guess that it is the certificate's file (a TLS audit).
    expect(problemsWith(() => writeFileSync(join(dir, 'certs/server.key'), 'garbage\n'))).toEqual([
      `${file}:7:12 listeners[0].tls.key: holds no PEM private key (-----BEGIN PRIVATE KEY-----)`,
    ]);
    // A bad key does not hide a bad CA file: every problem at once.
    expect(
      problemsWith(() => {
        writeFileSync(join(dir, 'certs/server.key'), encrypted);
        writeFileSync(join(dir, 'ca.crt'), 'no certificate here');
      }),
    ).toEqual([
      expect.stringContaining(`${file}:7:12 listeners[0].tls.key: the key is encrypted`),
      `${file}:8:11 listeners[0].tls.ca: holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    ]);
  });

  it('warns about a certificate that clients will refuse: expired, or not valid yet', () => {
    const cert = readFileSync(pki.serverCert);
    expect(tlsCertificateWarning(cert)).toBeNull();
    expect(tlsCertificateWarning(cert, new Date(Date.now() + 400 * 86_400_000))).toMatch(/^the certificate expired on \d{4}-.*: clients that verify it refuse the connection$/);
    expect(tlsCertificateWarning(cert, new Date(Date.now() - 400 * 86_400_000))).toMatch(/^the certificate is not valid before \d{4}-/);
  });

  // A TLS audit: a 1024-bit RSA key and an expired intermediate passed `check` in silence; clients refused both.
  it('warns about a key too short for OpenSSL\'s defaults, and an expired intermediate in the chain', () => {
    const work = mkdtempSync(join(tmpdir(), 'mqtt-lb-weak-'));
    try {
      const run = (args: string[]) => execFileSync('openssl', args, { cwd: work, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
      run(['req', '-x509', '-newkey', 'rsa:1024', '-nodes', '-keyout', 'weak.key', '-out', 'weak.pem', '-days', '30', '-subj', '/CN=weak']);
      expect(tlsCertificateWarning(readFileSync(join(work, 'weak.pem')))).toBe(
        "the certificate's RSA key has 1024 bits: clients on OpenSSL's default security level refuse it (`EE certificate key too weak`), as HAProxy refuses to load it; use 2048 bits or more",
      );
      // A chain whose intermediate expires before its leaf: judged 5 days on.
      writeFileSync(join(work, 'ca.ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign,cRLSign\n');
      run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'int.key', '-out', 'int.csr', '-subj', '/CN=Short Intermediate']);
      run(['x509', '-req', '-in', 'int.csr', '-signkey', 'int.key', '-days', '1', '-out', 'int.pem', '-extfile', 'ca.ext']);
      run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=leaf']);
      run(['x509', '-req', '-in', 'leaf.csr', '-CA', 'int.pem', '-CAkey', 'int.key', '-CAcreateserial', '-days', '30', '-out', 'leaf.pem']);
      const chain = Buffer.concat([readFileSync(join(work, 'leaf.pem')), readFileSync(join(work, 'int.pem'))]);
      expect(tlsCertificateWarning(chain)).toBeNull();
      expect(tlsCertificateWarning(chain, new Date(Date.now() + 5 * 86_400_000))).toMatch(
        /^certificate 2 of 2 in the chain \(CN=Short Intermediate\) expired on \d{4}-.*: clients that verify the chain through it refuse the connection$/,
      );
      // A 1024-bit intermediate (a re-audit): clients refuse the chain too.
      run(['req', '-newkey', 'rsa:1024', '-nodes', '-keyout', 'weakint.key', '-out', 'weakint.csr', '-subj', '/CN=Weak Intermediate']);
      run(['x509', '-req', '-in', 'weakint.csr', '-signkey', 'weakint.key', '-days', '30', '-out', 'weakint.pem', '-extfile', 'ca.ext']);
      run(['x509', '-req', '-in', 'leaf.csr', '-CA', 'weakint.pem', '-CAkey', 'weakint.key', '-CAcreateserial', '-days', '30', '-out', 'leaf2.pem']);
      expect(tlsCertificateWarning(Buffer.concat([readFileSync(join(work, 'leaf2.pem')), readFileSync(join(work, 'weakint.pem'))]))).toBe(
        "certificate 2 of 2 in the chain (CN=Weak Intermediate): its RSA key has 1024 bits: clients on OpenSSL's default security level refuse the chain (`CA certificate key too weak`); use 2048 bits or more",
      );
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('reads the failover key as start does: not one base64 line of 32 bytes is an error at its key', () => {
    const file = join(dir, 'lb.yaml');
    createAll();
    writeFileSync(join(dir, 'failover.key'), 'not base64 !!\n');
    expect(parseConfig(CONFIG, file, CHECKS).problems.map(formatProblem)).toEqual([
      `${file}:14:16 failover.authKeyFile: must hold one base64 line of 32 bytes, found text that is not base64 (is it the right file? \`mqtt-lb keygen\` prints a new key: put the same one on both hosts)`,
    ]);
  });

  it('at start, a valid config naming a missing file is "cannot start" (ConfigFileError), an invalid one a config error', () => {
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, CONFIG);
    expect(() => loadConfig(file, { filesAsStartError: true })).toThrow(ConfigFileError);
    writeFileSync(file, CONFIG.replace('bind: 0.0.0.0:8883', 'bind: 0.0.0.0:99999'));
    expect(() => loadConfig(file, { filesAsStartError: true })).toThrow(ConfigError);
    expect(() => loadConfig(file, { filesAsStartError: true })).not.toThrow(ConfigFileError);
  });

  it('shows an absolute path once', () => {
    const missing = join(dir, 'nowhere.key');
    const text = CONFIG.replace('authKeyFile: failover.key', `authKeyFile: ${missing}`);
    createAll();
    const file = join(dir, 'lb.yaml');
    const out = parseConfig(text, file, CHECKS);
    expect(out.problems.map(formatProblem)).toEqual([`${file}:14:16 failover.authKeyFile: file \`${missing}\` does not exist: \`mqtt-lb keygen > FILE\` makes one (mode 0600; the same file on both LB hosts)`]);
  });
});

describe('a config file that is not UTF-8', () => {
  it('is a problem at the first byte that is not, instead of a value silently changed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-utf8-'));
    try {
      const file = join(dir, 'lb.yaml');
      // Latin-1 \xe4 (ä) in a quoted value on line 7: decoded as UTF-8 it would become U+FFFD.
      const text = Buffer.concat([
        Buffer.from('listeners:\n  - { name: mqtt, bind: 127.0.0.1:1883, pool: p }\npools:\n  p:\n    servers: [{ name: s, address: 127.0.0.1:1884 }]\n    health:\n      mqtt: { username: u, password: "p'),
        Buffer.from([0xe4]),
        Buffer.from('ss" }\n'),
      ]);
      writeFileSync(file, text);
      let problems: string[] = [];
      try {
        loadConfig(file);
      } catch (err) {
        problems = (err as ConfigError).problems.map(formatProblem);
      }
      expect(problems).toEqual([`${file}:7:40 pools.p.health.mqtt.password: not UTF-8 text here (a byte that is not UTF-8): save the file as UTF-8`]);
      // With a byte-order mark (columns count after it) and a real U+FFFD earlier (valid UTF-8): the same place.
      const withBom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('# \ufffd is fine\n'), text]);
      writeFileSync(file, withBom);
      try {
        loadConfig(file);
        problems = [];
      } catch (err) {
        problems = (err as ConfigError).problems.map(formatProblem);
      }
      expect(problems).toEqual([`${file}:8:40 pools.p.health.mqtt.password: not UTF-8 text here (a byte that is not UTF-8): save the file as UTF-8`]);
      // The same file as UTF-8 loads.
      writeFileSync(file, text.toString('latin1'));
      expect(loadConfig(file).pools['p']!.health.mqtt.password).toBe('päss');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('admin.stateFile', () => {
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-state-file-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  /** `admin.stateFile` on line 6, column 14. */
  const withStateFile = (path: string): string => `listeners: [{ name: mqtt, bind: "0.0.0.0:1883", pool: brokers }]
pools:
  brokers: { servers: [{ name: b1, address: "10.0.0.11:1883" }] }
admin:
  bind: 127.0.0.1:9883
  stateFile: ${path}
`;

  it('in a directory others (or its group) may write: a warning, since they could choose the admin states', () => {
    const file = join(dir, 'lb.yaml');
    if (process.getuid?.() === 0) {
      // Owned by another user, however its mode reads.
      const theirs = join(dir, 'theirs');
      mkdirSync(theirs, { mode: 0o755 });
      chownSync(theirs, 65534, 65534);
      expect(parseConfig(withStateFile(`${theirs}/admin.json`), file, { checkFiles: true }).warnings).toEqual([
        `${file}:6:14 admin.stateFile: the directory of \`${theirs}/admin.json\` is writable by its owner, uid 65534 (neither root nor this user) (mode 755): whoever can write there can choose the servers' admin states at the next start, or stop it (a directory at that name); use a directory of this service's own (systemd's StateDirectory=)`,
      ]);
    }
    for (const [mode, who] of [[0o1777, 'others'], [0o770, 'its group']] as const) {
      const shared = join(dir, `shared-${mode.toString(8)}`);
      mkdirSync(shared);
      chmodSync(shared, mode);
      const out = parseConfig(withStateFile(`${shared}/admin.json`), file, { checkFiles: true });
      expect(out.problems).toEqual([]);
      expect(out.warnings).toEqual([
        `${file}:6:14 admin.stateFile: the directory of \`${shared}/admin.json\` is writable by ${who} (mode ${mode.toString(8)}): whoever can write there can choose the servers' admin states at the next start, or stop it (a directory at that name); use a directory of this service's own (systemd's StateDirectory=)`,
      ]);
    }
  });

  it('may not exist yet; a relative path is relative to the config file, like the other files', () => {
    const file = join(dir, 'lb.yaml');
    const out = parseConfig(withStateFile('state/admin.json'), file, { checkFiles: true });
    expect(out.problems.map(formatProblem)).toEqual([
      `${file}:6:14 admin.stateFile: the directory of \`state/admin.json\` (${join(dir, 'state/admin.json')}) does not exist`,
    ]);
    mkdirSync(join(dir, 'state'));
    const ok = parseConfig(withStateFile('state/admin.json'), file, { checkFiles: true });
    expect(ok.problems).toEqual([]);
    expect(ok.warnings).toEqual([]);
    expect(ok.config!.admin.stateFile).toBe(join(dir, 'state/admin.json'));
    expect(parseConfig(withStateFile('null'), file, { checkFiles: true }).config!.admin.stateFile).toBeNull();
    expect(parseConfig(withStateFile('null').replace('  stateFile: null\n', ''), file).config!.admin.stateFile).toBeNull();
  });

  it('a directory where the file should be is an error; a file that is not a state file a warning (a start ignores it)', () => {
    const file = join(dir, 'lb.yaml');
    mkdirSync(join(dir, 'admin.json'));
    expect(parseConfig(withStateFile('admin.json'), file, { checkFiles: true }).problems.map(formatProblem)).toEqual([
      `${file}:6:14 admin.stateFile: \`admin.json\` (${join(dir, 'admin.json')}) is a directory`,
    ]);
    writeFileSync(join(dir, 'notdir'), '');
    expect(parseConfig(withStateFile('notdir/admin.json'), file, { checkFiles: true }).problems.map(formatProblem)).toEqual([
      `${file}:6:14 admin.stateFile: the directory of \`notdir/admin.json\` (${join(dir, 'notdir/admin.json')}) is not a directory`,
    ]);
    writeFileSync(join(dir, 'garbage.json'), 'maint b2\n');
    const out = parseConfig(withStateFile('garbage.json'), file, { checkFiles: true });
    expect(out.problems).toEqual([]);
    expect(out.warnings).toEqual([
      expect.stringMatching(
        new RegExp(`^${file}:6:14 admin\\.stateFile: \`garbage\\.json\` \\(.*\\) is not an admin state file: not JSON; a start ignores it \\(every server starts ready\\) and never writes over it: move it away$`),
      ),
    ]);
  });

  it('is not the config file itself, nor through a link', () => {
    const file = join(dir, 'lb.yaml');
    expect(parseConfig(withStateFile('lb.yaml'), file, { checkFiles: true }).problems.map(formatProblem)).toEqual([
      `${file}:6:14 admin.stateFile: \`lb.yaml\` (${file}) is the config file itself`,
    ]);
    writeFileSync(file, withStateFile('link.json'));
    symlinkSync(file, join(dir, 'link.json'));
    expect(parseConfig(withStateFile('link.json'), file, { checkFiles: true }).problems.map(formatProblem)).toEqual([
      `${file}:6:14 admin.stateFile: \`link.json\` (${join(dir, 'link.json')}) is the config file itself`,
    ]);
  });

  it("HAProxy's name for it points to it", () => {
    const out = parseConfig(withStateFile('a.json').replace('stateFile:', 'server-state-file:'), join(dir, 'lb.yaml'));
    expect(out.problems.map(formatProblem)[0]).toMatch(/admin\.server-state-file: unknown key.*stateFile/);
  });
});
