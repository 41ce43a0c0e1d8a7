/**
 * @module background — the service worker: wires sign-in (`worker/auth`), the agent connection
 * (`worker/connection`), the sites the user granted (`worker/permissions`), the task runner
 * (`worker/runner` + `worker/tabs`) and the runtime-message pipeline (`worker/pipeline`).
 * Every listener is registered synchronously at the top level, as MV3 requires.
 */
import { PROTOCOL_VERSION, PalisadeError, serverFrameValidator, type AgentFrame } from '@palisade/protocol';
import type { PopupMessage, PopupReplies, Reply, Status } from './shared/messages.ts';
import { Auth, agentSocketUrl } from './worker/auth.ts';
import { AgentConnection } from './worker/connection.ts';
import { PermissionManager } from './worker/permissions.ts';
import { MessageGate, type Sender } from './worker/pipeline.ts';
import { RateLimiter } from './worker/rate-limit.ts';
import { TaskRunner } from './worker/runner.ts';
import { NetGuard } from './worker/netguard.ts';
import { LOCAL, SESSION, str, trustedOnly } from './worker/storage.ts';
import { chromeDriver } from './worker/tabs.ts';

const RECONNECT_ALARM = 'palisade.reconnect';

/** Structured log line; never contains tokens or message bodies. */
function log(event: string, detail: Record<string, unknown> = {}): void {
  console.info(`[palisade] ${event}`, detail);
}

/**
 * Content scripts run in the renderer of the sites a task drives; `chrome.storage.local` (which
 * holds the refresh token) is closed to them before anything is read or stored. Every use of
 * `storage.local` by the auth code waits for this; if the browser refuses, storing a refresh token
 * fails (closed) instead of leaving it readable.
 */
const localRestricted: Promise<void> = (async () => chrome.storage.local.setAccessLevel({ accessLevel: 'TRUSTED_CONTEXTS' }))().then(
  () => log('storage.local.restricted'),
  (e: unknown) => {
    log('storage.local.unrestricted', { message: (e as Error).message });
    throw new PalisadeError('PAL_ERR_INTERNAL', `this browser cannot keep chrome.storage.local from content scripts: ${(e as Error).message}`);
  },
);
localRestricted.catch(() => {}); // reported where it is awaited

/** Stale navigation rules of a previous worker are removed now; new ones are added per task tab. */
const netGuard = new NetGuard({ rules: chrome.declarativeNetRequest, downloads: chrome.downloads, extensionId: chrome.runtime.id, log });
netGuard.listen(chrome.downloads);

const serverFrame = serverFrameValidator;
let agentId: string | undefined;

const auth = new Auth({
  fetch: (input, init) => fetch(input, init),
  local: trustedOnly(chrome.storage.local, localRestricted),
  session: chrome.storage.session,
  identity: chrome.identity,
  // An extension API call resets the worker's idle timer while a sign-in window is open.
  keepAlive: () => void chrome.runtime.getPlatformInfo(),
  onChange: () => {
    if (auth.state === 'signed-in') connection.ensure();
    else connection.stop();
  },
});

const sites = new PermissionManager(chrome.permissions, {
  load: async () => {
    const v = (await chrome.storage.local.get(LOCAL.sites))[LOCAL.sites];
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  },
  save: (origins) => chrome.storage.local.set({ [LOCAL.sites]: origins }),
});

async function instanceId(): Promise<string> {
  const v = str((await chrome.storage.local.get(LOCAL.instanceId))[LOCAL.instanceId]);
  if (v !== undefined) return v;
  const id = crypto.randomUUID();
  await chrome.storage.local.set({ [LOCAL.instanceId]: id });
  return id;
}

const connection = new AgentConnection({
  socket: (url, protocols) => new WebSocket(url, protocols),
  url: () => (auth.server === undefined ? undefined : agentSocketUrl(auth.server)),
  token: () => auth.accessToken(),
  refreshToken: () => auth.refresh(),
  signedIn: () => auth.state === 'signed-in',
  hello: async (): Promise<AgentFrame> => ({
    type: 'hello',
    v: PROTOCOL_VERSION,
    agent: { name: 'Palisade', version: chrome.runtime.getManifest().version, instanceId: await instanceId() },
    grants: await sites.grants(),
  }),
  onFrame: (raw) => void onServerFrame(raw),
  onState: (state, detail) => {
    log('connection', { state, detail });
    // While disconnected but signed in, an alarm wakes a suspended worker to reconnect.
    if (state === 'reconnecting') void chrome.alarms.create(RECONNECT_ALARM, { periodInMinutes: 0.5 });
    else void chrome.alarms.clear(RECONNECT_ALARM);
  },
  log,
});

/**
 * Results of tasks that finished while the connection was down (a server restart closes it with
 * 1012, a network blip), sent once the server has welcomed the agent again: the server keeps a task
 * for its agent while it reconnects, so the result still counts and the task does not run again.
 * In memory and bounded (the oldest dropped first); progress frames are not kept.
 */
const held = new Map<string, AgentFrame>();
const MAX_HELD_RESULTS = 16;

function sendHeld(): void {
  for (const [taskId, frame] of held) {
    if (!connection.send(frame)) return;
    held.delete(taskId);
    log('frame.held.sent', { taskId });
  }
}

const runner = new TaskRunner({
  driver: chromeDriver(netGuard),
  isGranted: (site) => sites.isGranted(site),
  send: (frame) => {
    if (connection.send(frame)) return;
    if (frame.type !== 'task.result') {
      log('frame.unsent', { type: frame.type });
      return;
    }
    held.set(frame.taskId, frame);
    if (held.size > MAX_HELD_RESULTS) {
      const [oldest] = held.keys();
      held.delete(oldest!);
      log('frame.held.dropped', { taskId: oldest });
    }
    log('frame.held', { taskId: frame.taskId });
  },
  log,
});

sites.onChange((grants) => {
  connection.send({ type: 'grants', grants });
});

async function onServerFrame(raw: unknown): Promise<void> {
  const type = raw !== null && typeof raw === 'object' ? (raw as { type?: unknown }).type : undefined;
  // The runner validates dispatch frames itself, so code-running steps get their own error code.
  if (type === 'task.dispatch') {
    if (!serverFrame.check(raw)) log('frame.in.invalid', { type, issues: serverFrame.issues(raw).slice(0, 3) });
    await runner.dispatch(raw);
    return;
  }
  if (!serverFrame.check(raw)) {
    log('frame.in.refused', { type: typeof type === 'string' ? type.slice(0, 32) : undefined, issues: serverFrame.issues(raw).slice(0, 3) });
    return;
  }
  switch (raw.type) {
    case 'welcome':
      agentId = raw.agentId;
      log('welcome', { agentId });
      sendHeld();
      return;
    case 'task.cancel':
      runner.cancel(raw.taskId, raw.reason);
      return;
    case 'pong':
      return;
    case 'error':
      log('server.error', { code: raw.code, message: raw.message.slice(0, 200), taskId: raw.taskId });
      return;
    case 'task.dispatch':
      return; // handled above
  }
}

// ── runtime messages ────────────────────────────────────────────────────────────────────────

const gate = new MessageGate(
  {
    extensionId: chrome.runtime.id,
    popupUrl: chrome.runtime.getURL('popup.html'),
    drivenSite: (tabId) => runner.drivenSite(tabId),
    limiter: new RateLimiter(),
  },
  (e) => log('message.refused', { code: e.code, reason: e.message, type: e.type?.slice(0, 40), senderId: e.sender.id, origin: e.sender.origin, tab: e.sender.tab?.id }),
);

async function status(): Promise<Status> {
  return {
    server: auth.server,
    insecure: auth.insecure,
    auth: auth.state,
    account: auth.account,
    device: auth.device
      ? { userCode: auth.device.userCode, verificationUri: auth.device.verificationUriComplete ?? auth.device.verificationUri, expiresAt: auth.device.expiresAt }
      : undefined,
    browserSignIn: auth.browserSignIn,
    connection: connection.state,
    lastError: connection.state === 'error' || connection.state === 'reconnecting' ? (connection.detail ?? auth.lastError) : auth.lastError,
    agentId,
    sites: await sites.sites(),
    refused: { ...gate.refused },
    tasks: runner.active(),
  };
}

type Handlers = { [T in keyof PopupReplies]: (m: Extract<PopupMessage, { type: T }>) => Promise<PopupReplies[T]> };

/** What each popup message does. */
const popupHandlers: Handlers = {
  'popup.status': () => status(),
  'popup.signIn': async (m) => {
    const flow = await auth.signIn(m.server);
    return { userCode: flow.userCode, verificationUri: flow.verificationUriComplete ?? flow.verificationUri, expiresAt: flow.expiresAt };
  },
  'popup.signInBrowser': async (m) => {
    await auth.signInWithBrowser(m.server);
    return { account: auth.account };
  },
  'popup.cancelSignIn': async () => {
    auth.cancelSignIn();
    return null;
  },
  'popup.openVerification': async () => {
    const d = auth.device;
    if (!d) throw new PalisadeError('PAL_ERR_NOT_FOUND', 'no sign-in is waiting');
    // Only the server's own page (checked same-origin when the flow started) is ever opened.
    await chrome.tabs.create({ url: d.verificationUriComplete ?? d.verificationUri });
    return null;
  },
  'popup.signOut': async () => {
    runner.cancelAll('signed out');
    held.clear(); // another account may sign in next: its server gets none of these
    connection.stop();
    await auth.signOut();
    agentId = undefined;
    return null;
  },
  'popup.reconnect': async () => {
    connection.restart();
    return null;
  },
  'popup.addSite': async (m) => ({ origin: await sites.add(m.origin) }),
  'popup.removeSite': async (m) => ({ origin: await sites.remove(m.origin) }),
};

async function handle(message: unknown, sender: chrome.runtime.MessageSender): Promise<Reply> {
  const checked = gate.check(message, sender as Sender);
  if (!checked.ok) return checked;
  try {
    if (checked.channel === 'content') {
      log('content.ready', { tab: sender.tab?.id });
      return { ok: true, data: null };
    }
    const m = checked.message;
    const handler = popupHandlers[m.type] as (x: PopupMessage) => Promise<unknown>;
    return { ok: true, data: await handler(m) };
  } catch (e) {
    if (e instanceof PalisadeError) return { ok: false, error: { code: e.code, message: e.message } };
    log('handler.error', { type: checked.message.type, message: (e as Error).message });
    return { ok: false, error: { code: 'PAL_ERR_INTERNAL', message: (e as Error).message } };
  }
}

chrome.runtime.onMessage.addListener((message: unknown, sender, sendResponse: (r: Reply) => void) => {
  void handle(message, sender).then(sendResponse);
  return true;
});

// No `externally_connectable`: web pages cannot reach the extension at all. Other extensions can
// try; they are refused and logged.
chrome.runtime.onMessageExternal.addListener((message: unknown, sender, sendResponse: (r: Reply) => void) => {
  const type = message !== null && typeof message === 'object' ? (message as { type?: unknown }).type : undefined;
  sendResponse(gate.refuse({ code: 'PAL_ERR_SENDER_REFUSED', message: 'messages from other extensions or pages are refused' }, sender as Sender, typeof type === 'string' ? type : undefined));
  return false;
});
chrome.runtime.onConnectExternal.addListener((port) => {
  gate.refuse({ code: 'PAL_ERR_SENDER_REFUSED', message: 'connections from other extensions or pages are refused' }, (port.sender ?? {}) as Sender, 'connect');
  port.disconnect();
});

// ── lifecycle ───────────────────────────────────────────────────────────────────────────────

chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === RECONNECT_ALARM && auth.state === 'signed-in') connection.ensure();
});
// Credentials written by another context (or restored) take effect without a restart.
chrome.storage.onChanged.addListener((changes, area) => {
  const relevant = area === 'local' ? LOCAL.refreshToken in changes || LOCAL.server in changes : area === 'session' && SESSION.accessToken in changes;
  if (relevant) void auth.load();
});
chrome.runtime.onStartup.addListener(() => void auth.load());

void auth.load();
