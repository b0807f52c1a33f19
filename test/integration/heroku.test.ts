import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { ssoToken } from '../../src/web/sso.ts';
import { waitFor } from '../support/db.ts';
import { ADDON_BASIC, adminUrl, psql, useSystemWithPlatform } from '../support/system.ts';
import { verifyFull } from '../support/tls.ts';

const SSO_SALT = 'sso-salt-0123456789abcdef';
/** The CA the system under test hands out, saved to a file; set once the system runs. */
let caFile: string;

/**
 * Through node-postgres, as an app would: a customer's URL (it says `sslmode`) checking the
 * server's certificate against pgfleet's CA, a server's superuser URL as it is.
 */
async function nodePg<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({
    connectionString: new URL(url).searchParams.has('sslmode') ? verifyFull(url, caFile) : url,
    connectionTimeoutMillis: 5000,
  });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function refused(url: string): Promise<string> {
  try {
    await nodePg(url, 'select 1');
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`${new URL(url).username} connected to ${new URL(url).pathname}`);
}

describe('the Heroku add-on API hands out working databases', () => {
  const ctx = useSystemWithPlatform(['web', 'worker', 'clock'], {
    ADDON_SSO_SALT: SSO_SALT,
    ADDON_CLIENT_SECRET: 'client-secret',
    PGFLEET_ANSWER_WITHIN: '20',
  });
  beforeAll(() => {
    caFile = ctx.system.caFile;
  });

  async function addon(method: string, route: string, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${ctx.system.running.url}${route}`, {
      method,
      redirect: 'manual',
      headers: { authorization: ADDON_BASIC, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, body: json, text, headers: res.headers };
  }

  const provisionBody = (plan: string, extra: Record<string, unknown> = {}) => {
    const uuid = randomUUID();
    return {
      uuid,
      plan,
      region: 'amazon-web-services::us-east-1',
      callback_url: `${ctx.platform.url}/addons/${uuid}`,
      name: `pgfleet-test-${uuid.slice(0, 8)}`,
      options: {},
      oauth_grant: { code: `grant-${uuid}`, expires_at: new Date(Date.now() + 300_000).toISOString(), type: 'authorization_code' },
      log_input_url: 'https://token:t.abc@1.us.logplex.io/logs',
      log_drain_token: 'd.abc',
      ...extra,
    };
  };

  const resource = async (id: string) => (await ctx.system.api('GET', `/api/resources/${id}`)).body;
  const counts = async () =>
    (
      await ctx.db.pool.query<Record<string, number>>(
        `select (select count(*) from resources)::int as resources, (select count(*) from servers)::int as servers,
           (select count(*) from machines)::int as machines, (select count(*) from resource_servers)::int as links`,
      )
    ).rows[0]!;

  let shared: { id: string; url: string };
  let other: { id: string; url: string };
  let dedicated: { id: string; url: string };

  it('provisions a shared database synchronously, with a URL psql and node-postgres can write through', async () => {
    const body = provisionBody('shared');
    const res = await addon('POST', '/heroku/resources', body);
    expect(res.status).toBe(200);
    expect(res.body.id).toBe(body.uuid);
    expect(Object.keys(res.body.config)).toEqual(['PGFLEET_URL', 'PGFLEET_CONNECTION_POOL_URL']);
    const url = res.body.config.PGFLEET_URL as string;
    expect(url).toMatch(/^postgres:\/\/u[0-9a-f]{16}:[A-Za-z0-9_-]{43}@127\.0\.0\.1:\d+\/d[0-9a-f]{16}\?sslmode=require$/);
    shared = { id: body.uuid, url };

    await psql(url, 'create table notes (id serial primary key, body text); insert into notes (body) values ($$from psql$$)');
    await nodePg(url, 'insert into notes (body) values ($1)', ['from node-postgres']);
    expect(await psql(url, 'select string_agg(body, $$,$$ order by id) from notes')).toBe('from psql,from node-postgres');

    const shown = await resource(body.uuid);
    expect(shown).toMatchObject({ id: body.uuid, plan: 'shared', state: 'available', config: res.body.config });
    expect(shown.servers).toEqual([expect.objectContaining({ role: 'primary', state: 'available', host: '127.0.0.1' })]);
    expect(shown.transitions.map((t: { to: string }) => t.to).reverse()).toEqual([
      'creating.placing.trying',
      'creating.waiting',
      'creating.tenant.trying',
      'available',
    ]);
    // A synchronous answer carried the config: the platform is not called back.
    expect(ctx.platform.calls.filter((c) => c.path.includes(body.uuid))).toEqual([]);
    const listed = (await ctx.system.api('GET', '/api/resources')).body;
    expect(listed.map((r: { id: string }) => r.id)).toContain(body.uuid);
  });

  it('answers a repeated provision with the same id and config, and makes nothing new', async () => {
    const before = await counts();
    const again = await addon('POST', '/heroku/resources', { uuid: shared.id, plan: 'shared', region: 'us' });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id: shared.id, config: { PGFLEET_URL: shared.url } });
    expect(await counts()).toEqual(before);
  });

  it('isolates tenants: the role owns its database, with the plan limits, and reaches nothing else', async () => {
    const body = provisionBody('shared');
    const res = await addon('POST', '/heroku/resources', body);
    expect(res.status).toBe(200);
    other = { id: body.uuid, url: res.body.config.PGFLEET_URL };
    const a = new URL(shared.url);
    const b = new URL(other.url);
    // Both tenants share one server.
    expect(b.port).toBe(a.port);
    const intoOther = new URL(shared.url);
    intoOther.pathname = b.pathname;
    expect(await refused(intoOther.toString())).toMatch(/permission denied for database/);
    const intoPostgres = new URL(shared.url);
    intoPostgres.pathname = '/postgres';
    expect(await refused(intoPostgres.toString())).toMatch(/permission denied for database/);

    const [me] = await nodePg(
      shared.url,
      `select rolconnlimit, rolsuper, rolcreatedb, rolcreaterole, current_setting('statement_timeout') as timeout
       from pg_roles where rolname = current_user`,
    );
    // The plan's 20, and one for the platform's check that the customer can log in.
    expect(me).toEqual({ rolconnlimit: 21, rolsuper: false, rolcreatedb: false, rolcreaterole: false, timeout: '30s' });
    const serverId = (await resource(shared.id)).servers[0].id;
    const [stored] = await nodePg(await adminUrl(ctx.db.pool, serverId), 'select rolpassword from pg_authid where rolname = $1', [
      a.username,
    ]);
    expect(stored?.rolpassword).toMatch(/^SCRAM-SHA-256\$4096:/);
    // The control database holds the tenant's password sealed, never in plain text.
    const { rows } = await ctx.db.pool.query('select r::text as row from resources r where id = $1', [shared.id]);
    expect(rows[0].row).not.toContain(decodeURIComponent(a.password));
  });

  it('refuses to delete a server that still serves a customer database', async () => {
    const serverId = (await resource(shared.id)).servers[0].id;
    const res = await ctx.system.api('DELETE', `/api/servers/${serverId}`);
    expect(res.status).toBe(409);
    expect(res.body.error).toMatch(new RegExp(`serves 2 resources \\(${shared.id}.*\\): deprovision or move them first`));
    expect((await ctx.system.api('GET', `/api/servers/${serverId}`)).body.state).toBe('available');
    expect(await psql(shared.url, 'select count(*) from notes')).toBe('2');
  });

  it('provisions a dedicated database asynchronously and hands the config to the platform', async () => {
    const body = provisionBody('dedicated');
    const res = await addon('POST', '/heroku/resources', body);
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ id: body.uuid, message: expect.stringMatching(/being provisioned/) });

    const done = await waitFor(
      'the platform to hear the provision is done',
      async () => ctx.platform.callsTo('POST', `/addons/${body.uuid}/actions/provision`)[0],
    );
    const exchange = ctx.platform.callsTo('POST', '/oauth/token');
    expect(exchange.some((c) => new URLSearchParams(c.body).get('code') === `grant-${body.uuid}`)).toBe(true);
    expect(new URLSearchParams(exchange[0]!.body).get('client_secret')).toBe('client-secret');
    const [patch] = ctx.platform.callsTo('PATCH', `/addons/${body.uuid}/config`);
    expect(patch!.headers.authorization).toBe('Bearer access-1');
    expect(patch!.headers.accept).toBe('application/vnd.heroku+json; version=3');
    const config = JSON.parse(patch!.body).config as { name: string; value: string }[];
    expect(config.map((c) => c.name)).toEqual(['PGFLEET_URL', 'PGFLEET_CONNECTION_POOL_URL']);
    expect(done.headers.authorization).toBe('Bearer access-1');
    expect(ctx.platform.calls.indexOf(patch!)).toBeLessThan(ctx.platform.calls.indexOf(done));

    const url = config[0]!.value;
    dedicated = { id: body.uuid, url };
    await psql(url, 'create table t (n int); insert into t values (7)');
    expect(await psql(url, 'select n from t')).toBe('7');
    const shown = await resource(body.uuid);
    expect(shown.state).toBe('available');
    expect(shown.config.PGFLEET_URL).toBe(url);
    expect(shown.servers).toEqual([expect.objectContaining({ role: 'primary', state: 'available' })]);
    expect(shown.servers[0].port).not.toBe(Number(new URL(shared.url).port));
  });

  it('provisions a follower of a dedicated database: a read-only copy that keeps up, on a server of its own', async () => {
    await psql(dedicated.url, 'create table followed (n int)');
    await psql(dedicated.url, 'insert into followed select generate_series(1, 500)');
    // Only a dedicated database can be followed, and only by a dedicated plan.
    expect((await addon('POST', '/heroku/resources', provisionBody('dedicated', { options: { follow: shared.id } }))).body.message).toMatch(
      /on a shared server/,
    );
    expect((await addon('POST', '/heroku/resources', provisionBody('shared', { options: { follow: dedicated.id } }))).body.message).toMatch(
      /choose a dedicated plan/,
    );

    const body = provisionBody('dedicated', { options: { follow: dedicated.id } });
    expect((await addon('POST', '/heroku/resources', body)).status).toBe(202);
    const patch = await waitFor('the follower config', async () => ctx.platform.callsTo('PATCH', `/addons/${body.uuid}/config`)[0], 90_000);
    const url = (JSON.parse(patch.body).config as { value: string }[])[0]!.value;
    expect(new URL(url).port).not.toBe(new URL(dedicated.url).port);
    expect(await psql(url, 'select count(*) from followed')).toBe('500');
    await psql(dedicated.url, 'insert into followed values (501)');
    await waitFor('the follower to keep up', async () => (await psql(url, 'select count(*) from followed')) === '501', 15_000);
    await expect(psql(url, 'insert into followed values (0)')).rejects.toThrow(/read-only transaction/);
    const shown = await resource(body.uuid);
    expect(shown).toMatchObject({ state: 'available', servers: [expect.objectContaining({ role: 'primary', state: 'available' })] });

    // Deprovisioning the follower removes its server and leaves the leader alone.
    expect((await addon('DELETE', `/heroku/resources/${body.uuid}`)).status).toBe(204);
    await waitFor(
      'the follower to be deleted',
      async () => (await ctx.system.api('GET', `/api/servers/${shown.servers[0].id}`)).body.state === 'deleted',
    );
    expect(await psql(dedicated.url, 'select count(*) from followed')).toBe('501');
  });

  it('keeps handing the config over until the platform takes it', async () => {
    ctx.platform.failing = true;
    const body = provisionBody('dedicated');
    expect((await addon('POST', '/heroku/resources', body)).status).toBe(202);
    await waitFor('the database to be available while the platform fails', async () => (await resource(body.uuid)).state === 'available');
    await waitFor('a failed delivery', async () => ctx.platform.callsTo('POST', '/oauth/token').some((c) => c.body.includes(body.uuid)));
    ctx.platform.failing = false;
    await waitFor(
      'the delivery to be retried and taken',
      async () => ctx.platform.callsTo('POST', `/addons/${body.uuid}/actions/provision`)[0],
      30_000,
    );
    expect(ctx.platform.callsTo('PATCH', `/addons/${body.uuid}/config`).length).toBeGreaterThanOrEqual(1);
  });

  it('changes plans of one kind in place and moves a database to another kind, keeping every row', async () => {
    await nodePg(shared.url, 'create table ledger (n int primary key)');
    await nodePg(shared.url, 'insert into ledger select generate_series(1, 5000)');

    const plus = await addon('PUT', `/heroku/resources/${shared.id}`, { plan: 'shared-plus', heroku_id: 'app@heroku.com' });
    expect(plus.status).toBe(200);
    expect(plus.body.config).toBeUndefined();
    const [limits] = await nodePg(shared.url, `select rolconnlimit from pg_roles where rolname = current_user`);
    expect(limits?.rolconnlimit).toBe(61);

    // A writer keeps committing while the database moves: every acknowledged row must arrive.
    await nodePg(shared.url, 'create table acked (n int primary key)');
    const writer = new pg.Client({ connectionString: verifyFull(shared.url, caFile) });
    writer.on('error', () => undefined);
    await writer.connect();
    const acknowledged: number[] = [];
    const writing = (async () => {
      for (let n = 1; ; n++) {
        try {
          await writer.query('insert into acked values ($1)', [n]);
        } catch {
          return;
        }
        acknowledged.push(n);
      }
    })();
    await waitFor('the writer to commit', async () => acknowledged.length > 20, 10_000, 5);
    const moved = await addon('PUT', `/heroku/resources/${shared.id}`, { plan: 'dedicated' });
    await writing;
    await writer.end().catch(() => undefined);
    expect(moved.status).toBe(200);
    const url = moved.body.config.PGFLEET_URL as string;
    expect(url).not.toBe(shared.url);
    expect(new URL(url).username).toBe(new URL(shared.url).username);
    expect(await psql(url, 'select count(*), sum(n) from ledger')).toBe('5000|12502500');
    const arrived = await nodePg<{ n: number }>(url, 'select n from acked where n = any($1)', [acknowledged]);
    expect(arrived.length).toBe(acknowledged.length);
    expect(await psql(url, 'select string_agg(body, $$,$$ order by id) from notes')).toBe('from psql,from node-postgres');
    await nodePg(url, 'insert into ledger values (5001)');
    // The old server no longer knows the tenant.
    expect(await refused(shared.url)).toMatch(/password authentication failed|does not exist/);
    const shown = await resource(shared.id);
    expect(shown.plan).toBe('dedicated');
    expect(shown.servers).toEqual([expect.objectContaining({ role: 'primary', state: 'available', port: Number(new URL(url).port) })]);
    shared = { id: shared.id, url };

    // And back from a server of its own to a shared one, whose old server is deleted.
    const oldServer = (await resource(dedicated.id)).servers[0].id;
    await nodePg(dedicated.url, 'insert into t select generate_series(1, 999)');
    const down = await addon('PUT', `/heroku/resources/${dedicated.id}`, { plan: 'shared' });
    expect(down.status).toBe(200);
    const sharedUrl = down.body.config.PGFLEET_URL as string;
    expect(await psql(sharedUrl, 'select count(*), sum(n) from t')).toBe('1000|499507');
    expect(new URL(sharedUrl).port).toBe(new URL(other.url).port);
    await waitFor(
      'the old dedicated server to be deleted',
      async () => (await ctx.system.api('GET', `/api/servers/${oldServer}`)).body.state === 'deleted',
    );
    // A repeated change is answered again, not redone.
    const repeated = await addon('PUT', `/heroku/resources/${dedicated.id}`, { plan: 'shared' });
    expect(repeated).toMatchObject({ status: 200, body: { config: { PGFLEET_URL: sharedUrl } } });
  });

  it('deprovisions: the database, its role and its dedicated server go, and a second DELETE is fine', async () => {
    const serverId = (await resource(shared.id)).servers[0].id;
    const res = await addon('DELETE', `/heroku/resources/${shared.id}`);
    expect(res.status).toBe(204);
    await waitFor('the resource to be deleted', async () => (await resource(shared.id)).state === 'deleted');
    await waitFor(
      'its dedicated server to be deleted',
      async () => (await ctx.system.api('GET', `/api/servers/${serverId}`)).body.state === 'deleted',
    );
    expect(await refused(shared.url)).toMatch(/ECONNREFUSED|connect/);
    expect((await addon('DELETE', `/heroku/resources/${shared.id}`)).status).toBe(204);

    // On a shared server only the tenant goes.
    const sharedServer = (await resource(other.id)).servers[0].id;
    expect((await addon('DELETE', `/heroku/resources/${other.id}`)).status).toBe(204);
    await waitFor('the shared tenant to be deleted', async () => (await resource(other.id)).state === 'deleted');
    const { username, pathname } = new URL(other.url);
    const [left] = await nodePg(
      await adminUrl(ctx.db.pool, sharedServer),
      `select (select count(*) from pg_database where datname = $1)::int as dbs,
         (select count(*) from pg_roles where rolname = $2)::int as roles`,
      [pathname.slice(1), username],
    );
    expect(left).toEqual({ dbs: 0, roles: 0 });
    expect((await ctx.system.api('GET', `/api/servers/${sharedServer}`)).body.state).toBe('available');
  });

  it('signs a customer in with a valid SSO token, and refuses a bad or stale one', async () => {
    const body = provisionBody('shared');
    expect((await addon('POST', '/heroku/resources', body)).status).toBe(200);
    const now = String(Math.floor(Date.now() / 1000));
    const token = ssoToken(body.uuid, SSO_SALT, now);

    const form = new URLSearchParams({ resource_id: body.uuid, resource_token: token, timestamp: now, 'nav-data': 'nav-123' });
    const login = await addon('POST', '/sso/login', form.toString(), {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: '',
    });
    expect(login.status).toBe(302);
    expect(login.headers.get('location')).toBe(`/sso/resources/${body.uuid}`);
    const cookies = login.headers.getSetCookie();
    expect(cookies.some((c) => c.startsWith('heroku-nav-data=nav-123'))).toBe(true);
    const session = cookies.find((c) => c.startsWith('pgfleet_sso='))!.split(';')[0]!;
    const page = await addon('GET', `/sso/resources/${body.uuid}`, undefined, { cookie: session, authorization: '' });
    expect(page.status).toBe(200);
    expect(page.text).toContain('available');
    expect(page.text).toContain(body.name);
    expect(page.text).toContain('creating.tenant.trying');
    // The session opens this database only.
    expect((await addon('GET', `/sso/resources/${other.id}`, undefined, { cookie: session, authorization: '' })).status).toBe(403);

    // Each token signs in once: the legacy GET gets a token of its own.
    const earlier = String(Number(now) - 1);
    const legacy = await addon(
      'GET',
      `/heroku/resources/${body.uuid}?token=${ssoToken(body.uuid, SSO_SALT, earlier)}&timestamp=${earlier}&nav-data=nav-9`,
      undefined,
      { authorization: '' },
    );
    expect(legacy.status).toBe(302);

    const stale = String(Math.floor(Date.now() / 1000) - 301);
    const expired = await addon(
      'GET',
      `/heroku/resources/${body.uuid}?token=${ssoToken(body.uuid, SSO_SALT, stale)}&timestamp=${stale}`,
      undefined,
      { authorization: '' },
    );
    expect(expired.status).toBe(403);
    expect(expired.text).toMatch(/expired/);
    const forged = new URLSearchParams({ id: body.uuid, token: ssoToken(body.uuid, 'wrong-salt', now), timestamp: now });
    const bad = await addon('POST', '/sso/login', forged.toString(), {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: '',
    });
    expect(bad.status).toBe(403);
    expect(bad.text).toMatch(/not valid/);
    expect((await addon('GET', `/sso/resources/${body.uuid}`, undefined, { authorization: '' })).status).toBe(403);
  });
});
