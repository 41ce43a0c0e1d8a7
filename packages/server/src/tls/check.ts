/**
 * @module tls/check — checks a TLS key and certificate chain before a listener uses them: the
 * certificate parses, the key parses and belongs to it, and it is valid now.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';

/**
 * Checks a key and certificate chain (PEM, leaf first) and returns the parsed leaf certificate.
 * Throws an `Error` that says what is wrong (and never contains key material).
 *
 * @example const leaf = checkTlsPair(readFileSync(keyFile, 'utf8'), readFileSync(certFile, 'utf8'));
 */
export function checkTlsPair(key: string, cert: string, now = Date.now()): X509Certificate {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch {
    throw new Error('the certificate is not a PEM X.509 certificate');
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    throw new Error('the private key is not a PEM private key (or is encrypted)');
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new Error(`the private key does not belong to the certificate (${subjectOf(leaf)})`);
  if (leaf.validFromDate.getTime() > now) throw new Error(`the certificate (${subjectOf(leaf)}) is not valid before ${leaf.validFromDate.toISOString()}`);
  if (leaf.validToDate.getTime() <= now) throw new Error(`the certificate (${subjectOf(leaf)}) expired on ${leaf.validToDate.toISOString()}`);
  return leaf;
}

/** `CN=…` of a certificate's subject, or its whole subject on one line. */
export function subjectOf(cert: X509Certificate): string {
  const cn = /^CN=(.*)$/m.exec(cert.subject);
  return cn ? `CN=${cn[1]}` : cert.subject.replace(/\n/g, ', ');
}
