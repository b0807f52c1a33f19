import type { Addon, AddonConfig } from './config.ts';

/**
 * Talking back to the platform (Heroku's add-on partner API v3): exchange the provision's
 * OAuth grant for tokens, set the add-on's config vars, and report the provision done.
 * Legacy (v1) resources came without a grant; their config is set with the add-on's own
 * Basic credentials instead.
 */
export interface PlatformTokens {
  access_token: string;
  refresh_token?: string;
}

export interface Delivery {
  callbackUrl: string;
  oauthGrant: { code?: string } | null;
  tokens: PlatformTokens | null;
  config: Record<string, string>;
  /** Also report the asynchronous provision finished (once, after the first config). */
  reportProvisioned: boolean;
}

export class PlatformError extends Error {}

const HEROKU_JSON = 'application/vnd.heroku+json; version=3';
const TIMEOUT_MS = 10_000;

/** A callback URL must point into the configured platform API, never anywhere else. */
export function callbackAllowed(addon: AddonConfig, callbackUrl: string): boolean {
  return callbackUrl.startsWith(`${addon.platformApiUrl}/`);
}

async function call(method: string, url: string, headers: Record<string, string>, body?: string): Promise<Response> {
  try {
    return await fetch(url, { method, headers, body, signal: AbortSignal.timeout(TIMEOUT_MS), redirect: 'error' });
  } catch (err) {
    throw new PlatformError(`${method} ${url} did not answer: ${(err as Error).message}`);
  }
}

async function expectOk(res: Response, what: string): Promise<void> {
  if (res.ok) return;
  const text = (await res.text().catch(() => '')).slice(0, 300);
  throw new PlatformError(`${what} answered ${res.status}${text ? `: ${text}` : ''}`);
}

async function tokenRequest(addon: AddonConfig, form: Record<string, string>): Promise<PlatformTokens> {
  if (!addon.clientSecret)
    throw new PlatformError("set ADDON_CLIENT_SECRET (the manifest's oauth client secret) to exchange the provision's OAuth grant");
  const res = await call(
    'POST',
    `${addon.platformIdUrl}/oauth/token`,
    { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    new URLSearchParams({ ...form, client_secret: addon.clientSecret }).toString(),
  );
  await expectOk(res, 'the OAuth token exchange');
  const tokens = (await res.json()) as PlatformTokens;
  if (typeof tokens.access_token !== 'string') throw new PlatformError('the OAuth token exchange answered without an access_token');
  return tokens;
}

/**
 * Hand the platform the config. A grant can be exchanged only once, so new tokens go to
 * `keepTokens` the moment they arrive, before anything else can fail.
 */
export async function deliver(addon: Addon, delivery: Delivery, keepTokens: (tokens: PlatformTokens) => Promise<void>): Promise<void> {
  if (!callbackAllowed(addon, delivery.callbackUrl)) {
    throw new PlatformError(`callback_url ${delivery.callbackUrl} is not under HEROKU_API_URL ${addon.platformApiUrl}`);
  }
  if (!delivery.oauthGrant) {
    const basic = Buffer.from(`${addon.id}:${addon.password}`).toString('base64');
    const res = await call(
      'PUT',
      delivery.callbackUrl,
      { authorization: `Basic ${basic}`, 'content-type': 'application/json' },
      JSON.stringify({ config: delivery.config }),
    );
    await expectOk(res, 'the legacy config update');
    return;
  }
  let tokens = delivery.tokens;
  if (!tokens) {
    if (!delivery.oauthGrant.code) throw new PlatformError("the provision request's oauth_grant has no code");
    tokens = await tokenRequest(addon, { grant_type: 'authorization_code', code: delivery.oauthGrant.code });
    await keepTokens(tokens);
  }
  const body = JSON.stringify({ config: Object.entries(delivery.config).map(([name, value]) => ({ name, value })) });
  const patch = (t: PlatformTokens) =>
    call(
      'PATCH',
      `${delivery.callbackUrl}/config`,
      { authorization: `Bearer ${t.access_token}`, accept: HEROKU_JSON, 'content-type': 'application/json' },
      body,
    );
  let res = await patch(tokens);
  // Access tokens expire after hours; a refresh token gets a new one.
  if (res.status === 401 && tokens.refresh_token) {
    tokens = {
      refresh_token: tokens.refresh_token,
      ...(await tokenRequest(addon, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token })),
    };
    await keepTokens(tokens);
    res = await patch(tokens);
  }
  await expectOk(res, 'the config update');
  if (delivery.reportProvisioned) {
    const done = await call('POST', `${delivery.callbackUrl}/actions/provision`, {
      authorization: `Bearer ${tokens.access_token}`,
      accept: HEROKU_JSON,
    });
    await expectOk(done, 'the provision action');
  }
}
