import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PalisadeError } from '@palisade/protocol';
import { deviceLogin, refreshTokens, refreshingTokenProvider, type DeviceCode, type TokenSet } from '../src/device.ts';
import { startFakeServer } from './helpers/fake-server.ts';

test('device login shows the code, polls at the interval, slows down when told, and returns tokens', async () => {
  const server = await startFakeServer({ devicePolls: ['authorization_pending', 'slow_down', 'authorization_pending'] });
  try {
    const sleeps: number[] = [];
    let shown: DeviceCode | undefined;
    const tokens = await deviceLogin({
      server: server.url,
      onCode: (c) => void (shown = c),
      sleep: async (ms) => void sleeps.push(ms),
    });
    assert.equal(shown?.userCode, 'WXYZ-1234');
    assert.match(shown?.verificationUriComplete ?? '', /user_code=WXYZ-1234/);
    assert.deepEqual(sleeps, [1000, 1000, 6000, 6000]);
    assert.match(tokens.accessToken, /^at-device-/);
    assert.match(tokens.refreshToken ?? '', /^rt-/);
    assert.ok(tokens.expiresAt > Date.now());
    const auth = server.requestsTo('/oauth2/device/auth')[0];
    assert.deepEqual(Object.fromEntries(new URLSearchParams(auth?.body)), { client_id: 'palisade-cli', scope: 'openid offline_access tasks admin' });
    const poll = server.requestsTo('/oauth2/token')[0];
    assert.equal(new URLSearchParams(poll?.body).get('grant_type'), 'urn:ietf:params:oauth:grant-type:device_code');
  } finally {
    await server.close();
  }
});

test('a denied login rejects with PAL_ERR_FORBIDDEN; an expired code with PAL_ERR_TIMEOUT', async () => {
  for (const [outcome, code] of [['access_denied', 'PAL_ERR_FORBIDDEN'], ['expired_token', 'PAL_ERR_TIMEOUT']] as const) {
    const server = await startFakeServer({ deviceOutcome: outcome });
    try {
      await assert.rejects(
        deviceLogin({ server: server.url, onCode: () => {}, sleep: async () => {} }),
        (e: unknown) => e instanceof PalisadeError && e.code === code,
      );
    } finally {
      await server.close();
    }
  }
});

test('polling stops when the code expires locally, without waiting past it', async () => {
  const server = await startFakeServer({ devicePolls: Array.from({ length: 1000 }, () => 'authorization_pending') });
  try {
    let clock = 0;
    await assert.rejects(
      deviceLogin({ server: server.url, onCode: () => {}, now: () => clock, sleep: async (ms) => void (clock += ms) }),
      (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_TIMEOUT',
    );
    assert.ok(server.state.devicePollsSeen <= 600, `polled ${server.state.devicePollsSeen} times in 600 s at 1 s`);
    assert.ok(server.state.devicePollsSeen >= 590);
  } finally {
    await server.close();
  }
});

test('refresh tokens rotate: the new one works, the spent one is refused', async () => {
  const server = await startFakeServer({ devicePolls: [] });
  try {
    const first = await deviceLogin({ server: server.url, onCode: () => {}, sleep: async () => {} });
    const second = await refreshTokens({ server: server.url, refreshToken: first.refreshToken as string });
    assert.notEqual(second.refreshToken, first.refreshToken);
    assert.notEqual(second.accessToken, first.accessToken);
    await assert.rejects(
      refreshTokens({ server: server.url, refreshToken: first.refreshToken as string }),
      (e: unknown) => e instanceof PalisadeError && e.code === 'PAL_ERR_TOKEN_INVALID',
    );
    const third = await refreshTokens({ server: server.url, refreshToken: second.refreshToken as string });
    assert.ok(third.refreshToken);
  } finally {
    await server.close();
  }
});

test('refreshingTokenProvider refreshes once for concurrent callers and always hands on the newest tokens', async () => {
  const server = await startFakeServer({ devicePolls: [] });
  try {
    const initial = await deviceLogin({ server: server.url, onCode: () => {}, sleep: async () => {} });
    const stored: TokenSet[] = [];
    let clock = Date.now();
    const provider = refreshingTokenProvider({ tokens: initial, server: { server: server.url }, onTokens: (t) => void stored.push(t), now: () => clock });
    assert.equal(await provider({ forceRefresh: false }), initial.accessToken);
    clock = initial.expiresAt - 30_000; // inside the 60 s margin
    const tokens = await Promise.all([provider({ forceRefresh: false }), provider({ forceRefresh: false }), provider({ forceRefresh: false })]);
    assert.equal(new Set(tokens).size, 1);
    assert.equal(server.state.issued.refresh, 1);
    assert.equal(stored.length, 1);
    assert.equal(stored[0]?.accessToken, tokens[0]);
    // A 401 on the current token forces a second rotation; the newest refresh token is stored again.
    const again = await provider({ forceRefresh: true, rejected: tokens[0] });
    assert.notEqual(again, tokens[0]);
    assert.equal(stored.length, 2);
    assert.notEqual(stored[1]?.refreshToken, stored[0]?.refreshToken);
  } finally {
    await server.close();
  }
});
