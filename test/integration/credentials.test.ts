import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { enqueue } from '../../src/queue/jobs.ts';
import { waitFor, type TestDatabase } from '../support/db.ts';
import { addonFetch, adminUrl, psql, TEST_SEALER, TOKEN, type System, useSystemWithPlatform } from '../support/system.ts';
import { caClient, verifyFull, untilRefused } from '../support/tls.ts';

describe("credentials: rotating the owner's password, and named credentials", { timeout: 180_000 }, () => {
  const ctx = useSystemWithPlatform(['web', 'worker', 'clock'], { PGFLEET_ANSWER_WITHIN: '20' });
  const { platform } = ctx;
  let db: TestDatabase;
  let system: System;
  let ca: string;
  const id = randomUUID();
  let config: Record<string, string>;
  let admin: string;

  beforeAll(async () => {
    ({ db, system } = ctx);
    ca = await readFile(system.caFile, 'utf8');
    const res = await addonFetch(system, 'POST', '/heroku/resources', {
      uuid: id,
      plan: 'shared',
      region: 'us',
      callback_url: `${platform.url}/addons/${id}`,
      oauth_grant: { code: 'g' },
    });
    expect(res.status).toBe(200);
    config = ((await res.json()) as { config: Record<string, string> }).config;
    admin = await adminUrl(db.pool, (await resource()).servers[0].id);
    await psql(config.PGFLEET_URL!, 'create table notes (body text); insert into notes values ($$kept$$)');
  });

  const made = new Map<string, { url: string }>();
  const credentialsOf = async (name: string) => made.get(name);
  const resource = async () => (await system.api('GET', `/api/resources/${id}`)).body;
  const credentials = async () =>
    (await system.api('GET', `/api/resources/${id}/credentials`)).body as { name: string; state: string; role: string }[];
  const owner = () => new URL(config.PGFLEET_URL!).username;
  const verifier = async () => psql(admin, `select rolpassword from pg_authid where rolname = '${owner()}'`);
  const sealedPassword = async () =>
    (await db.pool.query<{ sealed: string }>('select password_sealed as sealed from resources where id = $1', [id])).rows[0]!.sealed;
  const jobsLeft = async (task: string) =>
    (await db.pool.query('select 1 from jobs where entity_id = $1 and task = $2', [id, task])).rowCount === 0;

  async function session(url: string): Promise<pg.Client> {
    const client = caClient(url, ca, { connectionTimeoutMillis: 10_000 });
    client.on('error', () => undefined);
    await client.connect();
    return client;
  }

  it(
    "rotates the owner's password: sessions logged in keep working, " + 'the old password logs in no more, the platform gets the new URL',
    async () => {
      const before = config;
      const direct = await session(before.PGFLEET_URL!);
      const pooled = await session(before.PGFLEET_CONNECTION_POOL_URL!);
      await pooled.query('select 1');
      const calls = platform.callsTo('PATCH', `/addons/${id}/config`).length;
      // A follower's row: the same role, so the same password (its server gets it by replication).
      const follower = randomUUID();
      await db.pool.query(
        `insert into resources (id, plan, region, aws_region, database_name, role_name, password_sealed, follows)
       select $2, 'dedicated', region, aws_region, database_name, role_name, password_sealed, id from resources where id = $1`,
        [id, follower],
      );

      const res = await system.api('POST', `/api/resources/${id}/credentials/rotate`);
      expect(res.status).toBe(202);
      expect(res.body.state).toBe('rotating');
      // Another rotation while one runs is refused, and changes nothing.
      expect((await system.api('POST', `/api/resources/${id}/credentials/rotate`)).status).toBe(409);

      const patch = await waitFor(
        'the platform to get the new config',
        async () => platform.callsTo('PATCH', `/addons/${id}/config`)[calls],
        60_000,
      );
      const handed = Object.fromEntries((JSON.parse(patch.body).config as { name: string; value: string }[]).map((v) => [v.name, v.value]));
      expect(Object.keys(handed).sort()).toEqual(['PGFLEET_CONNECTION_POOL_URL', 'PGFLEET_URL']);
      expect(new URL(handed.PGFLEET_URL!).username).toBe(owner());
      expect(new URL(handed.PGFLEET_URL!).password).not.toBe(new URL(before.PGFLEET_URL!).password);
      await waitFor('the resource to be available', async () => (await resource()).state === 'available');
      expect((await resource()).config).toEqual(handed);
      const { rows } = await db.pool.query<{ sealed: string }>('select password_sealed as sealed from resources where id = $1', [follower]);
      expect(TEST_SEALER.open(rows[0]!.sealed)).toBe(decodeURIComponent(new URL(handed.PGFLEET_URL!).password));

      expect((await direct.query('select count(*)::int as n from notes')).rows[0].n).toBe(1);
      // A client of the pooler logged in before keeps working too, on a server connection made since.
      const others = `from pg_stat_activity where usename = '${owner()}'
       and pid <> ${(await direct.query('select pg_backend_pid() as pid')).rows[0].pid}`;
      await psql(admin, `select pg_terminate_backend(pid) ${others}`);
      await waitFor('the terminated sessions to end', async () => (await psql(admin, `select count(*) ${others}`)) === '0', 10_000);
      // pgbouncer may hand out a server connection whose end it has not read yet: the client then
      // gets that connection's FATAL (57P01) once, as any pgbouncer client would, and the next
      // query logs in anew, which is what this checks.
      const count = () => pooled.query<{ n: number }>('select count(*)::int as n from notes');
      const counted = await count().catch((err: { code?: string }) => (err.code === '57P01' ? count() : Promise.reject(err)));
      expect(counted.rows[0]!.n).toBe(1);
      await direct.end();
      await expect(psql(before.PGFLEET_URL!, 'select 1')).rejects.toThrow(/password authentication failed/);
      await expect(psql(before.PGFLEET_CONNECTION_POOL_URL!, 'select 1')).rejects.toThrow(
        /password authentication failed|SASL authentication failed/,
      );
      await pooled.end();
      expect(await psql(verifyFull(handed.PGFLEET_URL!, system.caFile), 'select count(*) from notes')).toBe('1');
      expect(await psql(handed.PGFLEET_CONNECTION_POOL_URL!, 'select current_user')).toBe(owner());
      config = handed;
    },
  );

  it('converges when the rotation step runs again, or resumes after a crash once the server took the new password', async () => {
    const [sealed, stored] = [await sealedPassword(), await verifier()];
    await enqueue(db.pool, { task: 'rotate_password', entityId: id, key: 'rotate_password' });
    await waitFor('the repeated step', () => jobsLeft('rotate_password'), 30_000);
    expect([await sealedPassword(), await verifier()]).toEqual([sealed, stored]);
    expect(await psql(config.PGFLEET_URL!, 'select 1')).toBe('1');

    // A crash after the server took the pending password, before the control database made it current.
    const next = 'crashed-rotation-password-0123456789abcdef';
    await db.pool.query('update resources set password_pending_sealed = $2 where id = $1', [id, TEST_SEALER.seal(next)]);
    await psql(admin, `alter role ${owner()} password '${next}'`);
    const set = await verifier();
    await expect(psql(config.PGFLEET_URL!, 'select 1')).rejects.toThrow(/password authentication failed/);
    await enqueue(db.pool, { task: 'rotate_password', entityId: id, key: 'rotate_password' });
    await waitFor(
      'the pending password to become current',
      async () => (await db.pool.query('select 1 from resources where id = $1 and password_pending_sealed is null', [id])).rowCount === 1,
      30_000,
    );
    expect(TEST_SEALER.open(await sealedPassword())).toBe(next);
    // The server held it already: the step left its verifier as it was.
    expect(await verifier()).toBe(set);
    config = (await resource()).config;
    expect(await psql(config.PGFLEET_URL!, 'select current_user')).toBe(owner());
    expect(await psql(config.PGFLEET_CONNECTION_POOL_URL!, 'select current_user')).toBe(owner());
  });

  it(
    'makes a read-only named credential that may SELECT, also future tables, ' + 'and nothing else, directly and through the pool',
    async () => {
      const res = await system.api('POST', `/api/resources/${id}/credentials`, { name: 'analyst', privileges: 'read' });
      expect(res.status).toBe(201);
      expect(res.body).toMatchObject({ name: 'analyst', privileges: 'read', state: 'active', role: `${owner()}_analyst` });
      const { url, pooledUrl } = res.body as { url: string; pooledUrl: string };
      made.set('analyst', { url });
      expect(await psql(verifyFull(url, system.caFile), 'select count(*) from notes')).toBe('1');
      expect(await psql(pooledUrl, 'select body from notes')).toBe('kept');
      await expect(psql(url, `insert into notes values ('no')`)).rejects.toThrow(/permission denied for table notes/);
      await expect(psql(url, 'create table mine (n int)')).rejects.toThrow(/permission denied for schema public/);
      await expect(psql(url, 'create temporary table mine (n int)')).rejects.toThrow(/permission denied to create temporary tables/);
      await psql(config.PGFLEET_URL!, 'create table later (n int); insert into later values (3)');
      expect(await psql(url, 'select n from later')).toBe('3');
      // The plan's rules hold it as they hold the owner: its timeout, its share of the connections.
      expect(await psql(url, 'show statement_timeout')).toBe('30s');
      expect(await psql(admin, `select rolconnlimit from pg_roles where rolname = '${owner()}_analyst'`)).toBe('5');
      expect(await psql(admin, `select datconnlimit from pg_database where datname = '${new URL(url).pathname.slice(1)}'`)).toBe('21');

      const listed = await system.api('GET', `/api/resources/${id}/credentials`);
      expect(listed.body.map((c: { name: string; privileges: string }) => [c.name, c.privileges])).toEqual([
        ['default', 'owner'],
        ['analyst', 'read'],
      ]);
      expect(JSON.stringify(listed.body)).not.toContain(new URL(url).password);
      // Named credentials are not config vars: the app's config is left alone.
      expect(Object.keys((await resource()).config).sort()).toEqual(['PGFLEET_CONNECTION_POOL_URL', 'PGFLEET_URL']);

      expect((await system.api('POST', `/api/resources/${id}/credentials`, { name: 'analyst', privileges: 'write' })).status).toBe(409);
      expect((await system.api('POST', `/api/resources/${id}/credentials`, { name: 'default', privileges: 'read' })).status).toBe(422);
      expect((await system.api('POST', `/api/resources/${id}/credentials`, { name: 'nameless' })).status).toBe(422);
      expect((await system.api('POST', `/api/resources/${id}/credentials`, { name: 'Bad Name' })).status).toBe(422);
      expect((await system.api('POST', `/api/resources/${id}/credentials`, { name: 'x', privileges: 'all' })).status).toBe(422);
      expect((await system.api('DELETE', `/api/resources/${id}/credentials/nobody`)).status).toBe(404);
    },
  );

  /** Open connections one by one until one is refused; all closed again. */
  const openUntilRefused = (url: string, keep: pg.Client[] = []) =>
    untilRefused(() => caClient(url, ca, { connectionTimeoutMillis: 10_000 }), 30, keep);

  it("holds a named credential to the plan: its own timeout is put back, and it shares the plan's connections with the owner", async () => {
    const { url } = (await credentialsOf('analyst'))!;
    await psql(url, 'alter role current_user set statement_timeout = 0');
    await waitFor(
      "the plan's timeout to be back for the named role",
      async () => (await psql(url, 'show statement_timeout')) === '30s',
      20_000,
      250,
    );

    // Server connections the pooler keeps (the earlier pooled login's) count against the role's limit too.
    await psql(admin, `select pg_terminate_backend(pid) from pg_stat_activity where usename = '${owner()}_analyst'`);
    const analyst = await openUntilRefused(url);
    expect(analyst).toEqual({ opened: 5, refused: expect.stringMatching(/too many connections for role/) });
    // The analyst holding its 5, the owner has what is left of the plan's 20 (and the platform's 1).
    const held = await Promise.all(Array.from({ length: 5 }, () => session(url)));
    const ownerLeft = await openUntilRefused(config.PGFLEET_URL!, held);
    expect(ownerLeft.refused).toMatch(/too many connections for database/);
    expect(ownerLeft.opened).toBeLessThanOrEqual(16);
  });

  it('makes a read-write named credential that changes rows but creates nothing', async () => {
    const res = await system.api('POST', `/api/resources/${id}/credentials`, { name: 'writer', privileges: 'write' });
    expect(res.status).toBe(201);
    await psql(res.body.pooledUrl, `insert into notes values ('by the writer')`);
    expect(await psql(res.body.url, 'select count(*) from notes')).toBe('2');
    await expect(psql(res.body.url, 'create table mine (n int)')).rejects.toThrow(/permission denied for schema public/);
  });

  it('rotates a named credential: the old password logs in no more, the new one does', async () => {
    const before = (await system.api('POST', `/api/resources/${id}/credentials`, { name: 'rotated', privileges: 'read' })).body as {
      url: string;
    };
    const res = await system.api('POST', `/api/resources/${id}/credentials/rotated/rotate`);
    expect(res.status).toBe(202);
    await waitFor('the rotation', async () => (await credentials()).find((c) => c.name === 'rotated')?.state === 'active');
    expect(await psql(res.body.pooledUrl, 'select current_user')).toBe(`${owner()}_rotated`);
    await expect(psql(before.url, 'select 1')).rejects.toThrow(/password authentication failed/);
  });

  it('destroys a named credential: its sessions end, it logs in no more, and its role goes', async () => {
    const made = (await system.api('POST', `/api/resources/${id}/credentials`, { name: 'leaving', privileges: 'read' })).body as {
      url: string;
      pooledUrl: string;
    };
    const open = caClient(made.url, ca, { connectionTimeoutMillis: 10_000 });
    const ended: Error[] = [];
    open.on('error', (err) => ended.push(err));
    await open.connect();
    expect((await open.query('select count(*)::int as n from notes')).rows[0].n).toBe(2);
    const res = await system.api('DELETE', `/api/resources/${id}/credentials/leaving`);
    expect(res.status).toBe(202);
    expect(res.body.state).toBe('destroying');
    await waitFor('the credential to go', async () => !(await credentials()).some((c) => c.name === 'leaving'), 30_000);
    await expect(open.query('select 1')).rejects.toThrow();
    expect(ended.map((e) => e.message).join(' ')).toMatch(/terminating connection due to administrator command/);
    await open.end().catch(() => undefined);
    await expect(psql(made.url, 'select 1')).rejects.toThrow(/password authentication failed|role .* does not exist/);
    await expect(psql(made.pooledUrl, 'select 1')).rejects.toThrow(
      /password authentication failed|SASL authentication failed|not allowed|login rejected/,
    );
    expect(await psql(admin, `select count(*) from pg_roles where rolname = '${owner()}_leaving'`)).toBe('0');
    // The others and the owner are untouched.
    expect((await credentials()).map((c) => c.name)).toEqual(['default', 'analyst', 'writer', 'rotated']);
    expect(await psql(config.PGFLEET_URL!, 'select count(*) from notes')).toBe('2');
  });

  it('does the same from the command line', async () => {
    const cli = async (...args: string[]) =>
      (
        await promisify(execFile)(process.execPath, [path.resolve('bin/pgfleet.js'), 'credentials', ...args], {
          env: { ...process.env, PGFLEET_API_URL: system.running.url!, OPERATOR_TOKEN: TOKEN, PGFLEET_HOME: system.config.home },
        })
      ).stdout;
    const created = await cli('create', id, 'reporter', '--read-only');
    expect(created).toMatch(/^created reporter \(\w+_reporter, read, active\)/);
    const url = /url: +(\S+)/.exec(created)![1]!;
    expect(await psql(url, 'select count(*) from notes')).toBe('2');
    expect(await cli(id)).toMatch(/^reporter +\w+_reporter +read +active$/m);
    const rotated = /url: +(\S+)/.exec(await cli('rotate', id, 'reporter'))![1]!;
    await waitFor('the rotation', async () => (await credentials()).find((c) => c.name === 'reporter')?.state === 'active');
    expect(await psql(rotated, 'select current_user')).toMatch(/_reporter$/);
    expect(await cli('destroy', id, 'reporter')).toMatch(/destroying reporter/);
    await waitFor('the credential to go', async () => !(await credentials()).some((c) => c.name === 'reporter'), 30_000);
    expect(await cli('rotate', id)).toMatch(/rotating the owner's password/);
    await waitFor(
      "the owner's rotation",
      async () => (await resource()).state === 'available' && (await credentials())[0]!.state === 'active',
      30_000,
    );
    expect((await resource()).config.PGFLEET_URL).not.toBe(config.PGFLEET_URL);
  });
});
