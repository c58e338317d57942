// A real OpenID provider for tests: oidc-provider (node-oidc-provider 9.x) on loopback.
//
// Usage: node oidc_provider.mjs [--port 0] --client-id ID --client-secret S --redirect-uri URI...
//          [--post-logout-redirect-uri URI]... [--id-token-alg RS256|ES256|PS256|EdDSA]
//          [--auth-method client_secret_basic|client_secret_post] [--claims-in-userinfo-only]
// Each option may also come from the environment (OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET,
// OIDC_REDIRECT_URIS and OIDC_POST_LOGOUT_REDIRECT_URIS space-separated, OIDC_ID_TOKEN_ALG, OIDC_AUTH_METHOD).
//
// Prints the issuer URL (http://127.0.0.1:PORT) as its first stdout line once it accepts connections; exits
// on SIGTERM/SIGINT or when stdin closes (so it cannot outlive a killed test run).
//
// Sign-in uses oidc-provider's built-in "devInteractions" pages: a login form (any password is accepted for
// the accounts below) and a consent form. Plain http on 127.0.0.1 is accepted by oidc-provider as an issuer;
// cookies are only marked Secure when the request is https, so the flow works over http without a proxy.
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    'post-logout-redirect-uri': { type: 'string', multiple: true },
    'id-token-alg': { type: 'string' },
    'auth-method': { type: 'string' },
    'claims-in-userinfo-only': { type: 'boolean' },
    acr: { type: 'string' },
  },
});

const env = process.env;
const words = (text) => (text ? text.split(/\s+/).filter(Boolean) : []);
const port = Number(args.port ?? env.OIDC_PORT ?? 0);
const clientId = args['client-id'] ?? env.OIDC_CLIENT_ID ?? 'novnc-gateway';
const clientSecret = args['client-secret'] ?? env.OIDC_CLIENT_SECRET;
const redirectUris = args['redirect-uri'] ?? words(env.OIDC_REDIRECT_URIS);
const postLogoutRedirectUris = args['post-logout-redirect-uri'] ?? words(env.OIDC_POST_LOGOUT_REDIRECT_URIS);
const idTokenAlg = args['id-token-alg'] ?? env.OIDC_ID_TOKEN_ALG ?? 'RS256';
const authMethod = args['auth-method'] ?? env.OIDC_AUTH_METHOD ?? 'client_secret_basic';
const claimsInUserinfoOnly = Boolean(args['claims-in-userinfo-only'] || env.OIDC_CLAIMS_IN_USERINFO_ONLY === '1');
// The authentication class every sign-in gets (the ID token's acr), as an MFA-capable provider would say.
const acr = args.acr ?? env.OIDC_ACR;

if (!clientSecret || redirectUris.length === 0) {
  console.error('oidc_provider.mjs: --client-secret and at least one --redirect-uri are required');
  process.exit(2);
}

// Fresh signing keys per run, one per supported algorithm family.
function signingKey(alg) {
  const [type, options] = {
    RS256: ['rsa', { modulusLength: 2048 }],
    PS256: ['rsa', { modulusLength: 2048 }],
    ES256: ['ec', { namedCurve: 'P-256' }],
    EdDSA: ['ed25519', {}],
  }[alg];
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${alg.toLowerCase()}-${randomUUID()}`, alg, use: 'sig' };
}
const algs = [...new Set(['RS256', idTokenAlg])];

// The directory: nested claims (org.roles) and both list and string forms of groups.
const ACCOUNTS = {
  alice: {
    preferred_username: 'alice',
    name: 'Alice Example',
    email: 'alice@example.test',
    email_verified: true,
    groups: ['console-users', 'ops'],
    org: { roles: ['vm-admin', 'viewer'] },
  },
  bob: {
    preferred_username: 'bob',
    name: 'Bob Example',
    email: 'bob@example.test',
    email_verified: true,
    groups: 'viewers, auditors',
    org: { roles: [] },
  },
  // No groups at all, and an address the provider has not verified.
  carol: {
    preferred_username: 'carol',
    email: 'carol@example.test',
    email_verified: false,
  },
};

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    post_logout_redirect_uris: postLogoutRedirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: authMethod,
    id_token_signed_response_alg: idTokenAlg,
  }],
  jwks: { keys: algs.map(signingKey) },
  acrValues: acr ? [acr] : [],
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  // Standard OIDC keeps scope claims out of ID tokens issued from the token endpoint ("conform"); most
  // enterprise providers put them in. Both shapes are testable.
  conformIdTokenClaims: claimsInUserinfoOnly,
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups', 'org'],
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  async findAccount(_ctx, sub) {
    const claims = ACCOUNTS[sub];
    if (!claims) return undefined;
    return { accountId: sub, async claims() { return { sub, ...claims }; } };
  },
};

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
const provider = new Provider(issuer, configuration);
// One stderr line per request, the path without its query (which carries codes): tests count fetches.
server.on('request', (req) => process.stderr.write(`request ${req.method} ${req.url.split('?')[0]}\n`));
server.on('request', provider.callback());
if (acr) {
  // devInteractions finish a login with the account only; stamp the class on it.
  const finish = provider.interactionFinished.bind(provider);
  provider.interactionFinished = (req, res, result, options) => {
    if (result && result.login) result.login.acr = acr;
    return finish(req, res, result, options);
  };
}

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();

process.stdout.write(`${issuer}\n`);
