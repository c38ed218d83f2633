// A real OpenID Provider (the npm package `oidc-provider`) on loopback, for Lumina's OIDC tests and
// for trying OIDC sign-in locally. Not for production: accounts come from the configuration.
//
//   node tools/oidc_provider/server.mjs [config.json]
//
// The configuration is JSON, from the file named on the command line or from $OIDC_PROVIDER_CONFIG:
//
//   {
//     "host": "127.0.0.1", "port": 0,                  // 0: any free port
//     "clients": [{"client_id": "lumina", "client_secret": "...", "redirect_uris": ["http://..."]}],
//     "accounts": [{"sub": "alice", "password": "...", "email": "alice@example.com",
//                   "email_verified": true, "name": "Alice", "amr": ["pwd"]}],
//     "conform_id_token_claims": true                  // true: email only from userinfo (strict OIDC)
//   }
//
// Once listening it prints one JSON line to stdout: {"issuer": "http://127.0.0.1:<port>"}.
//
// Sign-in is a plain HTML form, as at a real IdP: GET /interaction/<uid> shows it, POST
// /interaction/<uid>/login (fields `login`, `password`) signs in and returns to the authorization
// endpoint; consent is granted automatically (a first-party client). A test drives it with an HTTP
// client that keeps cookies.

import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import { Provider } from 'oidc-provider';

const config = JSON.parse(
  process.argv[2] ? readFileSync(process.argv[2], 'utf8') : (process.env.OIDC_PROVIDER_CONFIG ?? '{}'),
);
const host = config.host ?? '127.0.0.1';
const accounts = new Map((config.accounts ?? []).map((a) => [a.sub, a]));

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, clientId, error = '') {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Sign in</title></head><body>
<h1>Sign in to ${escapeHtml(clientId)}</h1>
${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
  <label>Login <input name="login" autocomplete="username" autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <button type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort"><button type="submit">Cancel</button></form>
</body></html>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function passwordMatches(account, password) {
  const a = Buffer.from(String(account?.password ?? ''));
  const b = Buffer.from(String(password ?? ''));
  return account !== undefined && a.length === b.length && crypto.timingSafeEqual(a, b);
}

function buildProvider(issuer) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
  return new Provider(issuer, {
    clients: (config.clients ?? []).map((c) => ({
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...c,
    })),
    jwks: { keys: [signingKey] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], amr: null, acr: null },
    conformIdTokenClaims: config.conform_id_token_claims ?? true,
    features: { devInteractions: { enabled: false } },
    pkce: { required: () => true },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          const claims = { sub };
          for (const name of ['email', 'email_verified', 'name']) {
            if (account[name] !== undefined) claims[name] = account[name];
          }
          return claims;
        },
      };
    },
    // A first-party client: grant what it asks for, so there is no consent screen.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const existing = await ctx.oidc.provider.Grant.find(grantId);
        if (existing) return existing;
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope(String(ctx.oidc.params.scope ?? 'openid'));
      await grant.save();
      return grant;
    },
  });
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'interaction mismatch', 'text/plain');
  if (action === '' && req.method === 'GET') {
    return send(res, 200, loginPage(uid, details.params.client_id));
  }
  if (action === 'abort' && req.method === 'POST') {
    return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'cancelled' },
      { mergeWithLastSubmission: false });
  }
  if (action === 'login' && req.method === 'POST') {
    const form = await readForm(req);
    const account = accounts.get(form.get('login') ?? '');
    if (!passwordMatches(account, form.get('password'))) {
      return send(res, 200, loginPage(uid, details.params.client_id, 'Wrong login or password.'));
    }
    const login = { accountId: account.sub, amr: account.amr ?? ['pwd'] };
    if (account.acr) login.acr = account.acr;
    return provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
  }
  return send(res, 405, 'method not allowed', 'text/plain');
}

const server = http.createServer();
server.listen(config.port ?? 0, host, () => {
  const { port } = server.address();
  const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const provider = buildProvider(issuer);
  const callback = provider.callback();
  server.on('request', (req, res) => {
    const match = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?\/?(?:\?.*)?$/.exec(req.url ?? '');
    if (!match) return callback(req, res);
    interaction(provider, req, res, match[1], match[2] ?? '').catch((err) => {
      send(res, 400, `interaction failed: ${err.name}`, 'text/plain');
    });
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
  // keep-alive connections would hold close() open; do not wait for them
  process.on(signal, () => setTimeout(() => process.exit(0), 500).unref());
}
