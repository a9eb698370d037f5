// A local OpenID provider for kube-iap's demo and tests: panva's oidc-provider with one static
// client, a fresh RSA key per start, and the built-in login page (any login and password work).
//
//   node idp/server.mjs [--port 9000] [--host 127.0.0.1] [--client-id ID] [--client-secret S]
//                       [--redirect-uri URI]... [--post-logout-redirect-uri URI]...
//                       [--id-token-ttl SECONDS] [--groups LOGIN=g1,g2]...
//                       [--redirect-uri-pattern REGEX]
//
// On start it prints one JSON line `{"issuer": "..."}` on stdout, which tests wait for.
// The account is the login typed on the form: `email` is the login (or login@example.com when it
// holds no @), `email_verified` is true, and `groups` come from --groups.
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const options = {
  port: '9000', host: '127.0.0.1', 'client-id': 'kube-iap-demo', 'client-secret': 'demo-secret',
  'id-token-ttl': '3600', 'redirect-uri-pattern': '', 'redirect-uri': [], 'post-logout-redirect-uri': [], groups: [],
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  const value = argv[i + 1];
  if (!(name in options) || value === undefined) {
    console.error(`unknown or incomplete option ${argv[i]}`);
    process.exit(2);
  }
  if (Array.isArray(options[name])) options[name].push(value); else options[name] = value;
}
if (options['redirect-uri'].length === 0) {
  options['redirect-uri'].push('http://private.localhost:8080/_iap/callback',
    'http://hello.localhost:8080/_iap/callback');
}
const groupsByLogin = Object.fromEntries(options.groups.map((entry) => {
  const [login, list] = entry.split('=');
  return [login, list ? list.split(',') : []];
}));

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'local-1' };

function account(login) {
  const email = login.includes('@') ? login : `${login}@example.com`;
  return {
    accountId: login,
    async claims() {
      return { sub: login, email, email_verified: true, name: login, groups: groupsByLogin[login] ?? [] };
    },
  };
}

// Listen first, then build the provider: with --port 0 the issuer must name the port the
// kernel chose, and the provider needs its issuer when it is created.
const server = createServer();
server.listen(Number(options.port), options.host, () => {
  const port = server.address().port;
  const issuer = `http://${options.host}:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: options['client-id'],
      client_secret: options['client-secret'],
      redirect_uris: options['redirect-uri'],
      post_logout_redirect_uris: options['post-logout-redirect-uri'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: ['kube-iap-local-idp-cookie-key'] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    ttl: { IdToken: Number(options['id-token-ttl']) },
    findAccount: (_ctx, id) => account(id),
    // Consent is granted up front so a sign-in is one login form, as at an organisation's IdP.
    // The session's existing grant is reused, so a second tab's sign-in does not replace it (and
    // with it the first tab's authorization code).
    async loadExistingGrant(ctx) {
      const existing = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (existing) {
        const found = await ctx.oidc.provider.Grant.find(existing);
        if (found) return found;
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email profile groups');
      grant.addOIDCClaims(['email', 'email_verified', 'name', 'groups']);
      await grant.save();
      return grant;
    },
  });
  if (options['redirect-uri-pattern']) {
    // Tests start kube-iap on ports chosen by the kernel, so its redirect URIs are only known by
    // shape; production providers register exact URIs.
    const pattern = new RegExp(options['redirect-uri-pattern']);
    const exact = provider.Client.prototype.redirectUriAllowed;
    provider.Client.prototype.redirectUriAllowed = function allowed(uri) {
      return pattern.test(uri) || exact.call(this, uri);
    };
  }
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});

process.on('SIGTERM', () => process.exit(0));
