/**
 * @module popup — the toolbar popup: server URL, sign-in (with a code, or in a browser window),
 * connection status, the granted sites and sign-out. Every action is a typed message to the service
 * worker; the only thing done here is `chrome.permissions.request`, because Chrome shows a
 * permission prompt only in answer to a user gesture in a page. The DOM is built with
 * `createElement`/`textContent` only.
 */
import { parseOrigin } from '@palisade/protocol';
import type { PopupMessage, PopupReplies, Reply, Status } from './shared/messages.ts';
import { requestSiteAccess } from './worker/permissions.ts';

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

/** Sends one typed message to the worker; throws its refusal as an Error. */
async function send<T extends PopupMessage['type']>(message: Extract<PopupMessage, { type: T }>): Promise<PopupReplies[T]> {
  const reply = (await chrome.runtime.sendMessage(message)) as Reply<PopupReplies[T]> | undefined;
  if (!reply) throw new Error('the extension did not answer');
  if (!reply.ok) throw new Error(reply.error.message);
  return reply.data;
}

function showError(e: unknown): void {
  const el = $('error');
  el.textContent = e instanceof Error ? e.message : String(e ?? '');
  el.hidden = el.textContent === '';
}

function isInsecure(raw: string): boolean {
  try {
    return new URL(raw).protocol === 'http:';
  } catch {
    return false;
  }
}

function renderSites(list: Status['sites']): void {
  const ul = $('sites');
  ul.replaceChildren(
    ...list.map(({ origin, granted }) => {
      const li = document.createElement('li');
      if (!granted) li.className = 'revoked';
      const name = document.createElement('span');
      name.textContent = granted ? origin : `${origin} (access removed)`;
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.textContent = 'Remove';
      remove.setAttribute('aria-label', `Remove ${origin}`);
      remove.addEventListener('click', () => {
        send({ type: 'popup.removeSite', origin }).then(refresh, showError);
      });
      li.append(name, remove);
      return li;
    }),
  );
  if (list.length === 0) {
    const li = document.createElement('li');
    li.textContent = 'No sites yet.';
    ul.append(li);
  }
}

let serverFieldTouched = false;

function render(s: Status): void {
  const conn = $('conn');
  conn.dataset.state = s.connection;
  conn.textContent = s.auth === 'signed-in' ? s.connection : s.auth === 'pending' || s.browserSignIn ? 'signing in' : 'signed out';
  $('signed-out').hidden = s.auth !== 'signed-out' || s.browserSignIn;
  $('browser-pending').hidden = !s.browserSignIn || s.auth === 'signed-in';
  $('pending').hidden = s.auth !== 'pending';
  $('signed-in').hidden = s.auth !== 'signed-in';
  const server = $<HTMLInputElement>('server');
  if (!serverFieldTouched && s.server !== undefined && server.value === '') server.value = s.server;
  $('insecure').hidden = !isInsecure(server.value);
  if (s.device) $('user-code').textContent = s.device.userCode;
  $('account').textContent = s.account ? ` as ${s.account}` : '';
  $('server-name').textContent = s.server ?? '';
  if (s.auth === 'signed-in') renderSites(s.sites);
  if (s.lastError) showError(new Error(s.lastError));
}

async function refresh(): Promise<void> {
  render(await send({ type: 'popup.status' }));
}

$('server').addEventListener('input', () => {
  serverFieldTouched = true;
  $('insecure').hidden = !isInsecure($<HTMLInputElement>('server').value);
});

$('sign-in').addEventListener('click', () => {
  showError(undefined);
  send({ type: 'popup.signIn', server: $<HTMLInputElement>('server').value }).then((d) => {
    $('user-code').textContent = d.userCode;
    return refresh();
  }, showError);
});

// The worker runs the whole flow (this popup closes when the sign-in window takes the focus); the
// answer comes once signed in, or with the reason it failed.
$('sign-in-browser').addEventListener('click', () => {
  showError(undefined);
  const done = send({ type: 'popup.signInBrowser', server: $<HTMLInputElement>('server').value });
  void refresh().catch(showError);
  done.then(refresh, (e: unknown) => {
    showError(e);
    return refresh();
  }).catch(showError);
});

$('cancel-browser').addEventListener('click', () => {
  send({ type: 'popup.cancelSignIn' }).then(refresh, showError);
});

$('verify').addEventListener('click', (ev) => {
  ev.preventDefault();
  send({ type: 'popup.openVerification' }).catch(showError);
});

$('cancel').addEventListener('click', () => {
  send({ type: 'popup.cancelSignIn' }).then(refresh, showError);
});

$('sign-out').addEventListener('click', () => {
  send({ type: 'popup.signOut' }).then(refresh, showError);
});

$('reconnect').addEventListener('click', () => {
  send({ type: 'popup.reconnect' }).then(refresh, showError);
});

$('add-site').addEventListener('submit', (ev) => {
  ev.preventDefault();
  showError(undefined);
  const field = $<HTMLInputElement>('origin');
  let origin: string;
  try {
    origin = parseOrigin(field.value);
  } catch (e) {
    showError(e);
    return;
  }
  // The prompt must be requested here, inside the user gesture.
  requestSiteAccess(chrome.permissions, origin)
    .then((granted) => {
      if (granted === undefined) throw new Error(`access to ${origin} was not granted`);
      return send({ type: 'popup.addSite', origin: granted });
    })
    .then(() => {
      field.value = '';
      return refresh();
    })
    .catch(showError);
});

void refresh().catch(showError);
setInterval(() => void refresh().catch(showError), 1500);
