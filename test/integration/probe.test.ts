import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addonManifest } from '../../src/manifest.ts';
import { ssoToken } from '../../src/web/sso.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { ADDON_BASIC, startSystem, TOKEN, type System } from '../support/system.ts';

/**
 * What an outside security probe found in the web process (issue 10), each kept fixed
 * here. Web only: no worker or clock, so every row that changes was changed by a request.
 */
const SSO_SALT = 'sso-salt-0123456789abcdef';

interface Answer {
  status: number;
  text: string;
  body: any;
  headers: Headers;
}

async function call(
  base: string,
  method: string,
  route: string,
  init: { body?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const res = await fetch(`${base}${route}`, { method, redirect: 'manual', headers: init.headers ?? {}, body: init.body });
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, text, body, headers: res.headers };
}

const json = (body: unknown) => ({
  body: typeof body === 'string' ? body : JSON.stringify(body),
  headers: { authorization: ADDON_BASIC, 'content-type': 'application/json' },
});
const form = (fields: Record<string, string>, headers: Record<string, string> = {}) => ({
  body: new URLSearchParams(fields).toString(),
  headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
});
const cookieOf = (answer: Answer, name: string) => answer.headers.getSetCookie().find((c) => c.startsWith(`${name}=`));
const valueOf = (setCookie: string | undefined) => setCookie?.split(';')[0]?.split('=').slice(1).join('=') ?? '';
const csrfOf = (html: string) => /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? '';

describe('the web process after the outside probe', () => {
  let db: TestDatabase;
  let system: System;
  let base: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    system = await startSystem(db.url, ['web'], {
      ADDON_SSO_SALT: SSO_SALT,
      HEROKU_API_URL: 'https://api.heroku.com',
      PGFLEET_ANSWER_WITHIN: '0',
    });
    base = system.running.url!;
  });
  afterAll(async () => {
    await system?.stop();
    await db?.drop();
  });

  const counts = async () =>
    (
      await db.pool.query(
        `select (select count(*) from resources)::int as resources, (select count(*) from servers)::int as servers,
           (select count(*) from machines)::int as machines,
           (select count(*) from jobs)::int as jobs, (select count(*) from transitions)::int as transitions`,
      )
    ).rows[0];

  async function provision(extra: Record<string, unknown> = {}): Promise<string> {
    const uuid = randomUUID();
    const res = await call(base, 'POST', '/heroku/resources', json({ uuid, plan: 'shared', region: 'us', ...extra }));
    expect(res.status).toBe(202);
    return uuid;
  }

  async function ssoLogin(id: string, headers: Record<string, string> = {}): Promise<Answer> {
    const timestamp = String(Math.floor(Date.now() / 1000));
    return call(
      base,
      'POST',
      '/sso/login',
      form({ resource_id: id, resource_token: ssoToken(id, SSO_SALT, timestamp), timestamp }, headers),
    );
  }

  async function consoleLogin(headers: Record<string, string> = {}, next = '/console'): Promise<Answer> {
    return call(base, 'POST', '/console/login', form({ token: TOKEN, next }, headers));
  }

  describe('1: a cookie is good for its one purpose, and sign-out ends it', () => {
    it('a customer signed in through SSO gets nothing from the console with its cookie', async () => {
      const id = await provision();
      const sso = valueOf(cookieOf(await ssoLogin(id), 'pgfleet_sso'));
      expect(sso).not.toBe('');
      const overview = await call(base, 'GET', '/console', { headers: { cookie: `pgfleet_console=${sso}` } });
      expect(overview.status).toBe(303);
      expect(overview.headers.get('location')).toMatch(/^\/console\/login/);
      // Nor does the console's cookie open a customer's page.
      const operator = valueOf(cookieOf(await consoleLogin(), 'pgfleet_console'));
      expect((await call(base, 'GET', `/sso/resources/${id}`, { headers: { cookie: `pgfleet_sso=${operator}` } })).status).toBe(403);
    });

    it('keeps sessions on the server: the cookie holds a random token, and signing out ends it there', async () => {
      const login = await consoleLogin();
      const cookie = `pgfleet_console=${valueOf(cookieOf(login, 'pgfleet_console'))}`;
      expect(valueOf(cookieOf(login, 'pgfleet_console'))).toMatch(/^[A-Za-z0-9_-]{43}$/);
      const page = await call(base, 'GET', '/console', { headers: { cookie } });
      expect(page.status).toBe(200);
      const { rows } = await db.pool.query(
        `select purpose, resource_id, ended_at from sessions where purpose = 'console' and ended_at is null`,
      );
      expect(rows.length).toBeGreaterThan(0);
      const out = await call(base, 'POST', '/console/logout', form({ csrf: csrfOf(page.text) }, { cookie }));
      expect(out.status).toBe(303);
      expect(cookieOf(out, 'pgfleet_console')).toMatch(/Max-Age=0|Expires=Thu, 01 Jan 1970/);
      // The old cookie, kept by whoever copied it, opens nothing any more.
      expect((await call(base, 'GET', '/console', { headers: { cookie } })).status).toBe(303);
    });

    it('marks the cookie Secure when the request came over HTTPS through a proxy on this machine', async () => {
      expect(cookieOf(await consoleLogin(), 'pgfleet_console')).not.toMatch(/; Secure/i);
      expect(cookieOf(await consoleLogin({ 'x-forwarded-proto': 'https' }), 'pgfleet_console')).toMatch(/; Secure/i);
      const id = await provision();
      expect(cookieOf(await ssoLogin(id, { 'x-forwarded-proto': 'https' }), 'pgfleet_sso')).toMatch(/; Secure/i);
    });
  });

  describe('7: input that broke things is a 4xx that changes nothing', () => {
    for (const region of ['constructor', '__proto__', 'toString']) {
      it(`refuses the region "${region}"`, async () => {
        const before = await counts();
        const res = await call(base, 'POST', '/heroku/resources', json({ uuid: randomUUID(), plan: 'shared', region }));
        expect(res.status).toBe(422);
        expect(res.body.message).toMatch(/no region/);
        expect(await counts()).toEqual(before);
      });
    }

    it('answers JSON nested 10,000 deep with a 400, on every JSON route', async () => {
      const deep = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
      const deepObject = `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`;
      const before = await counts();
      for (const body of [deep, deepObject]) {
        const addon = await call(base, 'POST', '/heroku/resources', json(body));
        expect(addon.status).toBe(400);
        expect(addon.body.message).toMatch(/nested/);
        const operator = await call(base, 'POST', '/api/servers', {
          body,
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        });
        expect(operator.status).toBe(400);
        expect(operator.body.error).toMatch(/nested/);
      }
      expect(await counts()).toEqual(before);
    });

    it('keeps CR and LF out of the place the console sends you after signing in', async () => {
      const res = await consoleLogin({}, '/console/servers\r\nSet-Cookie: planted=1');
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/console');
      expect(res.headers.getSetCookie().some((c) => c.startsWith('planted'))).toBe(false);
    });

    it('refuses POST /api/servers with the body null', async () => {
      const before = await counts();
      const res = await call(base, 'POST', '/api/servers', {
        body: 'null',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatch(/JSON object/);
      expect(await counts()).toEqual(before);
    });

    it('refuses a form-encoded provision with 415', async () => {
      const before = await counts();
      const res = await call(
        base,
        'POST',
        '/heroku/resources',
        form({ uuid: randomUUID(), plan: 'shared', region: 'us' }, { authorization: ADDON_BASIC }),
      );
      expect(res.status).toBe(415);
      expect(res.body.message).toMatch(/JSON/);
      expect(await counts()).toEqual(before);
    });

    it('deprovisions when the platform sends Content-Type: application/json and no body', async () => {
      const id = await provision();
      const res = await call(base, 'DELETE', `/heroku/resources/${id}`, {
        headers: { authorization: ADDON_BASIC, 'content-type': 'application/json' },
      });
      expect(res.status).toBe(204);
      expect((await db.pool.query(`select state from machines where entity_id = $1`, [id])).rows[0].state).toMatch(/^deprovisioning/);
    });
  });

  describe('8: answers that tell the platform the truth', () => {
    it('answers a provision of a deprovisioned uuid with 410', async () => {
      const id = await provision();
      expect((await call(base, 'DELETE', `/heroku/resources/${id}`, { headers: { authorization: ADDON_BASIC } })).status).toBe(204);
      const before = await counts();
      const again = await call(base, 'POST', '/heroku/resources', json({ uuid: id, plan: 'shared', region: 'us' }));
      expect(again.status).toBe(410);
      expect(again.body.message).toMatch(/deprovisioned/);
      expect(await counts()).toEqual(before);
    });

    it('refuses a repeated uuid with another plan or region', async () => {
      const id = await provision();
      const before = await counts();
      const plan = await call(base, 'POST', '/heroku/resources', json({ uuid: id, plan: 'shared-plus', region: 'us' }));
      expect(plan.status).toBe(409);
      expect(plan.body.message).toMatch(/already exists on plan "shared" in region "us"/);
      const region = await call(base, 'POST', '/heroku/resources', json({ uuid: id, plan: 'shared', region: 'eu' }));
      expect(region.status).toBe(409);
      expect(await counts()).toEqual(before);
      // The same request again is still answered.
      expect((await call(base, 'POST', '/heroku/resources', json({ uuid: id, plan: 'shared', region: 'us' }))).status).toBe(202);
    });

    it('answers SSO into a deprovisioned database with 404', async () => {
      const id = await provision();
      const session = valueOf(cookieOf(await ssoLogin(id), 'pgfleet_sso'));
      expect((await call(base, 'DELETE', `/heroku/resources/${id}`, { headers: { authorization: ADDON_BASIC } })).status).toBe(204);
      expect((await ssoLogin(id)).status).toBe(404);
      expect((await call(base, 'GET', `/sso/resources/${id}`, { headers: { cookie: `pgfleet_sso=${session}` } })).status).toBe(404);
    });

    it('takes each SSO token once', async () => {
      const id = await provision();
      const timestamp = String(Math.floor(Date.now() / 1000));
      const fields = { resource_id: id, resource_token: ssoToken(id, SSO_SALT, timestamp), timestamp };
      expect((await call(base, 'POST', '/sso/login', form(fields))).status).toBe(302);
      const replay = await call(base, 'POST', '/sso/login', form(fields));
      expect(replay.status).toBe(403);
      expect(replay.text).toMatch(/used already/);
      const legacy = await call(base, 'GET', `/heroku/resources/${id}?token=${fields.resource_token}&timestamp=${timestamp}`);
      expect(legacy.status).toBe(403);
    });

    it("accepts Heroku's user-scoped SSO token, and refuses one for another user", async () => {
      const id = await provision();
      const timestamp = String(Math.floor(Date.now() / 1000));
      const user = { user_uuid: randomUUID(), user_email: 'dev@example.com' };
      const scoped = createHash('sha256').update(`${id}:${SSO_SALT}:${timestamp}:${user.user_uuid}:${user.user_email}`).digest('hex');
      const ok = await call(base, 'POST', '/sso/login', form({ resource_id: id, user_scoped_resource_token: scoped, timestamp, ...user }));
      expect(ok.status).toBe(302);
      expect(ok.headers.get('location')).toBe(`/sso/resources/${id}`);
      const other = await call(
        base,
        'POST',
        '/sso/login',
        form({ resource_id: id, user_scoped_resource_token: scoped, timestamp, ...user, user_email: 'eve@example.com' }),
      );
      expect(other.status).toBe(403);
    });

    it('lists every config var a plan hands out in the manifest', () => {
      const manifest = addonManifest({ ...system.config.addon, password: 'p', ssoSalt: 's' }, 5000) as { api: { config_vars: string[] } };
      expect(manifest.api.config_vars).toEqual(['PGFLEET_URL', 'PGFLEET_CONNECTION_POOL_URL', 'PGFLEET_READONLY_URL']);
    });
  });

  describe('11: pages a browser keeps safe', () => {
    it('forbids framing and sets a content security policy on every page', async () => {
      const id = await provision();
      const login = await ssoLogin(id);
      const pages = [
        await call(base, 'GET', '/console/login'),
        await call(base, 'GET', `/sso/resources/${id}`, { headers: { cookie: cookieOf(login, 'pgfleet_sso')!.split(';')[0]! } }),
      ];
      for (const page of pages) {
        expect(page.status).toBe(200);
        expect(page.headers.get('x-frame-options')).toBe('DENY');
        expect(page.headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/);
        expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'/);
      }
      // The customer's page shows the database password: no cache may keep it.
      expect(pages[1]!.headers.get('cache-control')).toBe('no-store');
    });

    it('refuses a console form posted without its CSRF token', async () => {
      const { rows } = await db.pool.query(
        `insert into jobs (task, attempts, last_error, dead_at) values ('restart', 10, 'gave up', now()) returning id`,
      );
      const cookie = cookieOf(await consoleLogin(), 'pgfleet_console')!.split(';')[0]!;
      const forged = await call(base, 'POST', `/console/jobs/${rows[0].id}/retry`, form({}, { cookie }));
      expect(forged.status).toBe(403);
      expect(forged.text).toMatch(/reload the page/);
      // Checked before the path is: a forged form is refused the same whatever it names.
      expect((await call(base, 'POST', '/console/jobs/not-a-job/retry', form({}, { cookie }))).status).toBe(403);
      expect((await db.pool.query('select dead_at from jobs where id = $1', [rows[0].id])).rows[0].dead_at).not.toBeNull();
      const page = await call(base, 'GET', '/console/jobs', { headers: { cookie } });
      const real = await call(base, 'POST', `/console/jobs/${rows[0].id}/retry`, form({ csrf: csrfOf(page.text) }, { cookie }));
      expect(real.status).toBe(303);
      expect((await db.pool.query('select dead_at from jobs where id = $1', [rows[0].id])).rows[0].dead_at).toBeNull();
    });
  });
});

describe('a web process reached from beyond this machine', () => {
  let db: TestDatabase;
  let system: System;

  beforeAll(async () => {
    db = await createTestDatabase();
    system = await startSystem(db.url, ['web'], { HOST: '0.0.0.0', PGFLEET_PUBLIC_URL: 'https://pgfleet.example.com' });
  });
  afterAll(async () => {
    await system?.stop();
    await db?.drop();
  });

  it('serves /metrics only with the operator token', async () => {
    const base = system.running.url!;
    const open = await call(base, 'GET', '/metrics');
    expect(open.status).toBe(401);
    expect(open.text).toMatch(/Authorization: Bearer/);
    const scraped = await call(base, 'GET', '/metrics', { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(scraped.status).toBe(200);
    expect(scraped.text).toMatch(/pgfleet_entities/);
  });

  it('marks session cookies Secure when PGFLEET_PUBLIC_URL is https', async () => {
    const login = await call(system.running.url!, 'POST', '/console/login', form({ token: TOKEN, next: '/console' }));
    expect(login.status).toBe(303);
    expect(cookieOf(login, 'pgfleet_console')).toMatch(/; Secure/i);
  });
});
