/**
 * Whether a listener's certificate, key and CA can serve TLS: what `mqtt-lb check` reports with the
 * config's file:line:col, and what start and reload refuse (front.ts), so that a file `check` passes
 * also starts (`haproxy -c` loads certificates the same way).
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import tls from 'node:tls';

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Which of the listener's `tls` files a problem is in, and what it is (a sentence). */
export interface TlsMaterialProblem {
  field: 'cert' | 'key' | 'ca';
  message: string;
}

/** null when the certificate and key can serve TLS together; otherwise which of the two is wrong and why. */
export function tlsPairProblem(cert: Buffer, key: Buffer): TlsMaterialProblem | null {
  const leaf = leafCertificate(cert);
  if (typeof leaf === 'string') return { field: 'cert', message: leaf };
  const keyText = key.toString('latin1');
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(keyText)) {
    return { field: 'key', message: 'the key is encrypted (it needs a passphrase, which mqtt-lb does not take): give it an unencrypted key, e.g. `openssl pkey -in KEY -out KEY.plain` (mode 0600)' };
  }
  // OpenSSL's own words for these ("DECODER routines::unsupported") do not say which file was swapped.
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyText)) {
    const isCertificate = /-----BEGIN CERTIFICATE-----/.test(keyText);
    return {
      field: 'key',
      message: isCertificate
        ? "holds a certificate, not a private key (-----BEGIN PRIVATE KEY-----): is it the certificate's file?"
        : 'holds no PEM private key (-----BEGIN PRIVATE KEY-----)',
    };
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    return { field: 'key', message: `the key cannot be read: ${(err as Error).message}` };
  }
  // OpenSSL compares a key only with a certificate of its own type (an EC key beside an RSA certificate passed
  // and every handshake then failed): compare them here whatever their types.
  if (!leaf.checkPrivateKey(privateKey)) {
    const owner = keyOwnerInChain(cert, privateKey);
    if (owner !== null) {
      return { field: 'cert', message: `the certificates are in the wrong order: the key belongs to certificate ${owner.index} of ${owner.count}; the server's own certificate must come first, then its intermediates` };
    }
    const certType = leaf.publicKey.asymmetricKeyType ?? 'unknown';
    const keyType = privateKey.asymmetricKeyType ?? 'unknown';
    const why = keyType === certType ? `both ${keyType}, but of another key pair` : `a ${keyType} key; the certificate's is ${certType}`;
    return { field: 'key', message: `the key does not belong to the certificate (${why})` };
  }
  try {
    // Everything else OpenSSL wants of the pair (the chain's order, unsupported algorithms).
    tls.createSecureContext({ cert, key });
  } catch (err) {
    return { field: 'cert', message: `the certificate and key cannot serve TLS: ${(err as Error).message}` };
  }
  return null;
}

/** null when the CA file can verify clients; otherwise why not. Independent of the pair, so both are reported. */
export function tlsCaProblem(ca: Buffer): TlsMaterialProblem | null {
  // OpenSSL skips what is not a certificate in a CA file: a file of none would verify no client, silently.
  const blocks = ca.toString('latin1').match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) return { field: 'ca', message: 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)' };
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (err) {
      return { field: 'ca', message: `certificate ${i + 1} of ${blocks.length} cannot be read: ${(err as Error).message}` };
    }
  }
  return null;
}

/** Which later certificate of the chain file the key belongs to (1-based), if one does: a chain in reverse order. */
function keyOwnerInChain(cert: Buffer, privateKey: KeyObject): { index: number; count: number } | null {
  const blocks = cert.toString('latin1').match(CERT_BLOCK) ?? [];
  for (let i = 1; i < blocks.length; i++) {
    try {
      if (new X509Certificate(blocks[i]!).checkPrivateKey(privateKey)) return { index: i + 1, count: blocks.length };
    } catch {
      // an unreadable block is OpenSSL's to refuse below
    }
  }
  return null;
}

/** The first certificate of a PEM chain (the server's own), or why there is none. */
function leafCertificate(cert: Buffer): X509Certificate | string {
  const leafPem = cert.toString('latin1').match(CERT_BLOCK)?.[0];
  if (leafPem === undefined) return 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)';
  try {
    return new X509Certificate(leafPem);
  } catch (err) {
    return `the certificate cannot be read: ${(err as Error).message}`;
  }
}

/** RSA and DSA keys shorter than this are refused by OpenSSL at its default security level 2 (and by HAProxy's load). */
const MIN_RSA_BITS = 2048;

/**
 * A usable certificate chain that clients will refuse anyway (a warning, not an error): a certificate expired or not
 * valid yet (the server's own or an intermediate it sends), or the server's key too short for OpenSSL's default
 * security level (a TLS audit: a 1024-bit RSA key served, and clients on OpenSSL's defaults refused it).
 */
export function tlsCertificateWarning(cert: Buffer, now: Date = new Date()): string | null {
  const leaf = leafCertificate(cert);
  if (typeof leaf === 'string') return null;
  if (new Date(leaf.validTo) < now) return `the certificate expired on ${new Date(leaf.validTo).toISOString()}: clients that verify it refuse the connection`;
  if (new Date(leaf.validFrom) > now) return `the certificate is not valid before ${new Date(leaf.validFrom).toISOString()}: clients that verify it refuse the connection`;
  const weak = weakKey(leaf);
  if (weak !== null) {
    return `the certificate's ${weak}: clients on OpenSSL's default security level refuse it (\`EE certificate key too weak\`), as HAProxy refuses to load it; use ${MIN_RSA_BITS} bits or more`;
  }
  const blocks = cert.toString('latin1').match(CERT_BLOCK) ?? [];
  for (let i = 1; i < blocks.length; i++) {
    let intermediate: X509Certificate;
    try {
      intermediate = new X509Certificate(blocks[i]!);
    } catch {
      continue; // OpenSSL's to refuse (tlsPairProblem)
    }
    const which = `certificate ${i + 1} of ${blocks.length} in the chain (${intermediate.subject.replace(/\n/g, ', ')})`;
    if (new Date(intermediate.validTo) < now) {
      return `${which} expired on ${new Date(intermediate.validTo).toISOString()}: clients that verify the chain through it refuse the connection`;
    }
    // A re-audit: a 1024-bit intermediate passed, and clients refused the chain (`CA certificate key too weak`).
    const weakCa = weakKey(intermediate);
    if (weakCa !== null) return `${which}: its ${weakCa}: clients on OpenSSL's default security level refuse the chain (\`CA certificate key too weak\`); use ${MIN_RSA_BITS} bits or more`;
  }
  return null;
}

/** `RSA key has 1024 bits` when a certificate's RSA or DSA key is below MIN_RSA_BITS; null otherwise. */
function weakKey(cert: X509Certificate): string | null {
  const keyType = cert.publicKey.asymmetricKeyType;
  const bits = cert.publicKey.asymmetricKeyDetails?.modulusLength;
  if ((keyType === 'rsa' || keyType === 'rsa-pss' || keyType === 'dsa') && bits !== undefined && bits < MIN_RSA_BITS) return `${keyType.toUpperCase()} key has ${bits} bits`;
  return null;
}
