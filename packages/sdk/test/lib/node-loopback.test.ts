/** The loopback receiver's checks, request by request, and which program opens the system browser. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { browserCommand, listenLoopback } from '../../src/lib/node-loopback.ts';

/** One raw HTTP request (any Host header, any method) to the receiver. */
function raw(redirectUri: string, path: string, options: { method?: string; host?: string } = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const { port } = new URL(redirectUri);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.host ? { host: options.host } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('only GET /callback with exactly the expected state, on its own host, settles the callback; everything else is refused', async () => {
  const refused: string[] = [];
  const receiver = await listenLoopback({ state: 'the-state', onRefused: (r) => refused.push(r) });
  let settled = false;
  void receiver.callback.then(() => (settled = true));
  try {
    assert.match(receiver.redirectUri, /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    const uri = receiver.redirectUri;
    const port = new URL(uri).port;

    for (const path of ['/', '/favicon.ico', '/callback/', '/Callback?state=the-state', '/other?state=the-state']) {
      const r = await raw(uri, path);
      assert.equal(r.status, 404, path);
    }
    const post = await raw(uri, '/callback?state=the-state&code=c', { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET');
    const head = await raw(uri, '/callback?state=the-state&code=c', { method: 'HEAD' });
    assert.equal(head.status, 405, 'a HEAD (a link preview, say) does not consume the callback');
    const rebound = await raw(uri, '/callback?state=the-state&code=c', { host: `attacker.example:${port}` });
    assert.equal(rebound.status, 400, 'a DNS-rebound name is not this receiver');
    for (const query of ['code=c', 'state=wrong&code=c', 'state=the-state&state=the-state&code=c', 'state=THE-STATE&code=c', 'state=the-stat&code=c']) {
      const r = await raw(uri, `/callback?${query}`);
      assert.equal(r.status, 400, query);
      assert.match(r.body, /does not belong to the sign-in that is waiting/);
      assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
      assert.equal(r.headers['cache-control'], 'no-store');
    }
    assert.equal(settled, false, 'nothing so far settles the callback');
    assert.deepEqual(refused, [
      `a request for host "attacker.example:${port}"`,
      'a callback without state',
      'a callback with the wrong state',
      'a callback with the wrong state',
      'a callback with the wrong state',
      'a callback with the wrong state',
    ]);

    const answered = raw(uri, '/callback?state=the-state&code=the-code');
    const callback = await receiver.callback;
    assert.equal(callback.params.get('code'), 'the-code');
    callback.reply(200, 'done');
    callback.reply(500, 'a second reply is ignored');
    assert.deepEqual(await answered.then((r) => [r.status, r.body]), [200, 'done\n']);
    const again = await raw(uri, '/callback?state=the-state&code=the-code');
    assert.equal(again.status, 409, 'a second callback is refused');
  } finally {
    await receiver.close();
  }
  await assert.rejects(raw(receiver.redirectUri, '/callback'), (e: NodeJS.ErrnoException) => e.code === 'ECONNREFUSED', 'closed: the port is free');
});

test('close() frees the port even while a browser keeps a connection open', async () => {
  const receiver = await listenLoopback({ state: 's' });
  const { port } = new URL(receiver.redirectUri);
  const { connect } = await import('node:net');
  const socket = connect(Number(port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const started = Date.now();
  await receiver.close();
  assert.ok(Date.now() - started < 3000);
  socket.destroy();
});

test('the system browser is opened with an argument list, never through a shell', () => {
  const url = 'https://palisade.example/oauth2/auth?a=1&b=2&redirect_uri=http%3A%2F%2F127.0.0.1%3A5%2Fcallback';
  assert.deepEqual(browserCommand(url, 'darwin', {}), { command: 'open', args: [url] });
  assert.deepEqual(browserCommand(url, 'win32', {}), { command: 'rundll32', args: ['url.dll,FileProtocolHandler', url] });
  assert.deepEqual(browserCommand(url, 'linux', { DISPLAY: ':0' }), { command: 'xdg-open', args: [url] });
  assert.deepEqual(browserCommand(url, 'freebsd', { WAYLAND_DISPLAY: 'wayland-0' }), { command: 'xdg-open', args: [url] });
  assert.equal(browserCommand(url, 'linux', {}), undefined, 'no display: nothing is started (no text browser in this terminal)');
  assert.equal(browserCommand('file:///etc/passwd', 'darwin', {}), undefined, 'only http(s) links');
  assert.equal(browserCommand('javascript:alert(1)', 'win32', {}), undefined);
});
