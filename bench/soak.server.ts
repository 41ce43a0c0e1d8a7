/**
 * One Palisade node for `soak.bench.ts`, in a process of its own (started with `--expose-gc`).
 * Node `a` also creates the admin, an extension sign-in (device grant, with a refresh token) and
 * an API client, and hands their credentials to the parent. Answers the parent's asks: `sample`
 * (a full garbage collection, then `process.memoryUsage()` and the node's own counters) and `stop`.
 *
 * Logs at `info` (security events included) go to stdout, which the parent sends to a file, as a
 * production node's would.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from 'undici';
import { createPalisade, type CreateOptions, type Palisade } from '../packages/server/src/app.ts';
import { apiClient, createAdmin, deviceLogin, ROOMY_RATE_LIMITS } from '../packages/server/test/support/harness.ts';
import { answerAsks, remoteServer } from './lib.ts';

export interface SoakServeInput {
  role: 'a' | 'b';
  options: CreateOptions;
}

export interface SoakReady {
  url: string;
  ca: string;
  pid: number;
  agentToken?: string;
  agentRefresh?: string;
  clientId?: string;
  clientSecret?: string;
}

/** What a node answers to `{ ask: 'sample' }`. */
export interface NodeSample {
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  rss: number;
  connections: number;
  tracked: { ips: number; users: number; synced: boolean };
  handles: Palisade["tasks"]["openHandles"];
  agents: number;
  activeResources: number;
  unhandled: { count: number; first: string[] };
}

const input = JSON.parse(process.env.BENCH_SOAK ?? '{}') as SoakServeInput;
// A rejection nothing handles would end this process (Node's default, and what a production node
// does). The soak counts them instead, reports them as failures, and goes on measuring memory.
const unhandled = { count: 0, first: [] as string[] };
process.on('unhandledRejection', (e) => {
  unhandled.count++;
  if (unhandled.first.length < 5) unhandled.first.push((e instanceof Error ? `${e.message} at ${e.stack?.split('\n').slice(1, 6).map((l) => l.trim()).join(' < ')}` : String(e)).slice(0, 600));
  process.stderr.write(`soak node ${input.role}: unhandled rejection: ${e instanceof Error ? e.stack : String(e)}\n`);
});
// The parent gone (its IPC channel closed) ends this node too.
process.on('disconnect', () => process.exit(1));
const dataDir = mkdtempSync(join(tmpdir(), 'palisade-soak-'));
const server = await createPalisade({
  port: 0,
  recipeDirs: [new URL('../recipes/', import.meta.url).pathname],
  // Limits on and checked on every request, with rates one address sending the whole load never
  // reaches; the connection caps per address and per user raised for the same reason.
  rateLimits: ROOMY_RATE_LIMITS,
  maxConnectionsPerIp: 5000,
  maxConnectionsPerUser: 5000,
  ...input.options,
  dataDir,
});
await server.listen();
const url = `https://127.0.0.1:${(server.app.server.address() as { port: number }).port}`;
const ready: SoakReady = { url, ca: server.tls!.ca!, pid: process.pid };

if (input.role === 'a') {
  const dispatcher = new Agent({ connect: { ca: server.tls!.ca! } });
  // The harness's shape without its in-memory list of every security event (it would grow).
  const t = remoteServer(url, dispatcher, server);
  await createAdmin(t);
  const ext = await deviceLogin(t, 'palisade-extension', 'openid offline_access agent');
  const { clientId, clientSecret } = await apiClient(t, 'soak bench');
  await dispatcher.close();
  Object.assign(ready, { agentToken: ext.access_token, agentRefresh: ext.refresh_token, clientId, clientSecret });
}

process.on('message', (m: { ask?: string }) => {
  if (m.ask !== 'sample') return;
  // A full collection that also gives the freed pages back (V8's 'last-resort' flavour, as DevTools'
  // "collect garbage" and the connections benchmark's HeapProfiler.collectGarbage): a plain gc()
  // frees the heap but keeps its pages, so RSS would carry whatever V8 chose to keep.
  (globalThis as { gc?: (o: { type: 'major'; flavor: 'last-resort' }) => void }).gc?.({ type: 'major', flavor: 'last-resort' });
  const mem = process.memoryUsage();
  const caps = server.connections!;
  const sample: NodeSample = {
    heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, external: mem.external, arrayBuffers: mem.arrayBuffers, rss: mem.rss,
    connections: caps.total, tracked: caps.tracked, handles: server.tasks.openHandles,
    agents: server.agents.size,
    activeResources: process.getActiveResourcesInfo().length,
    unhandled: structuredClone(unhandled),
  };
  process.send!({ sample });
});
answerAsks(async () => {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
});
process.send!({ ready });
