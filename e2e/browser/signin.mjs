// Browser sign-in through kube-iap, driven in Debian's Chromium by playwright-core.
//
// Started by tests/browser.rs, which runs kube-iap, the local OpenID provider and a backend and
// passes their addresses in the environment:
//   APP_URL        e.g. http://app.localhost:PORT (Chromium resolves *.localhost to loopback)
//   ISSUER         the provider's issuer URL
//   EXPIRED_COOKIE NAME=VALUE of a session cookie for the app host that has already expired
// Prints one line per step; exits non-zero with the reason when a step fails.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const APP = process.env.APP_URL;
const ISSUER = process.env.ISSUER;
const [EXPIRED_NAME, EXPIRED_VALUE] = process.env.EXPIRED_COOKIE.split(/=(.*)/s);
const TIMEOUT = 15000;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function signInAtProvider(page, login) {
  await page.waitForURL((url) => url.href.startsWith(ISSUER), { timeout: TIMEOUT });
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
}

async function appFetch(page, path, credentials) {
  return page.evaluate(async ([url, mode]) => {
    const response = await fetch(url, { credentials: mode });
    return response.status;
  }, [`${APP}${path}`, credentials]);
}

async function sessionCookie(context) {
  const cookies = await context.cookies(APP);
  return cookies.find((cookie) => cookie.name.startsWith('KUBE_IAP_AUTH_TOKEN_'));
}

const profile = mkdtempSync(join(tmpdir(), 'kube-iap-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
context.setDefaultTimeout(TIMEOUT);
try {
  // 1. A deep link signs in and lands exactly where it pointed, query intact, no '#'.
  const page = await context.newPage();
  const deepLink = `${APP}/deep/link?x=1&y=two%20words`;
  await page.goto(deepLink);
  await signInAtProvider(page, 'alice@example.com');
  await page.waitForURL(deepLink, { timeout: TIMEOUT });
  check(page.url() === deepLink, `landed on ${page.url()}, not ${deepLink}`);
  const seen = JSON.parse(await page.innerText('body'));
  check(seen.path === '/deep/link' && seen.query === 'x=1&y=two%20words', `backend saw ${JSON.stringify(seen)}`);
  check(seen.headers['x-kube-iap-authenticated-user-email'] === 'alice@example.com', 'identity header missing');
  const cookie = await sessionCookie(context);
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Lax', `session cookie ${JSON.stringify(cookie)}`);
  console.log('deep link: signed in and landed on', page.url());

  // 2. Page script: fetch without credentials gets 401, with credentials 'include' 200.
  const omitted = await appFetch(page, '/api/data', 'omit');
  const included = await appFetch(page, '/api/data', 'include');
  check(omitted === 401, `fetch without credentials answered ${omitted}`);
  check(included === 200, `fetch with credentials answered ${included}`);
  console.log('fetch: omit ->', omitted, ', include ->', included);

  // 3. An expired session: the next navigation goes back through the provider, which still
  //    has its own session, so the user lands on the page again without a form.
  await context.addCookies([{ name: cookie.name, value: EXPIRED_VALUE, url: APP, httpOnly: true, sameSite: 'Lax' }]);
  check(EXPIRED_NAME === cookie.name, `expected to replace ${cookie.name}, test gave ${EXPIRED_NAME}`);
  check(await appFetch(page, '/api/data', 'include') === 401, 'an expired session still worked for a script');
  await page.goto(`${APP}/after-expiry`);
  await page.waitForURL(`${APP}/after-expiry`, { timeout: TIMEOUT });
  const renewed = await sessionCookie(context);
  check(renewed && renewed.value !== EXPIRED_VALUE, 'no fresh session after re-authentication');
  console.log('expiry: re-authenticated silently and landed on', page.url());

  // 4. Sign out: every proxy cookie goes, then the provider's own sign-out page.
  await page.goto(`${APP}/_iap/clear_login_cookie`);
  await page.waitForURL((url) => url.href.startsWith(`${ISSUER}/session/end`), { timeout: TIMEOUT });
  check(!(await sessionCookie(context)), 'the session cookie survived sign-out');
  await page.click('button[type=submit]'); // the provider asks to confirm; yes
  await page.waitForLoadState('load');
  await page.goto(`${APP}/`);
  await page.waitForURL((url) => url.href.startsWith(ISSUER), { timeout: TIMEOUT });
  check(await page.isVisible('input[name=login]'), 'after sign-out the provider should ask for a login again');
  console.log('sign-out: proxy cookies cleared and the provider asks for a login again');

  // 5. Two tabs sign in at once: each lands on its own page.
  const one = await context.newPage();
  const two = await context.newPage();
  await one.goto(`${APP}/tab/one`);
  await two.goto(`${APP}/tab/two?second=1`);
  await signInAtProvider(two, 'alice@example.com');
  await two.waitForURL(`${APP}/tab/two?second=1`, { timeout: TIMEOUT });
  await signInAtProvider(one, 'alice@example.com');
  await one.waitForURL(`${APP}/tab/one`, { timeout: TIMEOUT });
  console.log('two tabs: landed on', two.url(), 'and', one.url());
  console.log('browser sign-in: all steps passed');
} catch (error) {
  console.error(`browser sign-in failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
