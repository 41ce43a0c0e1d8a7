/**
 * Builds the extension with esbuild.
 *
 *   node build.ts           release build → dist/
 *   node build.ts --test    test build    → dist-test/ (fixture origins granted at load, see below)
 *   node build.ts --all     both
 *
 * Bundles: `background.js` (service worker, ESM), `content.js` (IIFE, injected on demand),
 * `popup.js` (ESM) + `popup.html` + `popup.css`, and writes `manifest.json`.
 */
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8')) as { version: string; description: string };

/** Chrome 116: WebSocket activity keeps an MV3 service worker alive. */
export const MINIMUM_CHROME_VERSION = '116';

/** The release manifest. Every permission has its reason next to it. */
export function manifest(): Record<string, unknown> {
  return {
    manifest_version: 3,
    name: 'Palisade',
    version: pkg.version,
    description: pkg.description,
    minimum_chrome_version: MINIMUM_CHROME_VERSION,
    background: { service_worker: 'background.js', type: 'module' },
    action: { default_title: 'Palisade', default_popup: 'popup.html' },
    permissions: [
      'storage', // tokens (session + local), server URL, granted sites, instance id
      'scripting', // inject content.js into a task's tab, on demand, on granted sites only
      'tabs', // open/close/navigate a task's tab and read its URL to keep it on the granted site
      'downloads', // the `download` step saves into the palisade/ folder
      'alarms', // wakes a suspended worker to reconnect while the server is unreachable
      // Sign-in in a browser window (authorization code + PKCE, worker/auth.ts + worker/code-flow.ts):
      // chrome.identity.launchWebAuthFlow opens the server's own sign-in page in a window and hands
      // back its redirect to https://<extension id>.chromiumapp.org/. No install warning; only
      // launchWebAuthFlow and getRedirectURL are used, never the Google-account calls (getAuthToken,
      // getProfileUserInfo, getAccounts; bundle.test.ts checks).
      'identity',
      // Blocks, before they are sent, the requests of a task's tab that would leave the task's site
      // (clicks, form submits, redirects): session rules scoped to that one tab (worker/netguard.ts).
      // Not `declarativeNetRequestWithHostAccess`: that variant applies a rule only to URLs the
      // extension holds host access for, so it cannot block a navigation to a site the user never
      // granted — tested in headless Chromium 156: with it, a task tab's navigation and a redirect
      // to the ungranted http://localhost:<port> reached the server and a Content-Disposition
      // download from there was saved; with `declarativeNetRequest` none of them did. The price is
      // Chrome's install warning "Block content on any page"; the rules block only a task's own
      // tab, only while the task runs, and never read, redirect or modify any request.
      'declarativeNetRequest',
    ],
    // No host_permissions, no <all_urls>: sites are requested one by one at run time.
    optional_host_permissions: ['https://*/*', 'http://*/*'],
    content_security_policy: { extension_pages: "script-src 'self'; object-src 'none'" },
  };
}

/** Fixture origins granted at load in the test build (permission prompts cannot be answered headless). */
export const TEST_HOST_PERMISSIONS = ['http://127.0.0.1/*', 'https://127.0.0.1/*'];

async function bundle(outdir: string, testBuild: boolean): Promise<void> {
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  const common = {
    bundle: true,
    target: `chrome${MINIMUM_CHROME_VERSION}`,
    platform: 'browser' as const,
    sourcemap: false,
    legalComments: 'none' as const,
    logLevel: 'warning' as const,
    absWorkingDir: here,
  };
  await build({ ...common, entryPoints: { background: 'src/background.ts', popup: 'src/popup.ts' }, format: 'esm', outdir });
  await build({ ...common, entryPoints: { content: 'src/content.ts' }, format: 'iife', outdir });
  copyFileSync(join(here, 'src/popup.html'), join(outdir, 'popup.html'));
  copyFileSync(join(here, 'src/popup.css'), join(outdir, 'popup.css'));
  const m = manifest();
  if (testBuild) {
    m.name = 'Palisade (test build)';
    m.host_permissions = TEST_HOST_PERMISSIONS;
  }
  writeFileSync(join(outdir, 'manifest.json'), `${JSON.stringify(m, null, 2)}\n`);
  const files = ['manifest.json', 'background.js', 'content.js', 'popup.js', 'popup.html', 'popup.css'];
  const sizes = files.map((f) => `${f} ${(statSync(join(outdir, f)).size / 1024).toFixed(1)} KiB`).join(', ');
  process.stdout.write(`built ${testBuild ? 'test' : 'release'} extension → ${outdir}\n  ${sizes}\n`);
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const all = args.includes('--all');
  if (all || !args.includes('--test')) await bundle(join(here, 'dist'), false);
  if (all || args.includes('--test')) await bundle(join(here, 'dist-test'), true);
}
