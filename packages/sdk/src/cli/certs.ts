/**
 * @module cli/certs — `palisade certs ca|server|client|crl`: the certificates of a private
 * deployment (a local CA, server certificates, client certificates for the server's mutual-TLS
 * internal listener), made on this machine with `openssl` (lib/node-certs.ts). Needs no server.
 */
import { resolve } from 'node:path';
import type { X509Certificate } from 'node:crypto';
import { CA_DAYS, CERT_ROLES, CRL_DAYS, LEAF_DAYS, ROLE_URI_PREFIX, createCa, createClientCert, createCrl, createServerCert } from '../lib/node-certs.ts';
import { UsageError } from './args.ts';
import type { Command, Context, Values } from './command.ts';
import { EXIT } from './exit.ts';
import { table } from './output.ts';

function one(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

function required(values: Values, name: string, what: string): string {
  const v = one(values, name);
  if (v === undefined || v === '') throw new UsageError(`--${name} ${what} is required`);
  return v;
}

function days(values: Values): number | undefined {
  const text = one(values, 'days');
  if (text === undefined) return undefined;
  if (!/^\d{1,5}$/.test(text)) throw new UsageError(`--days must be a whole number of days, not "${text}"`);
  return Number(text);
}

function names(values: Values): string[] {
  const v = values.name;
  return (Array.isArray(v) ? v : v === undefined ? [] : [v]).filter((x): x is string => typeof x === 'string');
}

/** Prints what was made: a table, or with `--json` one document. */
function report(ctx: Context, made: Record<string, string>, cert: X509Certificate | undefined): number {
  const info = cert
    ? { subject: cert.subject.replace(/\n/g, ', '), subjectAltName: cert.subjectAltName ?? null, notAfter: cert.validToDate.toISOString(), serial: cert.serialNumber, sha256: cert.fingerprint256 }
    : {};
  if (ctx.json) {
    ctx.printJson({ files: made, ...info });
    return EXIT.OK;
  }
  ctx.print(table([...Object.entries(made).map(([k, v]) => [k, v]), ...Object.entries(info).filter(([, v]) => v !== null).map(([k, v]) => [k, String(v)])]));
  return EXIT.OK;
}

const caOption = ['--ca DIR', 'the CA folder made by `palisade certs ca` (ca.crt and ca.key)'] as [string, string];
const daysHelp = (d: number, max: number): [string, string] => ['--days N', `validity in days (default ${d}, at most ${max})`];
const crlHelp: [string, string] = ['--crl-url URL', "where the CA's revocation list (ca.crl) is published; written into the certificate"];

/** `palisade certs ca`. */
export const certsCa: Command = {
  name: 'certs ca',
  args: '--out DIR',
  summary: 'create a local certificate authority (EC P-256) for servers and mutual-TLS clients',
  details:
    'Writes DIR/ca.key (mode 0600: keep it offline if you can), DIR/ca.crt (give it to whoever must trust the\n' +
    'servers, and to the server as --internal-ca), and DIR/ca.crl, an empty revocation list. Refuses to replace files.',
  options: { out: { type: 'string' }, cn: { type: 'string' }, days: { type: 'string' } },
  optionHelp: [['--out DIR', 'folder to write into (made at mode 0700)'], ['--cn NAME', 'the CA\'s common name (default "Palisade Local CA")'], daysHelp(CA_DAYS, 7300)],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const out = resolve(required(ctx.values, 'out', 'DIR'));
    const made = createCa({ out, name: one(ctx.values, 'cn'), days: days(ctx.values) });
    return report(ctx, { key: made.keyFile, certificate: made.certFile, crl: made.crlFile }, made.certificate);
  },
};

/** `palisade certs server`. */
export const certsServer: Command = {
  name: 'certs server',
  args: '--ca DIR --name NAME [--name NAME…] --out DIR',
  summary: 'create a server certificate (serverAuth) for DNS names and IP addresses, signed by the local CA',
  details: 'Writes DIR/server.key (mode 0600) and DIR/server.crt; pass them to palisade-server as --tls-key and --tls-cert.\nThe first --name is also the common name.',
  options: { ca: { type: 'string' }, name: { type: 'string', multiple: true }, out: { type: 'string' }, days: { type: 'string' }, 'crl-url': { type: 'string' } },
  optionHelp: [caOption, ['--name NAME', 'a DNS name or IP address the server answers on (repeat for more)'], ['--out DIR', 'folder to write into'], daysHelp(LEAF_DAYS, 825), crlHelp],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const ca = resolve(required(ctx.values, 'ca', 'DIR'));
    const list = names(ctx.values);
    if (list.length === 0) throw new UsageError('--name is required (a DNS name or IP address; repeat for more)');
    const out = resolve(required(ctx.values, 'out', 'DIR'));
    const made = createServerCert({ ca, names: list, out, days: days(ctx.values), crlUrl: one(ctx.values, 'crl-url') });
    return report(ctx, { key: made.keyFile, certificate: made.certFile }, made.certificate);
  },
};

/** `palisade certs client`. */
export const certsClient: Command = {
  name: 'certs client',
  args: '--ca DIR --name NAME --role admin|metrics|node --out DIR',
  summary: "create a client certificate (clientAuth) for the server's mutual-TLS internal listener",
  details:
    `The name becomes the certificate's common name; the role its SAN URI ${ROLE_URI_PREFIX}<role>, which decides\n` +
    'what the internal listener allows: metrics → GET /metrics; node → health; admin → everything.\n' +
    'Writes DIR/client.key (mode 0600) and DIR/client.crt.',
  options: { ca: { type: 'string' }, name: { type: 'string', multiple: true }, role: { type: 'string' }, out: { type: 'string' }, days: { type: 'string' }, 'crl-url': { type: 'string' } },
  optionHelp: [caOption, ['--name NAME', 'who holds it, e.g. node-2 or prometheus'], ['--role ROLE', `one of ${CERT_ROLES.join(', ')}`], ['--out DIR', 'folder to write into'], daysHelp(LEAF_DAYS, 825), crlHelp],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const ca = resolve(required(ctx.values, 'ca', 'DIR'));
    const list = names(ctx.values);
    if (list.length !== 1) throw new UsageError(list.length === 0 ? '--name is required' : 'give one --name for a client certificate');
    const role = required(ctx.values, 'role', CERT_ROLES.join('|'));
    const out = resolve(required(ctx.values, 'out', 'DIR'));
    const made = createClientCert({ ca, name: list[0]!, role, out, days: days(ctx.values), crlUrl: one(ctx.values, 'crl-url') });
    return report(ctx, { key: made.keyFile, certificate: made.certFile }, made.certificate);
  },
};

/** `palisade certs crl`. */
export const certsCrl: Command = {
  name: 'certs crl',
  args: '--ca DIR',
  summary: "sign the local CA's certificate revocation list (ca.crl) again, before it runs out",
  options: { ca: { type: 'string' }, days: { type: 'string' } },
  optionHelp: [caOption, daysHelp(CRL_DAYS, 365)],
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const ca = resolve(required(ctx.values, 'ca', 'DIR'));
    return report(ctx, { crl: createCrl({ ca, days: days(ctx.values) }) }, undefined);
  },
};

/** Every `palisade certs` command. */
export const CERTS_COMMANDS: readonly Command[] = [certsCa, certsServer, certsClient, certsCrl];
