/**
 * @module auth/pages — the server's few HTML pages (setup, sign-in, consent, device code). Markup is
 * built from escaped strings only; no inline script or style, one stylesheet at `/assets/palisade.css`
 * (the pages' Content Security Policy, edge/headers.ts, allows nothing else). Every form of an
 * interaction carries its anti-forgery token (edge/forms.ts).
 */
import { FORM_TOKEN_FIELD } from '../edge/forms.ts';

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for HTML element content and quoted attributes. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESC[c]!);
}

/** A full page around `body` (already-escaped HTML). */
export function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} · Palisade</title><link rel="stylesheet" href="/assets/palisade.css"></head>
<body><main class="card"><h1>${esc(title)}</h1>
${body}
</main></body></html>`;
}

export const STYLESHEET = `:root{color-scheme:light dark;font-family:system-ui,sans-serif}
body{margin:0;min-height:100vh;display:grid;place-items:center;background:#f3f4f6}
.card{background:#fff;color:#111;padding:2rem 2.5rem;border-radius:12px;box-shadow:0 2px 12px #0002;max-width:26rem;width:100%}
h1{font-size:1.4rem;margin:0 0 1rem}label{display:block;margin:.8rem 0 .3rem;font-weight:600}
input{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #bbb;border-radius:6px}
button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem;border:0;border-radius:6px;background:#1f5fd6;color:#fff;cursor:pointer}
button.secondary{background:#e5e7eb;color:#111}.error{color:#b91c1c}.code{font:600 1.6rem ui-monospace,monospace;letter-spacing:.2em}
ul.scopes{padding-left:1.2rem}.row{display:flex;gap:.5rem}`;

/** The hidden field that carries a form's anti-forgery token. */
const tokenField = (csrf: string) => `<input type="hidden" name="${FORM_TOKEN_FIELD}" value="${esc(csrf)}">`;

/** The sign-in form of an interaction; `csrf` is its anti-forgery token. */
export function loginPage(uid: string, clientName: string, csrf: string, error?: string, providers: readonly { id: string; name: string }[] = []): string {
  const upstream = providers.map((p) => `<form method="post" action="/interaction/${esc(uid)}/upstream/${esc(p.id)}">${tokenField(csrf)}<button type="submit" class="secondary" id="upstream-${esc(p.id)}">Sign in with ${esc(p.name)}</button></form>`).join('\n');
  return page('Sign in', `<p>Sign in to approve <strong>${esc(clientName)}</strong>.</p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="on">${tokenField(csrf)}
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required maxlength="64" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required maxlength="128">
<button type="submit">Sign in</button></form>${upstream ? `\n<p>or</p>\n${upstream}` : ''}`);
}

const SCOPE_TEXT: Record<string, string> = {
  openid: 'know who you are',
  offline_access: 'stay signed in until you sign out',
  agent: 'run tasks in this browser on the sites you grant',
  tasks: 'submit tasks to your browsers and read their results',
  admin: 'manage API clients',
};

/** The consent form of an interaction; `csrf` is its anti-forgery token. */
export function consentPage(uid: string, clientName: string, username: string, scopes: string[], csrf: string): string {
  const items = scopes.map((s) => `<li>${esc(SCOPE_TEXT[s] ?? s)}</li>`).join('');
  return page('Approve access', `<p>Signed in as <strong>${esc(username)}</strong>.</p>
<p><strong>${esc(clientName)}</strong> asks to:</p><ul class="scopes">${items}</ul>
<div class="row"><form method="post" action="/interaction/${esc(uid)}/confirm">${tokenField(csrf)}<button type="submit" id="approve">Approve</button></form>
<form method="post" action="/interaction/${esc(uid)}/abort">${tokenField(csrf)}<button type="submit" class="secondary" id="deny">Deny</button></form></div>`);
}

export function setupPage(token: string, error?: string): string {
  return page('Create the admin account', `<p>This link works once. The account you create administers this Palisade server.</p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/setup"><input type="hidden" name="token" value="${esc(token)}">
<label for="username">Username</label><input id="username" name="username" required maxlength="64" pattern="[A-Za-z0-9._-]{3,64}" autocomplete="username">
<label for="password">Password (at least 8 characters)</label><input id="password" name="password" type="password" required minlength="8" maxlength="128" autocomplete="new-password">
<button type="submit">Create account</button></form>`);
}

export function messagePage(title: string, text: string): string {
  return page(title, `<p>${esc(text)}</p>`);
}
