/**
 * @module tls/options — the TLS settings of every listener: TLS 1.3 only by default; TLS 1.2 only
 * when asked, and then with AEAD, forward-secret suites only (ECDHE with AES-GCM or
 * ChaCha20-Poly1305). No renegotiation, the server's preference order, modern key-exchange groups.
 */
import { constants } from 'node:crypto';
import type { SecureContextOptions, TlsOptions } from 'node:tls';

/** The lowest TLS version a listener accepts. */
export type TlsMinVersion = '1.3' | '1.2';

/** TLS 1.3 suites (all AEAD, all forward secret by construction), strongest first. */
export const TLS13_SUITES = ['TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256', 'TLS_AES_128_GCM_SHA256'] as const;

/**
 * TLS 1.2 suites, used only with `minVersion: '1.2'`: ECDHE (forward secrecy) with AES-GCM or
 * ChaCha20-Poly1305 (AEAD). No CBC, no RSA key exchange, no finite-field DHE, no SHA-1 MACs.
 */
export const TLS12_SUITES = [
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
] as const;

/** A TLS handshake not finished within this time is dropped, ms (Node's default is 120 s). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Key-exchange groups, preferred first. */
export const ECDH_CURVES = 'X25519:P-256:P-384';

/** Parses a `--tls-min-version` value; throws on anything but `1.3` or `1.2`. */
export function parseTlsMinVersion(text: string): TlsMinVersion {
  if (text === '1.3' || text === '1.2') return text;
  throw new Error(`the TLS minimum version must be 1.3 or 1.2, not "${text}"`);
}

/**
 * The protocol and cipher options of a TLS listener (no key material).
 *
 * @example createServer({ key, cert, ...tlsProtocolOptions('1.3') })
 */
export function tlsProtocolOptions(minVersion: TlsMinVersion = '1.3'): SecureContextOptions & Pick<TlsOptions, 'honorCipherOrder' | 'handshakeTimeout'> {
  return {
    minVersion: minVersion === '1.2' ? 'TLSv1.2' : 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    // Node splits the list: `TLS_*` names are TLS 1.3 suites, the rest the TLS 1.2 list.
    ciphers: [...TLS13_SUITES, ...(minVersion === '1.2' ? TLS12_SUITES : [])].join(':'),
    ecdhCurve: ECDH_CURVES,
    honorCipherOrder: true,
    // TLS 1.2 renegotiation is refused outright (TLS 1.3 has none).
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
    handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS,
  };
}

/** Options for a TLS server with its key and certificate chain (PEM). */
export function tlsServerOptions(material: { key: string; cert: string }, minVersion: TlsMinVersion = '1.3'): SecureContextOptions & Pick<TlsOptions, 'honorCipherOrder' | 'handshakeTimeout'> {
  return { key: material.key, cert: material.cert, ...tlsProtocolOptions(minVersion) };
}
