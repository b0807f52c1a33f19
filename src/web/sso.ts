import { createHash } from 'node:crypto';
import formbody from '@fastify/formbody';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { hasTag } from '../../machines/policy.ts';
import { resourceMachine } from '../../machines/resource.ts';
import { configVarPrefix } from '../config.ts';
import { transaction } from '../db.ts';
import { listNotifications } from '../incidents/views.ts';
import { getResource, type ResourceView } from '../resources/views.ts';
import { resourceState } from '../resources/rows.ts';
import type { TransitionView } from '../runner/store.ts';
import { escapeHtml, page } from './html.ts';
import { sameSecret } from './auth.ts';
import { HttpError } from './errors.ts';
import type { WebOptions } from './options.ts';
import { checkCsrf, csrfField, Sessions, setCookie, sha256 } from './sessions.ts';
import { renderTlsSection } from './tls.ts';
import { idParams, UUID, type IdParams } from './validation.ts';

/** How long an SSO token's timestamp stays good. */
const SSO_WINDOW_SECONDS = 5 * 60;
/** Heroku's nav-data is base64 JSON; anything else is not kept. */
const NAV_DATA = /^[A-Za-z0-9+/=._-]{1,4096}$/;

function events(transitions: TransitionView[]): string {
  if (transitions.length === 0) return '<p class="muted">Nothing has happened yet.</p>';
  const rows = transitions
    .slice(0, 20)
    .map(
      (t) =>
        `<tr><td>${escapeHtml(new Date(t.at).toISOString().replace('T', ' ').slice(0, 19))} UTC</td>` +
        `<td>${escapeHtml(t.to)}</td><td class="muted">${escapeHtml(t.event)}</td></tr>`,
    )
    .join('');
  return `<table><thead><tr><th>When</th><th>State</th><th>Because of</th></tr></thead><tbody>${rows}</tbody></table>`;
}

/** The page a customer lands on from the platform's dashboard: their database, nobody else's. */
export interface CustomerNotice {
  at: Date;
  subject: string;
  body: string;
}

function notices(list: CustomerNotice[]): string {
  if (list.length === 0) return '<p class="muted">No incidents or maintenance to tell you about.</p>';
  return list
    .map(
      (n) =>
        `<p><b>${escapeHtml(n.subject)}</b> ` +
        `<span class="muted">${escapeHtml(new Date(n.at).toISOString().replace('T', ' ').slice(0, 16))} UTC</span>` +
        `<br>${escapeHtml(n.body)}</p>`,
    )
    .join('');
}

export function renderResourcePage(
  resource: ResourceView & { transitions: TransitionView[] },
  prefix: string,
  notifications: CustomerNotice[],
  csrfInput: string,
  caCertificate: string,
): string {
  const url = resource.config[`${prefix}_URL`];
  const parsed = url ? new URL(url) : undefined;
  const connection = parsed
    ? `<dl>
        <dt>Host</dt><dd>${escapeHtml(parsed.hostname)}</dd>
        <dt>Port</dt><dd>${escapeHtml(parsed.port)}</dd>
        <dt>Database</dt><dd>${escapeHtml(parsed.pathname.slice(1))}</dd>
        <dt>User</dt><dd>${escapeHtml(parsed.username)}</dd>
        <dt>Password</dt><dd><details><summary>show</summary>${escapeHtml(decodeURIComponent(parsed.password))}</details></dd>
        <dt>${escapeHtml(`${prefix}_URL`)}</dt><dd><details><summary>show</summary>${escapeHtml(url)}</details></dd>
      </dl>`
    : '<p class="muted">The connection details appear here as soon as the database is ready.</p>';
  const busy = !hasTag(resourceMachine, resource.state, 'healthy');
  return page(
    `${resource.name ?? 'Database'} · pgfleet`,
    `<main><form method="post" action="/sso/logout" style="float:right">${csrfInput}<button type="submit">Sign out</button></form>` +
      `<h1>${escapeHtml(resource.name ?? resource.id)}</h1>
     <p class="muted">Plan <b>${escapeHtml(resource.plan)}</b> · region ${escapeHtml(resource.region)} · created ` +
      `${escapeHtml(new Date(resource.createdAt).toISOString().slice(0, 10))}</p>
     <section><h2>State</h2><span class="state${busy ? '' : ' ok'}">${escapeHtml(resource.state)}</span>
       ${resource.lastError && busy ? `<p class="muted">Working on: ${escapeHtml(resource.lastError)}</p>` : ''}</section>
     <section><h2>Connection</h2>${connection}</section>
     <section><h2>TLS</h2>${renderTlsSection(caCertificate, `${prefix}_URL`)}</section>
     <section><h2>Notices</h2>${notices(notifications)}</section>
     <section><h2>Recent events</h2>${events(resource.transitions)}</section></main>`,
  );
}

export function renderSsoError(message: string): string {
  return page('pgfleet', `<main><section><h2>Cannot open this database</h2><p>${escapeHtml(message)}</p></section></main>`);
}

/** Heroku's SSO token (SHA-1), legacy and v3. */
export function ssoToken(id: string, salt: string, timestamp: string): string {
  return createHash('sha1').update(`${id}:${salt}:${timestamp}`).digest('hex');
}

/** The token Heroku's SSO documentation recommends since February 2026: bound to the user too. */
export function userScopedToken(id: string, salt: string, timestamp: string, userUuid: string, userEmail: string): string {
  return createHash('sha256').update(`${id}:${salt}:${timestamp}:${userUuid}:${userEmail}`).digest('hex');
}

interface SsoFields {
  id: unknown;
  timestamp: unknown;
  token: unknown;
  scoped?: unknown;
  userUuid?: unknown;
  userEmail?: unknown;
}

const AGAIN = 'open the database again from your platform dashboard';

/**
 * The resource a sign-on is for, and the token that proved it, once checked. Not a route
 * schema: a sign-on is authentication, so whatever is wrong with it is the same 403 that
 * sends the user back to their dashboard, not an answer about fields.
 */
function verify(salt: string, f: SsoFields): { id: string; token: string; timestamp: number } {
  if (typeof f.id !== 'string' || !UUID.test(f.id) || typeof f.timestamp !== 'string' || !/^\d{1,12}$/.test(f.timestamp)) {
    throw new HttpError(403, `single sign-on needs the resource id, a token and a timestamp: ${AGAIN}`);
  }
  const id = f.id.toLowerCase();
  const timestamp = Number(f.timestamp);
  const age = Date.now() / 1000 - timestamp;
  // A minute of clock difference either way is forgiven.
  if (age > SSO_WINDOW_SECONDS || age < -60) throw new HttpError(403, `this sign-on link has expired: ${AGAIN}`);
  const invalid = new HttpError(403, `this sign-on token is not valid: ${AGAIN}`);
  // A user-scoped token, when sent, is the one that must hold.
  if (f.scoped !== undefined) {
    if (typeof f.scoped !== 'string' || typeof f.userUuid !== 'string' || typeof f.userEmail !== 'string') throw invalid;
    if (!sameSecret(f.scoped.toLowerCase(), userScopedToken(id, salt, f.timestamp, f.userUuid, f.userEmail))) throw invalid;
    return { id, token: f.scoped.toLowerCase(), timestamp };
  }
  if (typeof f.token !== 'string' || !sameSecret(f.token.toLowerCase(), ssoToken(id, salt, f.timestamp))) throw invalid;
  return { id, token: f.token.toLowerCase(), timestamp };
}

/**
 * Single sign-on from the platform's dashboard to a page for one database. Each token signs
 * in once; the session it opens is kept on the server and opens that database's page only.
 */
export function ssoRoutes(opts: WebOptions): FastifyPluginAsync {
  const prefix = configVarPrefix(opts.addon.id);
  const sessions = new Sessions(opts.pool, opts.addon.publicUrl);

  async function signIn(req: FastifyRequest, reply: FastifyReply, fields: SsoFields, navData: unknown) {
    const { id, token, timestamp } = verify(opts.addon.ssoSalt, fields);
    const state = await resourceState(opts.pool, id);
    if (state === undefined || hasTag(resourceMachine, state, 'gone'))
      throw new HttpError(404, 'there is no such database: it may have been deprovisioned');
    await transaction(opts.pool, async (client) => {
      const used = await client.query(
        'insert into sso_tokens_used (token_sha256, expires_at) values ($1, to_timestamp($2)) on conflict do nothing',
        [sha256(token), timestamp + SSO_WINDOW_SECONDS],
      );
      if (!used.rowCount) throw new HttpError(403, `this sign-on link has been used already: ${AGAIN}`);
      await client.query('delete from sso_tokens_used where expires_at < now()');
      await sessions.start(req, reply, 'sso', id, client);
    });
    if (typeof navData === 'string' && NAV_DATA.test(navData))
      setCookie(req, reply, opts.addon.publicUrl, 'heroku-nav-data', navData, { path: '/', sameSite: 'lax' });
    return reply.redirect(`/sso/resources/${id}`, 302);
  }

  return async (app: FastifyInstance) => {
    // Only the sign-on form is form-encoded: the add-on API itself takes JSON alone.
    await app.register(formbody, { bodyLimit: 16 * 1024 });

    /** Legacy single sign-on: a GET with the token in the query. */
    app.get('/heroku/resources/:id', async (req, reply) => {
      const q = req.query as Record<string, unknown>;
      return signIn(req, reply, { id: (req.params as { id: string }).id, token: q.token, timestamp: q.timestamp }, q['nav-data']);
    });

    /** v3 single sign-on: a form POST. */
    app.post('/sso/login', async (req, reply) => {
      const form = (req.body ?? {}) as Record<string, unknown>;
      const fields = {
        id: form.resource_id ?? form.id,
        timestamp: form.timestamp,
        token: form.resource_token ?? form.token,
        scoped: form.user_scoped_resource_token,
        userUuid: form.user_uuid,
        userEmail: form.user_email,
      };
      return signIn(req, reply, fields, form['nav-data']);
    });

    app.get<{ Params: IdParams }>('/sso/resources/:id', { schema: { params: idParams } }, async (req, reply) => {
      const id = req.params.id.toLowerCase();
      const session = await sessions.find(req, 'sso');
      if (session?.resourceId !== id) throw new HttpError(403, `your session for this database has ended: ${AGAIN}`);
      const resource = await getResource(opts.pool, opts.sealer, prefix, id);
      if (!resource || hasTag(resourceMachine, resource.state, 'gone')) throw new HttpError(404, 'this database no longer exists');
      const notices = await listNotifications(opts.pool, id);
      return reply
        .type('text/html')
        .header('cache-control', 'no-store')
        .send(renderResourcePage(resource, prefix, notices, csrfField(session), opts.caCertificate));
    });

    app.post('/sso/logout', async (req, reply) => {
      const session = await sessions.find(req, 'sso');
      if (!session) throw new HttpError(403, 'you are signed out already');
      checkCsrf(session, req.body);
      await sessions.end(req, reply, 'sso');
      return reply
        .type('text/html')
        .send(
          page('Signed out · pgfleet', `<main><section><h2>Signed out</h2><p>To see your database again, ${AGAIN}.</p></section></main>`),
        );
    });
  };
}
