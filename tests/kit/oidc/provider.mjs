// A real OpenID provider for the admin sign-in test: the npm package oidc-provider
// (installed by .ci/run into target/oidc), on 127.0.0.1 only, with its development
// log-in and consent pages (any password; the log-in name picks the account).
// Usage: node provider.mjs PORT REDIRECT_URI   (OIDC_PROVIDER_DIR: where node_modules is)
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const dir = process.env.OIDC_PROVIDER_DIR;
const entry = path.join(dir, 'node_modules', 'oidc-provider', 'lib', 'index.js');
const { default: Provider } = await import(pathToFileURL(entry).href);
const port = Number(process.argv[2]);
const redirect = process.argv[3];

const accounts = {
  head: { sub: 'head', email: 'head@school.test', email_verified: true, name: 'Hana Head', groups: ['safeguarding'] },
  pat: { sub: 'pat', email: 'pat@school.test', email_verified: true, name: 'Pat Pupil', groups: ['year6'] },
};

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'safegate',
    client_secret: 'safegate-test-secret',
    redirect_uris: [redirect],
    application_type: 'native',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true, methods: ['S256'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  conformIdTokenClaims: false,
  findAccount: async (ctx, id) => accounts[id] && { accountId: id, claims: async () => accounts[id] },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['safegate-test-cookie-key'] },
});
provider.listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
