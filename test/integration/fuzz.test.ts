import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { routesOf, type RouteEntry } from '../../src/web/server.ts';
import { userScopedToken } from '../../src/web/sso.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { ADDON_BASIC, startSystem, TOKEN, type System } from '../support/system.ts';

/**
 * Every route the web process registers, called with generated methods, paths, headers and
 * bodies: nothing answers 5xx, and nothing a 4xx answered changed a row of the control
 * database. Web only, so every change comes from a request. Seeded: a failure prints the
 * seed and path that reproduce it (FUZZ_SEED, FUZZ_RUNS to replay or go further).
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20_260_310);
const RUNS = Number(process.env.FUZZ_RUNS ?? 5000);
const SSO_SALT = 'sso-salt-0123456789abcdef';
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];
const KEYS = [
  'uuid',
  'plan',
  'region',
  'options',
  'provider',
  'follow',
  'at',
  'url',
  'token',
  'next',
  'csrf',
  'resource_id',
  'resource_token',
  'timestamp',
  'user_scoped_resource_token',
  'user_uuid',
  'user_email',
  'oauth_grant',
  'callback_url',
  'name',
  '__proto__',
  'constructor',
];
/** Stands for JSON nested 10,000 deep, spliced in as text: the test itself must not recurse through it. */
const DEEP = '<nested 10,000 deep>';
const DEEP_JSON = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** node:http, not fetch: any method may carry a body, and headers go as written. */
function send(base: string, method: string, path: string, headers: Record<string, string>, body: string | undefined): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${base}${path}`,
      { method, headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const cookieValue = (answer: Answer, name: string) =>
  [answer.headers['set-cookie'] ?? []]
    .flat()
    .find((c) => c.startsWith(`${name}=`))
    ?.split(';')[0]
    ?.slice(name.length + 1);

describe('every HTTP endpoint, fuzzed', () => {
  let db: TestDatabase;
  let system: System;
  let base: string;
  let routes: RouteEntry[];
  const known: string[] = [];
  const sessions = { console: { cookie: '', csrf: '' }, sso: { cookie: '', csrf: '' } };
  let digestSql = '';

  beforeAll(async () => {
    db = await createTestDatabase();
    system = await startSystem(db.url, ['web'], {
      ADDON_SSO_SALT: SSO_SALT,
      HEROKU_API_URL: 'https://api.heroku.com',
      PGFLEET_ANSWER_WITHIN: '0',
    });
    base = system.running.url!;
    routes = routesOf(system.running.web!);
    // Ids that exist, so generated requests reach past "no such id".
    const resource = randomUUID();
    expect(
      (
        await send(
          base,
          'POST',
          '/heroku/resources',
          { authorization: ADDON_BASIC, 'content-type': 'application/json' },
          JSON.stringify({ uuid: resource, plan: 'shared', region: 'us' }),
        )
      ).status,
    ).toBe(202);
    const server = (await system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
    const { rows } = await db.pool.query<{ id: string }>(
      `insert into jobs (task, attempts, last_error, dead_at) values ('restart', 10, 'gave up', now()) returning id::text`,
    );
    known.push(resource, server, rows[0]!.id);
    const { rows: tables } = await db.pool.query<{ name: string }>(
      `select tablename as name from pg_tables where schemaname = 'public' order by 1`,
    );
    digestSql = `select ${tables
      .map(
        (t, i) =>
          `(select md5(coalesce(string_agg(x::text, '|' order by x::text), '')) ` +
          `from ${pg.escapeIdentifier(t.name)} x) as "${i}:${t.name}"`,
      )
      .join(', ')}`;
  });
  afterAll(async () => {
    await system?.stop();
    await db?.drop();
  });

  /** Every table of the control database, each as one digest of all its rows. */
  const digest = async () => (await db.pool.query(digestSql)).rows[0] as Record<string, string>;

  /** Sessions to send: fresh ones when a request ended them (or deprovisioned the database). */
  async function ensureSessions(): Promise<void> {
    const live = async (purpose: string) =>
      (await db.pool.query(`select 1 from sessions where purpose = $1 and ended_at is null and expires_at > now()`, [purpose])).rowCount! >
      0;
    if (!(await live('console'))) {
      const login = await send(
        base,
        'POST',
        '/console/login',
        { 'content-type': 'application/x-www-form-urlencoded' },
        new URLSearchParams({ token: TOKEN }).toString(),
      );
      sessions.console.cookie = `pgfleet_console=${cookieValue(login, 'pgfleet_console')}`;
      sessions.console.csrf =
        /name="csrf" value="([^"]+)"/.exec(
          (await send(base, 'GET', '/console', { cookie: sessions.console.cookie }, undefined)).text,
        )?.[1] ?? '';
    }
    if (!(await live('sso'))) {
      const timestamp = String(Math.floor(Date.now() / 1000));
      const user = { user_uuid: randomUUID(), user_email: 'fuzz@example.com' };
      const fields = {
        resource_id: known[0]!,
        timestamp,
        ...user,
        user_scoped_resource_token: userScopedToken(known[0]!, SSO_SALT, timestamp, user.user_uuid, user.user_email),
      };
      const login = await send(
        base,
        'POST',
        '/sso/login',
        { 'content-type': 'application/x-www-form-urlencoded' },
        new URLSearchParams(fields).toString(),
      );
      sessions.sso.cookie = `pgfleet_sso=${cookieValue(login, 'pgfleet_sso') ?? ''}`;
      sessions.sso.csrf =
        /name="csrf" value="([^"]+)"/.exec(
          (await send(base, 'GET', `/sso/resources/${known[0]}`, { cookie: sessions.sso.cookie }, undefined)).text,
        )?.[1] ?? '';
    }
  }

  it('answers every generated request below 500, and changes nothing when it answers 4xx', async () => {
    const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });
    const id = fc.oneof(
      fc.constantFrom(...known),
      fc.uuid(),
      fc.string({ maxLength: 40 }),
      fc.constantFrom("1' or '1'='1", '..', '__proto__', 'constructor', '-1', '99999999999999999999', 'a'.repeat(300), '%', 'x\r\ny'),
    );
    /** Values that broke something once, or could: header breakers, lone surrogates, prototype names, deep nesting. */
    const nasty = fc.constantFrom(
      '/console\r\nSet-Cookie: a=b',
      '\ud800',
      '\u0000',
      'x'.repeat(70_000),
      'constructor',
      '__proto__',
      'toString',
      -1,
      1e308,
      null,
      [],
      {},
    );
    const value = fc.oneof(
      { weight: 2, arbitrary: nasty },
      fc.constant(DEEP),
      fc.jsonValue({ maxDepth: 3 }),
      fc.constantFrom(
        ...known,
        'shared',
        'shared-plus',
        'dedicated',
        'ha',
        'us',
        'eu',
        'local',
        '/console/jobs',
        new Date(Date.now() + 3_600_000).toISOString(),
        'https://api.heroku.com/addons/x',
      ),
      fc.uuid(),
      fc.string({ unit: 'binary', maxLength: 40 }),
    );
    /** A good body for each kind of route, to be mutated: bad input that gets past the first check. */
    const good: Record<string, Record<string, unknown>> = {
      '/heroku/resources': { uuid: known[0], plan: 'shared', region: 'us', options: {}, callback_url: 'https://api.heroku.com/addons/x' },
      '/api/servers': { provider: 'local' },
      maintenance: { at: new Date(Date.now() + 3_600_000).toISOString() },
      notifications: { url: 'https://example.com/hook' },
      '/console/login': { token: TOKEN, next: '/console' },
      '/sso/login': { resource_id: known[0], resource_token: '0'.repeat(40), timestamp: String(Math.floor(Date.now() / 1000)) },
    };
    const goodFor = (url: string) => Object.entries(good).find(([k]) => url.startsWith(k) || url.endsWith(k))?.[1] ?? {};
    const mutated = (base: Record<string, unknown>) =>
      fc
        .dictionary(fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...Object.keys(base), 'uuid') }, fc.constantFrom(...KEYS)), value, {
          maxKeys: 2,
        })
        .map((changes) => Object.assign({ ...base }, changes));
    const body = (url: string) =>
      fc.oneof(
        { weight: 6, arbitrary: mutated(goodFor(url)) },
        { weight: 2, arbitrary: fc.dictionary(fc.constantFrom(...KEYS), value, { maxKeys: 6 }) },
        fc.jsonValue({ maxDepth: 4 }),
        printable,
        fc.constant(DEEP),
        fc.constant({ raw: '' }),
      );
    /** Mostly what the route takes, so requests get past the door; now and then anything. */
    const mostly = <T>(usual: T, others: readonly T[]) =>
      fc.oneof({ weight: 4, arbitrary: fc.constant(usual) }, { weight: 1, arbitrary: fc.constantFrom(...others) });
    const rightAuth = (url: string) =>
      url.startsWith('/api') || url === '/metrics' ? 'operator' : url.startsWith('/heroku') ? 'addon' : 'none';
    const rightCookie = (url: string) => (url.startsWith('/console') ? 'console' : url.startsWith('/sso') ? 'sso' : 'none');
    const rightType = (url: string) =>
      url.startsWith('/console') || url.startsWith('/sso') ? 'application/x-www-form-urlencoded' : 'application/json';
    // Routes that take a body are drawn twice as often: there is more to get wrong.
    const weighted = [...routes, { method: 'GET', url: '/:id' }, { method: 'POST', url: '/api/:id' }].flatMap((route) =>
      ['GET', 'HEAD'].includes(route.method) ? [route] : [route, route],
    );
    const request = fc.constantFrom(...weighted).chain((route) =>
      fc.record({
        route: fc.constant(route),
        method: mostly(route.method, METHODS),
        id,
        query: fc.dictionary(fc.constantFrom('token', 'timestamp', 'nav-data', 'next', 'failed', 'long', 'resource_id'), printable, {
          maxKeys: 3,
        }),
        auth: mostly(rightAuth(route.url), ['none', 'operator', 'addon', 'wrong-basic', 'wrong-bearer', 'garbage']),
        cookie: mostly(rightCookie(route.url), ['none', 'console', 'sso', 'sso-as-console', 'console-as-sso', 'garbage']),
        csrf: fc.boolean(),
        contentType: mostly<string | undefined>(rightType(route.url), [
          undefined,
          'application/json',
          'application/json; charset=utf-8',
          'application/x-www-form-urlencoded',
          'text/plain',
          'multipart/form-data; boundary=x',
        ]),
        body: body(route.url),
        forwardedProto: fc.option(fc.constantFrom('https', 'http', 'javascript')),
        partial: fc.boolean(),
      }),
    );

    const hit = new Set<string>();
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        await ensureSessions();
        const method = r.method;
        const path =
          r.route.url.replace(/:\w+/g, () => encodeURIComponent(r.id)) +
          (Object.keys(r.query).length ? `?${new URLSearchParams(r.query)}` : '');
        const headers: Record<string, string> = {};
        const auth = {
          operator: `Bearer ${TOKEN}`,
          addon: ADDON_BASIC,
          'wrong-basic': `Basic ${Buffer.from('pgfleet:nope').toString('base64')}`,
          'wrong-bearer': 'Bearer nope',
          garbage: 'Negotiate ;;',
        } as Record<string, string>;
        if (auth[r.auth]) headers.authorization = auth[r.auth]!;
        const swap = (c: string, to: string) => c.replace(/^[^=]+/, to);
        const cookie = {
          console: sessions.console.cookie,
          sso: sessions.sso.cookie,
          'sso-as-console': swap(sessions.sso.cookie, 'pgfleet_console'),
          'console-as-sso': swap(sessions.console.cookie, 'pgfleet_sso'),
          garbage: 'pgfleet_console=%; pgfleet_sso=="',
        } as Record<string, string>;
        if (cookie[r.cookie]) headers.cookie = cookie[r.cookie]!;
        if (r.forwardedProto) headers['x-forwarded-proto'] = r.forwardedProto;
        if (r.partial) headers['x-pgfleet-partial'] = '1';
        let text: string | undefined;
        if (method !== 'GET' && method !== 'HEAD') {
          const b = r.body;
          const fields =
            typeof b === 'object' && b !== null && !Array.isArray(b) && !('raw' in b)
              ? { ...b, ...(r.csrf ? { csrf: r.cookie.startsWith('sso') ? sessions.sso.csrf : sessions.console.csrf } : {}) }
              : b;
          if (r.contentType) headers['content-type'] = r.contentType;
          if (typeof fields === 'object' && fields !== null && 'raw' in fields && typeof fields.raw === 'string') text = fields.raw;
          else if (r.contentType === 'application/x-www-form-urlencoded' && typeof fields === 'object' && fields !== null)
            text = new URLSearchParams(
              Object.entries(fields).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
            ).toString();
          else text = typeof fields === 'string' ? fields : JSON.stringify(fields);
          text = text.replaceAll(JSON.stringify(DEEP), DEEP_JSON);
        }
        hit.add(`${r.route.method} ${r.route.url}`);
        const before = await digest();
        const answer = await send(base, method, path, headers, text);
        const where = `${method} ${path} answered ${answer.status}: ${answer.text.slice(0, 300)}`;
        expect(answer.status, where).toBeLessThan(500);
        if (answer.status >= 400) expect(await digest(), `${where}, and changed the control database`).toEqual(before);
      }),
      { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: 150_000, markInterruptAsFailure: false },
    );
    // A new route is fuzzed without touching this test: it is among Fastify's.
    expect(routes.length).toBeGreaterThan(30);
    expect(routes.filter((route) => !hit.has(`${route.method} ${route.url}`))).toEqual([]);
  }, 240_000);
});
