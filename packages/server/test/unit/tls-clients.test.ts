/**
 * TLS options of the node's own connections: Redis (ioredis) and PostgreSQL (pg). The local
 * PostgreSQL has no TLS; that pg really received the option is shown by its refusal to go on
 * without TLS ("The server does not support SSL connections").
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { postgresSslOptions, redisTlsOptions } from '../../src/tls/clients.ts';
import { openPostgresStore } from '../../src/store/postgres.ts';
import { dropSchema, POSTGRES_URL, postgresSkip } from '../support/postgres.ts';
import { makePki, type TestPki } from '../support/certs.ts';

let pki: TestPki;
let notPem = '';
const pgSkip = await postgresSkip('PostgreSQL TLS option test');

before(() => {
  pki = makePki();
  notPem = join(pki.dir, 'not.pem');
  writeFileSync(notPem, 'hello');
});
after(() => pki.remove());

test('Redis: no CA, no options; rediss:// gets tls.ca; Sentinel gets TLS for the Sentinels and the data connection', () => {
  assert.equal(redisTlsOptions({ url: 'rediss://h:1' }), undefined);
  assert.deepEqual(redisTlsOptions({ url: 'rediss://h:1', caFile: pki.caFile }), { tls: { ca: pki.caPem } });
  assert.deepEqual(redisTlsOptions({ sentinels: ['h:26379'], caFile: pki.caFile }), { tls: { ca: pki.caPem }, enableTLSForSentinelMode: true, sentinelTLS: { ca: pki.caPem } });
});

test('Redis: a CA with redis:// or without a URL is refused; so is a file that is not a certificate', () => {
  assert.throws(() => redisTlsOptions({ url: 'redis://:secret@h:1', caFile: pki.caFile }), (e: Error) => {
    assert.match(e.message, /--redis-ca needs a rediss:\/\/ URL \(TLS\); "redis:\/\/…@h:1" is plain TCP/);
    assert.doesNotMatch(e.message, /secret/);
    return true;
  });
  assert.throws(() => redisTlsOptions({ caFile: pki.caFile }), /no --redis URL is set/);
  assert.throws(() => redisTlsOptions({ url: 'rediss://h:1', caFile: notPem }), /--redis-ca: .*not\.pem is not a PEM certificate/);
  assert.throws(() => redisTlsOptions({ url: 'rediss://h:1', caFile: join(pki.dir, 'missing.pem') }), /--redis-ca: cannot read .*missing\.pem \(ENOENT\)/);
});

test('PostgreSQL: the CA with verification on; a connection string that sets TLS itself is refused', () => {
  assert.equal(postgresSslOptions({ url: POSTGRES_URL }), undefined);
  assert.deepEqual(postgresSslOptions({ url: POSTGRES_URL, caFile: pki.caFile }), { ca: pki.caPem, rejectUnauthorized: true });
  assert.throws(() => postgresSslOptions({ url: `${POSTGRES_URL}?sslmode=require`, caFile: pki.caFile }), /sets TLS itself \(sslmode\); give the CA one way only/);
  assert.throws(() => postgresSslOptions({ url: `${POSTGRES_URL}?sslrootcert=/x&ssl=true`, caFile: pki.caFile }), /\(ssl, sslrootcert\)/);
  assert.throws(() => postgresSslOptions({ caFile: pki.caFile }), /--database-ca needs --database/);
});

test('PostgreSQL: the option reaches pg — against a server without TLS the store refuses to connect in the clear', { skip: pgSkip }, async () => {
  await assert.rejects(
    openPostgresStore({ connectionString: POSTGRES_URL, schema: 'palisade_tls_test', ssl: postgresSslOptions({ url: POSTGRES_URL, caFile: pki.caFile }) }),
    /The server does not support SSL connections/,
  );
  // Without it the same server is fine (the refusal above is TLS, nothing else).
  const store = await openPostgresStore({ connectionString: POSTGRES_URL, schema: 'palisade_tls_test' });
  await store.close();
  await dropSchema('palisade_tls_test');
});
