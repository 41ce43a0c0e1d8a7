/**
 * The SDK and the CLI against the real server (TLS with the generated development CA, real OAuth),
 * with a synthetic agent standing in for the browser: `run` of a built-in recipe, `runSteps` of a
 * Recorder flow, errors with their codes, and the CLI's `--json` output and exit codes.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Palisade, PalisadeError, type TaskEvent } from '../../src/index.ts';
import { SyntheticAgent } from '../../../server/test/support/agent.ts';
import { apiClient, createAdmin, deviceLogin, startTestServer, type TestServer } from '../../../server/test/support/harness.ts';

const SITE = 'http://127.0.0.1:9';
const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;

function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env, NO_COLOR: '1', XDG_CONFIG_HOME: mkdtempSync(join(tmpdir(), 'pal-cli-')) } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('SDK and CLI against the real server', () => {
  let t: TestServer;
  let client: { clientId: string; clientSecret: string };
  let agent: SyntheticAgent;
  let sdk: Palisade;
  let caFile: string;

  before(async () => {
    t = await startTestServer();
    await createAdmin(t);
    const agentToken = (await deviceLogin(t, 'palisade-extension', 'openid offline_access agent')).access_token;
    agent = await SyntheticAgent.connect({
      url: t.url, token: agentToken, ca: t.server.tls?.ca, grants: [SITE],
      onTask: (f) => (f.steps.some((s) => s.type === 'assert')
        ? { outcome: 'failed', error: { code: 'PAL_ERR_ASSERTION_FAILED', message: 'the page does not say hello', step: 1 } }
        : { outcome: 'succeeded', result: { outputs: { steps: f.steps.map((s) => s.type), first: f.steps[0] } } }),
    });
    client = await apiClient(t, 'sdk test');
    caFile = join(mkdtempSync(join(tmpdir(), 'pal-ca-')), 'ca.crt');
    writeFileSync(caFile, t.server.tls!.ca!);
    sdk = new Palisade({ server: t.url, clientId: client.clientId, clientSecret: client.clientSecret, ca: t.server.tls!.ca! });
  });
  after(async () => {
    agent?.close();
    await t?.close();
  });

  it('run() a built-in recipe: inputs bound by the server, progress streamed, result returned', async () => {
    const events: TaskEvent[] = [];
    const task = await sdk.run('search-extract', { site: SITE, query: 'palisade' }, { onProgress: (e) => events.push(e) });
    assert.equal(task.state, 'succeeded');
    assert.equal(task.recipe, 'search-extract');
    const outputs = task.result!.outputs as { steps: string[]; first: { type: string; url: string } };
    assert.deepEqual(outputs.first, { type: 'navigate', url: `${SITE}/search` });
    assert.ok(outputs.steps.includes('extract'));
    assert.ok(events.some((e) => e.type === 'progress'), 'progress events reached the caller');
  });

  it('runSteps() a Recorder flow', async () => {
    const task = await sdk.runSteps(SITE, [{ type: 'navigate', url: `${SITE}/recorder` }, { type: 'click', selectors: [['aria/Search']], offsetX: 1, offsetY: 1 }]);
    assert.equal(task.state, 'succeeded');
  });

  it('a failed task rejects with the agent\'s code', async () => {
    await assert.rejects(sdk.runSteps(SITE, [{ type: 'navigate', url: SITE }, { type: 'assert', selectors: ['h1'], text: 'hello' }]), (e: unknown) => {
      assert.ok(e instanceof PalisadeError);
      assert.equal(e.code, 'PAL_ERR_ASSERTION_FAILED');
      return true;
    });
  });

  it('refusals keep their codes through the SDK', async () => {
    await assert.rejects(sdk.run('no-such-recipe'), (e: PalisadeError) => e.code === 'PAL_ERR_UNKNOWN_RECIPE');
    await assert.rejects(sdk.run('search-extract', { site: 'http://localhost:9', query: 'x' }), (e: PalisadeError) => e.code === 'PAL_ERR_SITE_NOT_GRANTED');
    await assert.rejects(sdk.runSteps(SITE, [{ type: 'navigate', url: 'javascript:alert(1)' }]), (e: PalisadeError) => e.code === 'PAL_ERR_URL_REFUSED');
    const wrong = new Palisade({ server: t.url, clientId: client.clientId, clientSecret: 'pal_sk_wrong', ca: t.server.tls!.ca! });
    await assert.rejects(wrong.recipes(), (e: PalisadeError) => e.status === 401);
  });

  it('CLI: run --json prints one TaskView and exits 0; refusals exit with their documented codes', async () => {
    const env = { PALISADE_SERVER: t.url, PALISADE_CA_FILE: caFile, PALISADE_CLIENT_ID: client.clientId, PALISADE_CLIENT_SECRET: client.clientSecret };
    const ok = await cli(['run', 'search-extract', '--input', `site=${SITE}`, '--input', 'query=palisade', '--json'], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).state, 'succeeded');
    const unknown = await cli(['run', 'nope', '--json'], env);
    assert.equal(unknown.code, 4);
    assert.equal(JSON.parse(unknown.stdout).code, 'PAL_ERR_UNKNOWN_RECIPE');
    const notGranted = await cli(['run', 'search-extract', '--input', 'site=http://localhost:9', '--input', 'query=x', '--json'], env);
    assert.equal(notGranted.code, 6);
    const badInput = await cli(['run', 'search-extract', '--input', `site=${SITE}`, '--input', 'query=x', '--input', 'bogus=1', '--json'], env);
    assert.equal(badInput.code, 2);
    assert.equal(JSON.parse(badInput.stdout).code, 'PAL_ERR_VALIDATION');
    const noCreds = await cli(['recipes', '--json'], { PALISADE_SERVER: t.url, PALISADE_CA_FILE: caFile });
    assert.equal(noCreds.code, 3);
    const list = await cli(['recipes', '--json'], env);
    assert.equal(list.code, 0);
    assert.deepEqual(JSON.parse(list.stdout).recipes.map((r: { name: string }) => r.name).sort(), ['image-prompt', 'search-extract']);
  });
});
