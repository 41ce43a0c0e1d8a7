/**
 * Password guessing over real HTTP, on the embedded hot state and on Redis: parallel guesses never
 * get more password checks than the limit (on one node or two sharing Redis), a correct guess is
 * refused while locked, the delay grows past the free failures, neither the pages nor their timing
 * tell whether an account exists, successes do not count against an IP, and locks expire.
 */
import { after, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { fetch as ufetch, type Dispatcher } from 'undici';
import { ADMIN, createAdmin, openSignIn, startTestServer, type TestServer } from '../support/harness.ts';
import { REDIS_URL, dropPrefix, redisSkip, testPrefix } from '../support/redis.ts';
import { DEFAULTS, type LoginLimits } from '../../src/config.ts';
import type { CreateOptions } from '../../src/app.ts';
import { passwordHashGate } from '../../src/auth/passwords.ts';

const WRONG = 'not the password at all';
const NOBODY = 'no-such-user';
/** Every test request comes from this address (req.ip). */
const IP_LIMIT_OFF = 100_000;

interface Answer {
  status: number;
  retryAfter: string | null;
  location: string | null;
  headerNames: string[];
  body: string;
  /** From sending the form to the end of the answer's body. */
  ms: number;
}

/** One sign-in form of one interaction; `guess` posts it (as often as wanted). */
interface SignInForm {
  uid: string;
  /** The form's anti-forgery token (hidden field). */
  token: string;
  guess(username: string, password: string): Promise<Answer>;
}

/** The `cookie` request header from an undici dispatch's headers, whatever their shape. */
function cookieOf(headers: unknown): string | undefined {
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) if (String(headers[i]).toLowerCase() === 'cookie') return String(headers[i + 1]);
  } else if (headers && typeof headers === 'object') {
    const pairs = Symbol.iterator in headers ? [...(headers as Iterable<[string, string]>)] : Object.entries(headers);
    for (const [k, v] of pairs) if (k.toLowerCase() === 'cookie') return String(v);
  }
  return undefined;
}

/**
 * Starts a device grant and opens its sign-in form through the harness browser. The browser does
 * not show response headers (Retry-After), so its cookies are read off the wire and the form is
 * then posted here directly.
 */
async function signInForm(t: TestServer): Promise<SignInForm> {
  const start = await t.fetch('/oauth2/device/auth', { method: 'POST', body: new URLSearchParams({ client_id: 'palisade-cli', scope: 'openid' }) });
  assert.equal(start.status, 200);
  const device = (await start.json()) as { verification_uri_complete: string };
  let cookie = '';
  const dispatcher = t.dispatcher.compose((dispatch) => (opts, handler) => {
    cookie = cookieOf(opts.headers) ?? cookie;
    return dispatch(opts, handler);
  });
  const { login } = await openSignIn({ ...t, dispatcher }, device.verification_uri_complete);
  const uid = /^\/interaction\/([^/]+)\/login$/.exec(login.action)?.[1];
  assert.ok(uid && cookie.length > 0, `a sign-in form with its cookies (${login.action})`);
  const url = new URL(login.action, t.url);
  return {
    uid,
    token: login.fields.csrf ?? '',
    async guess(username, password) {
      const started = performance.now();
      const res = (await ufetch(url, {
        method: 'POST',
        headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...login.fields, username, password }).toString(),
        dispatcher: t.dispatcher as Dispatcher,
        redirect: 'manual',
      })) as unknown as Response;
      const body = await res.text();
      return {
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        location: res.headers.get('location'),
        headerNames: [...res.headers.keys()].filter((h) => h !== 'date').sort(),
        body,
        ms: performance.now() - started,
      };
    },
  };
}

const signInForms = (t: TestServer, n: number) => Promise.all(Array.from({ length: n }, () => signInForm(t)));

/** The sign-in was accepted: the interaction moves on (to consent). */
function assertSignedIn(a: Answer, what: string): void {
  assert.ok(a.status === 303 || a.status === 302, `${what}: expected a redirect, got ${a.status}: ${a.body.slice(0, 300)}`);
  assert.ok(a.location && a.location.length > 0, `${what}: redirected somewhere`);
}
// A refused sign-in re-renders the form with 200 (a browser window of chrome.identity's
// launchWebAuthFlow closes on any error status, before the person could read why); the outcome is
// in the page, and a lock also carries Retry-After.
const isWrong = (a: Answer) => a.status === 200 && a.body.includes('Wrong username or password.');
const isLocked = (a: Answer) => a.status === 200 && a.body.includes('Too many failed sign-ins.') && a.retryAfter !== null;
const outcomes = (list: Answer[]) => list.map((a) => (isWrong(a) ? 'wrong' : isLocked(a) ? 'locked' : a.status)).join(',');
function assertWrong(a: Answer, what: string): void {
  assert.ok(isWrong(a), `${what}: ${a.status} ${a.body.slice(0, 300)}`);
  assert.equal(a.retryAfter, null, `${what}: no Retry-After on a wrong password`);
}
function assertLocked(a: Answer, what: string, windowMs: number): void {
  assert.ok(isLocked(a), `${what}: ${a.status} ${a.body.slice(0, 300)}`);
  assert.match(a.retryAfter ?? '', /^[1-9]\d*$/, `${what}: Retry-After in whole seconds`);
  assert.ok(Number(a.retryAfter) <= Math.ceil(windowMs / 1000), `${what}: Retry-After ${a.retryAfter} is within the window`);
}

/** The page without what names its interaction (its id and its form's anti-forgery token). */
const normalise = (body: string, form: SignInForm) => body.split(form.uid).join('UID').split(form.token).join('TOKEN');

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const limitsOf = (over: Partial<LoginLimits>): LoginLimits => ({ ...DEFAULTS.loginLimits, delayMs: 20, maxDelayMs: 80, ...over });

function bruteForceSuite(name: string, hot: () => CreateOptions, skip: false | string = false): void {
  describe(`password guessing (${name})`, { skip }, () => {
    /** A fresh node with the admin account, closed after the test. */
    async function node(ctx: TestContext, limits: Partial<LoginLimits>, shared: CreateOptions = hot()): Promise<TestServer> {
      const t = await startTestServer({ ...shared, loginLimits: limitsOf(limits) });
      ctx.after(() => t.close());
      await createAdmin(t);
      return t;
    }
    const events = (t: TestServer, activity: string, code?: string) => t.securityEvents.filter((e) => e.activity_name === activity && (code === undefined || e.status_code === code));

    it('30 parallel guesses get exactly perAccount password checks; then even the right password is refused', async (ctx) => {
      const t = await node(ctx, { perAccount: 5, perIp: IP_LIMIT_OFF });
      const forms = await signInForms(t, 31);
      const answers = await Promise.all(forms.slice(0, 30).map((f) => f.guess(ADMIN.username, WRONG)));
      const wrong = answers.filter(isWrong);
      const locked = answers.filter(isLocked);
      assert.equal(wrong.length, 5, `outcomes: ${outcomes(answers)}`);
      assert.equal(locked.length, 25);
      for (const a of wrong) assertWrong(a, 'a checked guess');
      for (const a of locked) assertLocked(a, 'a guess past the limit', DEFAULTS.loginLimits.windowMs);
      assert.ok(Number(locked[0]!.retryAfter) > 60, 'locked for the rest of the 15-minute window');

      assertLocked(await forms[30]!.guess(ADMIN.username, ADMIN.password), 'the right password while locked', DEFAULTS.loginLimits.windowMs);

      assert.equal(events(t, 'password.login', 'PAL_ERR_UNAUTHENTICATED').length, 5, 'one failure event per checked guess');
      assert.equal(events(t, 'password.login', 'PAL_ERR_RATE_LIMITED').length, 26, 'one failure event per refused attempt');
      assert.equal(events(t, 'password.login').filter((e) => e.status === 'Success').length, 0);
      const locks = events(t, 'password.lock');
      assert.equal(locks.length, 1, 'exactly one lock event');
      assert.equal(locks[0]!.severity, 'high');
      assert.equal(locks[0]!.src_endpoint.ip, '127.0.0.1');
    });

    it('parallel guesses at one IP get exactly perIp password checks, across accounts', async (ctx) => {
      const t = await node(ctx, { perAccount: IP_LIMIT_OFF, perIp: 4 });
      const forms = await signInForms(t, 20);
      const answers = await Promise.all(forms.map((f, i) => f.guess(i % 2 ? `${NOBODY}-${i}` : ADMIN.username, WRONG)));
      assert.equal(answers.filter(isWrong).length, 4, `outcomes: ${outcomes(answers)}`);
      for (const a of answers.filter((x) => !isWrong(x))) assertLocked(a, 'a guess past the IP limit', DEFAULTS.loginLimits.windowMs);
      assert.equal(events(t, 'password.lock').length, 1);
    });

    it('the delay grows with each failure past the free ones', async (ctx) => {
      const delayMs = 500; // well above the argon2 check's own jitter on a busy 2-core machine
      const t = await node(ctx, { perAccount: 10, perIp: IP_LIMIT_OFF, freeFailures: 2, delayMs, maxDelayMs: 2000 });
      const form = await signInForm(t);
      const ms: number[] = [];
      for (let i = 0; i < 5; i++) {
        const a = await form.guess(ADMIN.username, WRONG);
        assertWrong(a, `guess ${i + 1}`);
        ms.push(a.ms);
      }
      // Guesses 1–3 cost no delay; the 4th waits delayMs, the 5th twice that. Absolute lower bounds
      // (a sleep is never shorter); not differences from the free guesses, which load on the machine
      // slows by as much as the delay (a run had 170–217 ms free guesses, then 541 and 1037 ms).
      const took = ms.map((x) => Math.round(x)).join(', ');
      assert.ok(Math.min(...ms.slice(0, 3)) < delayMs, `a free guess waits no delay (took ${took} ms)`);
      assert.ok(ms[3]! >= delayMs, `4th guess waits ≥ ${delayMs} ms (took ${took} ms)`);
      assert.ok(ms[4]! >= 2 * delayMs, `5th guess waits ≥ ${2 * delayMs} ms: the delay doubles (took ${took} ms)`);
    });

    it('the pages do not tell whether an account exists: wrong password, unknown user, and lock', async (ctx) => {
      const windowMs = DEFAULTS.loginLimits.windowMs;
      const t = await node(ctx, { perAccount: 3, perIp: IP_LIMIT_OFF });
      const [known, unknown] = await signInForms(t, 2);
      for (let i = 0; i < 3; i++) {
        const a = await known!.guess(ADMIN.username, WRONG);
        // Any password for an account that does not exist: even the admin's.
        const b = await unknown!.guess(NOBODY, i === 0 ? ADMIN.password : WRONG);
        assertWrong(a, `known account, guess ${i + 1}`);
        assert.equal(b.status, a.status, `same status, guess ${i + 1}`);
        assert.deepEqual(b.headerNames, a.headerNames, `same headers, guess ${i + 1}`);
        assert.equal(normalise(b.body, unknown!), normalise(a.body, known!), `same page, guess ${i + 1}`);
      }
      const a = await known!.guess(ADMIN.username, ADMIN.password);
      const b = await unknown!.guess(NOBODY, WRONG);
      assertLocked(a, 'known account locked', windowMs);
      assertLocked(b, 'unknown account locked', windowMs);
      assert.deepEqual(b.headerNames, a.headerNames);
      assert.equal(normalise(b.body, unknown!), normalise(a.body, known!), 'same lock page');
      assert.equal(events(t, 'password.lock').length, 2, 'both accounts locked: unknown names are counted too');
    });

    it('answers as slowly for an account that does not exist as for a wrong password', async (ctx) => {
      const t = await node(ctx, { perAccount: IP_LIMIT_OFF, perIp: IP_LIMIT_OFF, freeFailures: IP_LIMIT_OFF, delayMs: 0, maxDelayMs: 0 });
      const [known, unknown] = await signInForms(t, 2);
      const N = 40;
      const times = { known: [] as number[], unknown: [] as number[] };
      // Pairs, alternating which goes first, after a warm-up (the first unknown name also makes the
      // dummy hash). The machine's load drifts; within a pair it is nearly the same for both.
      for (let i = -3; i < N; i++) {
        const order = i % 2 ? (['known', 'unknown'] as const) : (['unknown', 'known'] as const);
        for (const kind of order) {
          const a = kind === 'known' ? await known!.guess(ADMIN.username, WRONG) : await unknown!.guess(`${NOBODY}-${i}`, WRONG);
          assertWrong(a, kind);
          if (i >= 0) times[kind].push(a.ms);
        }
      }
      const k = median(times.known);
      const u = median(times.unknown);
      const paired = median(times.unknown.map((x, i) => x / times.known[i]!));
      const say = `medians: wrong password ${k.toFixed(1)} ms, unknown account ${u.toFixed(1)} ms, ratio ${(u / k).toFixed(2)}; median of paired ratios ${paired.toFixed(2)}`;
      ctx.diagnostic(say);
      assert.ok(k > 5, `a wrong password costs an argon2id check (${say})`);
      // Without the dummy check an unknown name answers in a few ms (a ratio near 0.1); a dummy
      // check at half the cost would give 0.5. Seen on a loaded 2-core VM: 0.89–1.24.
      assert.ok(paired >= 0.7 && paired <= 1 / 0.7, say);
    });

    it('successful sign-ins do not count against the IP; failures still do', async (ctx) => {
      const t = await node(ctx, { perAccount: IP_LIMIT_OFF, perIp: 3 });
      const forms = await signInForms(t, 12);
      for (let i = 0; i < 8; i++) assertSignedIn(await forms[i]!.guess(ADMIN.username, ADMIN.password), `sign-in ${i + 1}`);
      assert.equal(events(t, 'password.login').filter((e) => e.status === 'Success').length, 8);
      const probe = forms[8]!;
      for (let i = 0; i < 3; i++) assertWrong(await probe.guess(`${NOBODY}-${i}`, WRONG), `failure ${i + 1} after the successes`);
      assertLocked(await probe.guess(ADMIN.username, ADMIN.password), 'the IP after 3 failures', DEFAULTS.loginLimits.windowMs);
      assert.equal(events(t, 'password.lock').length, 1);
    });

    it('too many passwords being checked at once: the sign-in is answered "busy" (with Retry-After) and not counted', async (ctx) => {
      const t = await node(ctx, { perAccount: IP_LIMIT_OFF, perIp: 2 }, { ...hot(), passwordHashConcurrency: 1, passwordHashQueue: 0 });
      const forms = await signInForms(t, 3);
      // The one slot held (as by another sign-in's hash), none may wait: the right password is not checked.
      let free!: () => void;
      const held = passwordHashGate().run(() => new Promise<void>((resolve) => (free = resolve)));
      const busy = await forms[0]!.guess(ADMIN.username, ADMIN.password);
      free();
      await held;
      assert.equal(busy.status, 200);
      assert.ok(busy.body.includes('The server is busy checking other sign-ins.'), busy.body.slice(0, 300));
      assert.equal(busy.retryAfter, '1');
      assert.equal(events(t, 'password.login', 'PAL_ERR_UNAVAILABLE').length, 1);
      // Not counted: the address still has both of its failures (perIp 2); had the busy answer
      // counted, the second would be refused as locked.
      assertWrong(await forms[1]!.guess(`${NOBODY}-a`, WRONG), 'failure 1 after the busy answer');
      assertWrong(await forms[2]!.guess(`${NOBODY}-b`, WRONG), 'failure 2 after the busy answer');
      assertLocked(await forms[2]!.guess(ADMIN.username, ADMIN.password), 'the IP after 2 failures', DEFAULTS.loginLimits.windowMs);
    });

    it('a lock ends with its window', async (ctx) => {
      const windowMs = 1500;
      const t = await node(ctx, { perAccount: 3, perIp: IP_LIMIT_OFF, windowMs });
      const [form, later] = await signInForms(t, 2);
      let windowStarted = 0;
      for (let i = 0; i < 3; i++) {
        assertWrong(await form!.guess(ADMIN.username, WRONG), `guess ${i + 1}`);
        // The window opened during the first guess, so before it was answered.
        if (i === 0) windowStarted = Date.now();
      }
      const locked = await form!.guess(ADMIN.username, ADMIN.password);
      assertLocked(locked, 'right after the lock', windowMs);
      assert.ok(Number(locked.retryAfter) <= 2, `Retry-After ${locked.retryAfter} s`);
      await sleep(Math.max(0, windowStarted + windowMs + 100 - Date.now()));
      assertWrong(await form!.guess(ADMIN.username, WRONG), 'a wrong guess after the window');
      assertSignedIn(await later!.guess(ADMIN.username, ADMIN.password), 'the right password after the window');
    });

    if (name === 'Redis') {
      it('two nodes sharing Redis share the counters: alternating parallel guesses get perAccount checks in all', async (ctx) => {
        const shared = hot();
        const a = await node(ctx, { perAccount: 5, perIp: IP_LIMIT_OFF }, shared);
        const b = await node(ctx, { perAccount: 5, perIp: IP_LIMIT_OFF }, shared);
        const [onA, onB] = await Promise.all([signInForms(a, 15), signInForms(b, 15)]);
        const forms = onA.flatMap((f, i) => [f, onB[i]!]);
        const answers = await Promise.all(forms.map((f) => f.guess(ADMIN.username, WRONG)));
        const on = (t: TestServer) => answers.filter((_, i) => (i % 2 === 0 ? a : b) === t);
        const wrong = answers.filter(isWrong).length;
        assert.equal(wrong, 5, `A: ${outcomes(on(a))}; B: ${outcomes(on(b))}`);
        for (const x of answers.filter((y) => !isWrong(y))) assertLocked(x, 'past the shared limit', DEFAULTS.loginLimits.windowMs);
        assert.equal(events(a, 'password.lock').length + events(b, 'password.lock').length, 1, 'one lock across both nodes');
        assertLocked(await (await signInForm(a)).guess(ADMIN.username, ADMIN.password), 'the right password on A', DEFAULTS.loginLimits.windowMs);
        assertLocked(await (await signInForm(b)).guess(ADMIN.username, ADMIN.password), 'the right password on B', DEFAULTS.loginLimits.windowMs);
      });
    }
  });
}

bruteForceSuite('embedded', () => ({}));

const redisSkipped = await redisSkip('password-guessing tests on Redis');
const prefixes: string[] = [];
if (!redisSkipped) after(() => Promise.all(prefixes.map((p) => dropPrefix(p))));
/** Each node gets a fresh prefix (fresh counters) unless a test shares one between nodes. */
bruteForceSuite('Redis', () => {
  const redisPrefix = testPrefix();
  prefixes.push(redisPrefix);
  return { redisUrl: REDIS_URL, redisPrefix };
}, redisSkipped);
