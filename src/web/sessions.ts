import { createHash, randomBytes } from 'node:crypto';
import { parseCookie, stringifySetCookie } from 'cookie';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Queryable } from '../db.ts';
import { isLoopback, sameSecret } from './auth.ts';
import { HttpError } from './errors.ts';

/**
 * Sessions of the operator console and of customers' SSO pages, kept in the control
 * database. The cookie carries a random token and nothing else; a session is found by the
 * token's hash *and* its purpose, so a cookie of one purpose never opens the other, and
 * signing out ends it on the server whatever copies of the cookie are left.
 *
 * One mechanism, two purposes: they differ only where security needs them to. A sign-on
 * arrives from the platform's site, so its cookie must be SameSite=Lax, and it opens one
 * database for an hour; the console is only reached from its own pages (Strict) and opens
 * the whole fleet.
 */
export type Purpose = 'console' | 'sso';

interface Kind {
  cookie: string;
  path: string;
  /** The console is only ever reached from its own pages; SSO arrives from the platform's. */
  sameSite: 'strict' | 'lax';
  seconds: number;
}

const KINDS: Record<Purpose, Kind> = {
  console: { cookie: 'pgfleet_console', path: '/console', sameSite: 'strict', seconds: 12 * 60 * 60 },
  sso: { cookie: 'pgfleet_sso', path: '/sso', sameSite: 'lax', seconds: 60 * 60 },
};

export interface Session {
  purpose: Purpose;
  /** The one database an SSO session opens; null for the console. */
  resourceId: string | null;
  /** Every form of the session's pages posts it back (a page elsewhere cannot read it). */
  csrf: string;
}

export const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest();

export function requestCookies(req: FastifyRequest): Record<string, string | undefined> {
  return parseCookie(req.headers.cookie ?? '');
}

/**
 * Whether the browser reached us over HTTPS: the deployment says so (PGFLEET_PUBLIC_URL),
 * the socket is TLS, or a proxy on this machine says so. A remote peer's
 * `X-Forwarded-Proto` is not believed: anyone can send it.
 */
export function overHttps(req: FastifyRequest, publicUrl: string | undefined): boolean {
  if (publicUrl?.startsWith('https:')) return true;
  if (req.protocol === 'https') return true;
  return isLoopback(req.socket.remoteAddress) && req.headers['x-forwarded-proto'] === 'https';
}

export interface CookieOptions {
  path: string;
  sameSite: 'strict' | 'lax';
  httpOnly?: boolean;
  /** Seconds; 0 deletes the cookie. Unset: it lasts as long as the browser session. */
  maxAge?: number;
}

export function setCookie(
  req: FastifyRequest,
  reply: FastifyReply,
  publicUrl: string | undefined,
  name: string,
  value: string,
  opts: CookieOptions,
): void {
  reply.header('set-cookie', stringifySetCookie(name, value, { ...opts, secure: overHttps(req, publicUrl) }));
}

export class Sessions {
  constructor(
    private readonly db: Queryable,
    private readonly publicUrl: string | undefined,
  ) {}

  /** A new session and its cookie; expired ones are swept first. `db` may be a transaction. */
  async start(
    req: FastifyRequest,
    reply: FastifyReply,
    purpose: Purpose,
    resourceId: string | null,
    db: Queryable = this.db,
  ): Promise<Session> {
    const kind = KINDS[purpose];
    const token = randomBytes(32).toString('base64url');
    const csrf = randomBytes(24).toString('base64url');
    await db.query('delete from sessions where expires_at < now()');
    await db.query(
      `insert into sessions (token_sha256, purpose, resource_id, csrf, expires_at)
       values ($1, $2, $3, $4, now() + make_interval(secs => $5))`,
      [sha256(token), purpose, resourceId, csrf, kind.seconds],
    );
    setCookie(req, reply, this.publicUrl, kind.cookie, token, {
      path: kind.path,
      sameSite: kind.sameSite,
      httpOnly: true,
      maxAge: kind.seconds,
    });
    return { purpose, resourceId, csrf };
  }

  /** The live session of this purpose the request's cookie names, if any. */
  async find(req: FastifyRequest, purpose: Purpose): Promise<Session | undefined> {
    const token = requestCookies(req)[KINDS[purpose].cookie];
    if (!token || !/^[A-Za-z0-9_-]{43}$/.test(token)) return undefined;
    const { rows } = await this.db.query<{ resource_id: string | null; csrf: string }>(
      `select resource_id, csrf from sessions where token_sha256 = $1 and purpose = $2 and ended_at is null and expires_at > now()`,
      [sha256(token), purpose],
    );
    return rows[0] && { purpose, resourceId: rows[0].resource_id, csrf: rows[0].csrf };
  }

  /** Sign out: the session ends on the server, and the browser forgets the cookie. */
  async end(req: FastifyRequest, reply: FastifyReply, purpose: Purpose): Promise<void> {
    const kind = KINDS[purpose];
    const token = requestCookies(req)[kind.cookie];
    if (token)
      await this.db.query('update sessions set ended_at = now() where token_sha256 = $1 and purpose = $2 and ended_at is null', [
        sha256(token),
        purpose,
      ]);
    setCookie(req, reply, this.publicUrl, kind.cookie, '', { path: kind.path, sameSite: kind.sameSite, httpOnly: true, maxAge: 0 });
  }
}

/**
 * Expired sessions and SSO tokens past their window: starting a session sweeps them too,
 * but a deployment nobody signs in to would keep them, so the clock sweeps every hour.
 */
export async function sweepExpiredSessions(db: Queryable): Promise<void> {
  await db.query('delete from sessions where expires_at < now()');
  await db.query('delete from sso_tokens_used where expires_at < now()');
}

/** A form of a session's page must post back its CSRF token: a page elsewhere cannot know it. */
export function checkCsrf(session: Session, body: unknown): void {
  const given = (body as { csrf?: unknown } | undefined)?.csrf;
  if (typeof given !== 'string' || !sameSecret(given, session.csrf)) {
    throw new HttpError(403, 'this form has expired or did not come from pgfleet: reload the page and try again');
  }
}

export function csrfField(session: Session): string {
  // base64url needs no escaping in an attribute.
  return `<input type="hidden" name="csrf" value="${session.csrf}">`;
}
