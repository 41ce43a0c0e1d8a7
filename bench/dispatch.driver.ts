/**
 * The load side of `dispatch.bench.ts`, in its own process so the server under test has its own
 * core: connects the agent (synthetic Palisade agent, or a bare echoing ws client for the
 * baseline), runs the round trips one at a time, and prints the samples (ms) as JSON.
 */
import WebSocket from 'ws';
import { Agent, request } from 'undici';
import { SyntheticAgent } from '../packages/server/test/support/agent.ts';

interface DriverInput {
  mode: 'palisade' | 'bare';
  url: string;
  ca: string;
  agentToken?: string;
  clientToken?: string;
  site: string;
  body: string;
  warmup: number;
  n: number;
}

const input = JSON.parse(process.env.BENCH_DRIVER ?? '{}') as DriverInput;
const dispatcher = new Agent({ connect: { ca: input.ca }, connections: 1 });
let close: () => void;
let path: string;
let headers: Record<string, string>;
if (input.mode === 'palisade') {
  const agent = await SyntheticAgent.connect({ url: input.url, token: input.agentToken!, ca: input.ca, grants: [input.site] });
  close = () => agent.close();
  path = '/api/v1/tasks';
  headers = { authorization: `Bearer ${input.clientToken}`, 'content-type': 'application/json', prefer: 'wait=5' };
} else {
  const ws = new WebSocket(input.url.replace('https', 'wss'), { ca: input.ca });
  ws.on('message', (d) => ws.send(String(d)));
  await new Promise((r) => ws.once('open', r));
  close = () => ws.close();
  path = '/relay';
  headers = { 'content-type': 'application/json' };
}
const once = async () => {
  const res = await request(`${input.url}${path}`, { method: 'POST', headers, body: input.body, dispatcher });
  const v = (await res.body.json()) as { state?: string };
  if (input.mode === 'palisade' && v.state !== 'succeeded') throw new Error(`task ended ${v.state}`);
};
for (let i = 0; i < input.warmup; i++) await once();
const samples: number[] = [];
for (let i = 0; i < input.n; i++) {
  const t0 = process.hrtime.bigint();
  await once();
  samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
close();
await dispatcher.close();
process.stdout.write(JSON.stringify(samples));
