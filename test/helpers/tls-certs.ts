/**
 * A throw-away PKI for TLS tests, made with the openssl CLI in a temp dir:
 *   const pki = createTestPki();                 // CA + server cert for 127.0.0.1/localhost
 *   const dev = pki.issueClient('device-42');    // client cert signed by the CA (CN = device-42)
 *   const rogue = pki.issueRogueClient('evil');  // client cert signed by a CA the LB does not trust
 *   pki.issueServer('server-2', pki.serverCert, pki.serverKey)   // overwrite in place (reload tests)
 *   pki.cleanup();                               // always (afterAll / finally); idempotent
 * EC P-256 keys: fast to generate; certificates valid for two days.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

export interface TestPki {
  dir: string;
  /** The CA certificate the LB trusts for client certificates (and clients trust for the server). */
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** A client certificate signed by the CA, subject CN = cn; `extensions`: more openssl extension lines. */
  issueClient(cn: string, extensions?: string): CertFiles;
  /** A client certificate signed by a different CA, subject CN = cn. */
  issueRogueClient(cn: string): CertFiles;
  /** A server certificate (SAN IP:127.0.0.1, DNS:localhost) signed by the CA, written to the given paths. */
  issueServer(cn: string, certPath?: string, keyPath?: string): CertFiles;
  read(file: string): Buffer;
  cleanup(): void;
}

const OPENSSL_TIMEOUT_MS = 20_000;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: OPENSSL_TIMEOUT_MS });
}

function makeCa(dir: string, name: string, cn: string): CertFiles {
  const files = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  openssl(
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', files.key, '-out', files.cert, '-days', '2', '-subj', `/CN=${cn}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  return files;
}

let serial = 0;

function issue(dir: string, ca: CertFiles, cn: string, extensions: string, out: CertFiles): CertFiles {
  const base = path.join(dir, `req-${process.pid}-${++serial}`);
  const extFile = `${base}.ext`;
  writeFileSync(extFile, extensions);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', out.key, '-out', `${base}.csr`, '-subj', `/CN=${cn}`], dir);
  openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-out', out.cert, '-extfile', extFile], dir);
  rmSync(`${base}.csr`, { force: true });
  rmSync(extFile, { force: true });
  return out;
}

const SERVER_EXT = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n';
const CLIENT_EXT = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n';

export function createTestPki(): TestPki {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-lb-pki-'));
  try {
    const ca = makeCa(dir, 'ca', 'mqtt-lb test CA');
    const rogueCa = makeCa(dir, 'rogue-ca', 'mqtt-lb rogue CA');
    const safe = (cn: string): string => cn.replace(/[^A-Za-z0-9_.-]/g, '_');
    const pki: TestPki = {
      dir,
      caCert: ca.cert,
      serverCert: path.join(dir, 'server.crt'),
      serverKey: path.join(dir, 'server.key'),
      issueClient: (cn, extensions = '') => issue(dir, ca, cn, CLIENT_EXT + extensions, { cert: path.join(dir, `client-${safe(cn)}.crt`), key: path.join(dir, `client-${safe(cn)}.key`) }),
      issueRogueClient: (cn) => issue(dir, rogueCa, cn, CLIENT_EXT, { cert: path.join(dir, `rogue-${safe(cn)}.crt`), key: path.join(dir, `rogue-${safe(cn)}.key`) }),
      issueServer: (cn, certPath, keyPath) => issue(dir, ca, cn, SERVER_EXT, { cert: certPath ?? path.join(dir, `server-${safe(cn)}.crt`), key: keyPath ?? path.join(dir, `server-${safe(cn)}.key`) }),
      read: (file) => readFileSync(file),
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    };
    pki.issueServer('server-1', pki.serverCert, pki.serverKey);
    return pki;
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
