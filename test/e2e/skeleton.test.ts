/**
 * The walking skeleton end to end, every part real: the Palisade server (TLS with its generated
 * development CA, OAuth 2.1, SQLite), the built extension loaded in headless Chromium, the SDK and
 * the `palisade` CLI, and fixture sites served locally.
 *
 *   1. The user signs the extension in from its popup with the device grant, approving the code on
 *      the server's own pages in the same browser.
 *   2. The user grants a site in the popup; the server sees the agent and its grant.
 *   3. The admin signs the CLI in (device grant) and creates an API client.
 *   4. Both recipes run from the SDK and from the CLI; a DevTools Recorder flow runs unchanged.
 *   5. A site the user did not grant is refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { Palisade, PalisadeError, type TaskEvent } from '../../packages/sdk/src/index.ts';
import { launch, type Browser } from '../../packages/extension/test/support/harness.ts';
import { ADMIN, approveDevice, createAdmin, startTestServer, type TestServer } from '../../packages/server/test/support/harness.ts';
import { generatedImage, loadRecorderFlow, searchResults, startFixtureSite, type FixtureSite } from '../fixtures/site.ts';

const CLI = new URL('../../packages/sdk/src/cli.ts', import.meta.url).pathname;

interface CliResult { code: number; stdout: string; stderr: string }

/** Runs the CLI; `onStderr` sees its stderr as it arrives (for the device code). */
function cli(args: string[], env: Record<string, string>, onStderr?: (text: string) => void): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
      onStderr?.(stderr);
    });
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('walking skeleton, end to end in headless Chromium', () => {
  let server: TestServer;
  let site: FixtureSite;
  let other: FixtureSite;
  let browser: Browser;
  let popup: Page;
  let env: Record<string, string>;
  let sdk: Palisade;

  before(async () => {
    site = await startFixtureSite({ host: '127.0.0.1' });
    other = await startFixtureSite({ host: 'localhost' });
    server = await startTestServer();
    await createAdmin(server);
    // Chromium trusts exactly the server's key, as a user who installed the dev CA would.
    browser = await launch([], [`--ignore-certificate-errors-spki-list=${server.server.tls!.spki}`]);
    const caFile = join(mkdtempSync(join(tmpdir(), 'palisade-e2e-')), 'ca.crt');
    writeFileSync(caFile, server.server.tls!.ca!);
    env = { PALISADE_SERVER: server.url, PALISADE_CA_FILE: caFile, XDG_CONFIG_HOME: mkdtempSync(join(tmpdir(), 'palisade-cli-')) };
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    await site?.close();
    await other?.close();
  });

  it('signs the extension in from its popup with the device grant, approved on the server page', async () => {
    popup = await browser.ctx.newPage();
    await popup.goto(`chrome-extension://${browser.extensionId}/popup.html`);
    await popup.fill('#server', server.url);
    await popup.click('#sign-in');
    await popup.waitForSelector('#pending:not([hidden])');
    const code = (await popup.textContent('#user-code'))!.trim();
    assert.match(code, /^[A-Z]{4}-[A-Z]{4}$/);
    // The popup opens the verification page in a tab of the same browser; the user approves there.
    const [approval] = await Promise.all([browser.ctx.waitForEvent('page'), popup.click('#verify')]);
    await approval.waitForSelector('#user-code');
    assert.equal((await approval.textContent('#user-code'))!.trim(), code, 'the server page shows the code the popup shows');
    await approval.click('#confirm');
    await approval.fill('#username', ADMIN.username);
    await approval.fill('#password', ADMIN.password);
    await approval.click('button[type=submit]');
    await approval.click('#approve');
    await approval.waitForSelector('#device-success');
    await popup.waitForSelector('#signed-in:not([hidden])', { timeout: 20_000 });
    await until('the agent to connect', () => server.server.agents.size === 1 || undefined);
    assert.ok(server.securityEvents.some((e) => e.activity_name === 'ws.hello' && e.src_endpoint.origin === `chrome-extension://${browser.extensionId}`));
  });

  it('grants one site from the popup; the server routes by that grant', async () => {
    await popup.fill('#origin', site.origin);
    await popup.click('#add-site button[type=submit]');
    await popup.waitForSelector(`#sites li:has-text("${site.origin}")`);
    const agent = await until('the grant to reach the server', () => {
      for (const id of connectedAgentIds(server)) {
        const a = server.server.agents.get(id);
        if (a?.grants.has(site.origin)) return a;
      }
      return undefined;
    });
    assert.deepEqual([...agent.grants], [site.origin], 'nothing but the granted site');
  });

  it('the admin signs the CLI in (device grant) and creates an API client', async () => {
    let approved: Promise<void> | undefined;
    const login = await cli(['login'], env, (text) => {
      const link = /https:\/\/\S+\/oauth2\/device\?user_code=\S+/.exec(text)?.[0];
      if (link && !approved) approved = approveDevice(server, link);
    });
    assert.equal(login.code, 0, login.stderr);
    await approved;
    const created = await cli(['clients', 'create', '--name', 'e2e', '--json'], env);
    assert.equal(created.code, 0, created.stderr);
    const client = JSON.parse(created.stdout) as { clientId: string; clientSecret: string };
    assert.match(client.clientSecret, /^pal_sk_/);
    env = { ...env, PALISADE_CLIENT_ID: client.clientId, PALISADE_CLIENT_SECRET: client.clientSecret };
    sdk = new Palisade({ server: server.url, clientId: client.clientId, clientSecret: client.clientSecret, ca: server.server.tls!.ca! });
  });

  it('SDK: search-extract runs in the browser and returns the page\'s results', async () => {
    const events: TaskEvent[] = [];
    const task = await sdk.run('search-extract', { site: site.origin, query: 'secure browsers' }, { onProgress: (e) => events.push(e) });
    assert.equal(task.state, 'succeeded');
    const expected = searchResults(site.origin, 'secure browsers').map(({ title, url, snippet }) => ({ title, url, snippet }));
    assert.deepEqual(task.result!.outputs.results, expected);
    assert.ok(events.filter((e) => e.type === 'progress').length >= 6, 'progress for every step');
    assert.ok(task.result!.timings.steps.length >= 6 && task.result!.timings.totalMs > 0);
  });

  it('CLI: search-extract with --json', async () => {
    const r = await cli(['run', 'search-extract', '--input', `site=${site.origin}`, '--input', 'query=palisade', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const task = JSON.parse(r.stdout) as { state: string; result: { outputs: { results: { title: string }[] } } };
    assert.equal(task.state, 'succeeded');
    assert.deepEqual(task.result.outputs.results.map((x) => x.title), searchResults(site.origin, 'palisade').map((x) => x.title));
  });

  it('SDK: image-prompt types a prompt, waits until idle and downloads the generated image', async () => {
    const prompt = 'a lighthouse at dusk';
    const task = await sdk.run('image-prompt', { site: site.origin, prompt });
    assert.equal(task.state, 'succeeded');
    const image = generatedImage(site.origin, prompt);
    const artifact = task.result!.artifacts.find((a) => a.kind === 'download');
    assert.ok(artifact, JSON.stringify(task.result));
    assert.equal(artifact.mimeType, 'image/png');
    const file = join(browser.downloadDir, 'palisade', artifact.filename!);
    await until('the download on disk', () => existsSync(file) || undefined);
    const bytes = readFileSync(file);
    assert.equal(bytes.length, artifact.bytes);
    assert.deepEqual(bytes.subarray(0, 8), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    assert.ok(JSON.stringify(task.result!.outputs).includes(image.id), 'the extracted image is the one generated for this prompt');
  });

  it('CLI: image-prompt with --json', async () => {
    const r = await cli(['run', 'image-prompt', '--input', `site=${site.origin}`, '--input', 'prompt=a red fox', '--input', 'filename=fox.png', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const task = JSON.parse(r.stdout) as { state: string; result: { artifacts: { filename: string }[] } };
    assert.equal(task.state, 'succeeded');
    assert.match(task.result.artifacts[0]!.filename, /^fox( \(\d+\))?\.png$/);
    assert.ok(existsSync(join(browser.downloadDir, 'palisade', task.result.artifacts[0]!.filename)));
  });

  it('a screenshot step comes back as a PNG through the real server', async () => {
    const task = await sdk.runSteps(site.origin, [
      { type: 'navigate', url: `${site.origin}/search?q=screenshots` },
      { type: 'waitForElement', selectors: [['li[data-result]']] },
      { type: 'screenshot', name: 'results' },
    ]);
    assert.equal(task.state, 'succeeded');
    const shot = task.result!.artifacts.find((a) => a.kind === 'screenshot');
    const dataUrl = shot?.dataUrl ?? '';
    assert.ok(dataUrl.startsWith('data:image/png;base64,'), 'a PNG data URL');
    const png = Buffer.from(dataUrl.slice('data:image/png;base64,'.length), 'base64');
    assert.deepEqual(png.subarray(0, 8), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    assert.ok(png.readUInt32BE(16) > 0 && png.readUInt32BE(20) > 0, 'it has a width and a height');
  });

  it('a DevTools Recorder flow runs unchanged (CLI --flow)', async () => {
    const flowFile = join(mkdtempSync(join(tmpdir(), 'palisade-flow-')), 'search.json');
    writeFileSync(flowFile, JSON.stringify(loadRecorderFlow('search', site.origin)));
    const before = site.requests.length;
    const r = await cli(['run', '--flow', flowFile, '--site', site.origin, '--json'], env);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal((JSON.parse(r.stdout) as { state: string }).state, 'succeeded');
    assert.ok(site.requests.slice(before).some((q) => q.path === '/recorder/results?q=palisade'), 'the flow submitted the search form with its recorded value');
  });

  it('a site the user did not grant is refused, from the SDK and the CLI', async () => {
    await assert.rejects(sdk.run('search-extract', { site: other.origin, query: 'x' }), (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_SITE_NOT_GRANTED');
    const r = await cli(['run', 'search-extract', '--input', `site=${other.origin}`, '--input', 'query=x', '--json'], env);
    assert.equal(r.code, 6);
    assert.equal((JSON.parse(r.stdout) as { code: string }).code, 'PAL_ERR_SITE_NOT_GRANTED');
    assert.equal(other.requests.length, 0, 'the ungranted site was never contacted');
  });
});

/** Agents that said hello to the server, from its security events. */
function connectedAgentIds(t: TestServer): Set<string> {
  const ids = new Set<string>();
  for (const e of t.securityEvents) if (e.activity_name === 'ws.hello' && e.actor.agent_uid) ids.add(e.actor.agent_uid);
  return ids;
}
