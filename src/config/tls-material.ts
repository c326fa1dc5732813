/**
 * Whether a listener's certificate, key and CA can serve TLS: what `mqtt-lb check` reports with the
 * config's file:line:col, and what start and reload refuse (front.ts), so that a file `check` passes
 * also starts (`haproxy -c` loads certificates the same way).
 */
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** null when usable; otherwise what is wrong, in a sentence. */
export function tlsMaterialProblem(cert: Buffer, key: Buffer, ca: Buffer | null): string | null {
  try {
    // Parses both and checks that the key belongs to the certificate (OpenSSL: "key values mismatch").
    tls.createSecureContext({ cert, key });
  } catch (err) {
    return `the certificate and key cannot serve TLS: ${(err as Error).message}`;
  }
  if (ca === null) return null;
  // OpenSSL skips what is not a certificate in a CA file: a file of none would verify no client, silently.
  const blocks = ca.toString('latin1').match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) return 'tls.ca holds no PEM certificate (-----BEGIN CERTIFICATE-----)';
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (err) {
      return `tls.ca certificate ${i + 1} of ${blocks.length} cannot be read: ${(err as Error).message}`;
    }
  }
  return null;
}
