/**
 * Two nodes of one deployment for a test: both in this process, sharing PostgreSQL (a fresh schema)
 * and Redis (a fresh key prefix), with one public URL (node A's). Node A gets the admin account.
 */
import type { CreateOptions } from '../../src/app.ts';
import { createAdmin, startTestServer, type TestServer } from './harness.ts';
import { POSTGRES_URL, dropSchema, postgresSkip } from './postgres.ts';
import { REDIS_URL, dropPrefix, redisSkip, testPrefix } from './redis.ts';

export interface TwoNodes {
  readonly a: TestServer;
  readonly b: TestServer;
  /** The Redis key prefix both use. */
  readonly prefix: string;
  /** The options both nodes were given (stores, prefix…), to start another node of the deployment. */
  readonly shared: CreateOptions;
  /** Closes both nodes and drops the schema and the keys. */
  close(): Promise<void>;
}

/** `false` when PostgreSQL and Redis are both there, else why the tests skip (throws in CI). */
export async function twoNodesSkip(what: string): Promise<false | string> {
  return (await postgresSkip(what)) || (await redisSkip(what));
}

/** Starts node A (`nodeId` `${tag}-a`, admin created) then node B (`${tag}-b`); `shared` goes to both, `a` and `b` to one each. */
export async function startTwoNodes(tag: string, o: { shared?: CreateOptions; a?: CreateOptions; b?: CreateOptions } = {}): Promise<TwoNodes> {
  const schema = `palisade_${tag.replace(/\W/g, '_')}_${process.pid}`;
  const prefix = testPrefix();
  const shared = { databaseUrl: POSTGRES_URL, databaseSchema: schema, redisUrl: REDIS_URL, redisPrefix: prefix, ...o.shared };
  let a: TestServer | undefined;
  let b: TestServer | undefined;
  const close = async () => {
    await a?.close();
    await b?.close();
    await dropSchema(schema);
    await dropPrefix(prefix);
  };
  try {
    a = await startTestServer({ ...shared, nodeId: `${tag}-a`, ...o.a });
    await createAdmin(a);
    b = await startTestServer({ ...shared, nodeId: `${tag}-b`, publicUrl: a.url, ...o.b });
    return { a, b, prefix, shared, close };
  } catch (e) {
    await close().catch(() => undefined);
    throw e;
  }
}
