import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEphemeralPostgres, type EphemeralPostgres } from '../../src/pg/ephemeral.ts';
import { govern, type Governed } from '../../src/pg/governor.ts';
import { privateMemory } from '../../src/pg/memory.ts';
import { createTenant, type Tenant } from '../../src/pg/tenant.ts';
import { testTenant } from '../support/tenants.ts';

/** Tenants on one real server, reached from their own connections as their customers would. */
describe('tenants on a shared server', () => {
  let server: EphemeralPostgres;
  const target = () => ({ host: '127.0.0.1', port: server.port, password: server.password });
  const newTenant = testTenant;
  /** As the tenant, over plain TCP: this test server has no certificate, and only the tenant's rights are under test. */
  const login = (t: Pick<Tenant, 'role' | 'password' | 'database'>): pg.ClientConfig => ({
    host: '127.0.0.1',
    port: server.port,
    user: t.role,
    password: t.password,
    database: t.database,
  });

  async function as<T>(tenant: Tenant, fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client(login(tenant));
    client.on('error', () => undefined);
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  beforeAll(async () => {
    server = await startEphemeralPostgres();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('are created side by side: a burst of provisions does not fail on each other', async () => {
    const tenants = Array.from({ length: 24 }, () => newTenant());
    const results = await Promise.allSettled(tenants.map((t) => createTenant(target(), t)));
    expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    for (const t of tenants.slice(0, 3))
      expect(await as(t, async (c) => (await c.query('select current_database() as db')).rows[0].db)).toBe(t.database);
  });

  it('cannot set defaults on their database: the platform owns it, the tenant owns what is in it', async () => {
    const t = newTenant();
    await createTenant(target(), t);
    await as(t, async (c) => {
      await expect(c.query(`alter database ${t.database} set statement_timeout = 0`)).rejects.toThrow(/must be owner/);
      await c.query('create table mine (n int)');
      await c.query('create schema extra');
      await c.query('create table extra.more (n int)');
      await c.query('create temporary table scratch (n int)');
    });
  });

  /** What the platform runs every few seconds, run here by the test while the tenant works. */
  async function governing<T>(
    tenant: Tenant,
    work: Promise<T>,
    previousSizes: Record<string, number> = {},
  ): Promise<{ result: PromiseSettledResult<T>; seen: Governed[] }> {
    const seen: Governed[] = [];
    let done = false;
    const settled = work
      .then(
        (value) => ({ status: 'fulfilled' as const, value }),
        (reason: unknown) => ({ status: 'rejected' as const, reason }),
      )
      .finally(() => (done = true));
    while (!done) {
      seen.push(...(await govern(target(), [tenant], { previousSizes, memoryOf: privateMemory })));
      await Promise.race([settled, new Promise((r) => setTimeout(r, 250))]);
    }
    return { result: await settled, seen };
  }

  const message = (r: PromiseSettledResult<unknown>) => (r.status === 'rejected' ? String(r.reason) : 'it finished');

  it('cannot lift the statement timeout: a statement past it is cancelled whatever the session set', async () => {
    const t = newTenant({ statementTimeoutMs: 1500 });
    await createTenant(target(), t);
    const { result, seen } = await governing(
      t,
      as(t, (c) => c.query('set statement_timeout = 0').then(() => c.query('select pg_sleep(60)'))),
    );
    expect(message(result)).toMatch(/canceling statement due to user request/);
    expect(seen.some((g) => g.cancelled.length > 0)).toBe(true);
  });

  it('cannot keep a statement alive by catching the cancel: its session ends', async () => {
    const t = newTenant({ statementTimeoutMs: 1000 });
    await createTenant(target(), t);
    const stubborn = `do $$ begin for i in 1..600 loop
      begin perform pg_sleep(0.1); exception when query_canceled then null; end; end loop; end $$`;
    const { result, seen } = await governing(
      t,
      as(t, (c) => c.query('set statement_timeout = 0').then(() => c.query(stubborn))),
    );
    expect(message(result)).toMatch(/terminating connection due to administrator command|Connection terminated/);
    expect(seen.flatMap((g) => g.terminated.map((x) => x.why))).toContain('its statement ran past the timeout and would not be cancelled');
  });

  it('cannot keep defaults it gave its own role: they are reset to the plan', async () => {
    const t = newTenant({ statementTimeoutMs: 2000 });
    await createTenant(target(), t);
    await as(t, async (c) => {
      await c.query('alter role current_user set statement_timeout = 0');
      await c.query(`alter role current_user in database ${t.database} set work_mem = '2000GB'`);
      // Its own business: kept.
      await c.query('alter role current_user set search_path = app, public');
    });
    expect(await as(t, async (c) => (await c.query('show statement_timeout')).rows[0].statement_timeout)).toBe('0');
    const [governed] = await govern(target(), [t], { previousSizes: {} });
    expect(governed?.settingsRestored).toBe(true);
    expect(
      await as(t, async (c) => [
        (await c.query('show statement_timeout')).rows[0].statement_timeout,
        (await c.query('show work_mem')).rows[0].work_mem,
        (await c.query('show search_path')).rows[0].search_path,
      ]),
    ).toEqual(['2s', '4MB', 'app, public']);
    // Looking again changes nothing.
    expect((await govern(target(), [t], { previousSizes: {} }))[0]?.settingsRestored).toBe(false);
    await as(t, async (c) => expect(c.query('set temp_file_limit = -1')).rejects.toThrow(/permission denied/));
  });

  it('cannot use more memory than its plan, whatever work_mem it sets', async () => {
    const t = newTenant({ memoryLimitBytes: 64 * 1024 ** 2, statementTimeoutMs: 0 });
    await createTenant(target(), t);
    const sort = `select count(*) from (select g from generate_series(1, 4000000) g order by g desc) s`;
    const { result, seen } = await governing(
      t,
      as(t, (c) => c.query(`set work_mem = '2000GB'`).then(() => c.query(sort))),
    );
    expect(message(result)).toMatch(/terminating connection due to administrator command|Connection terminated/);
    expect(seen.flatMap((g) => g.terminated.map((x) => x.why)).some((why) => /memory/.test(why))).toBe(true);
  });

  it(
    'cannot grow past its size: writes are refused, ' + 'a session that lifts read-only and grows it ends, and deleting is allowed',
    async () => {
      const probe = newTenant();
      await createTenant(target(), probe);
      const empty = (await govern(target(), [probe], { previousSizes: {} }))[0]!.sizeBytes;
      const t = newTenant({ sizeLimitBytes: empty + 8 * 1024 ** 2 });
      await createTenant(target(), t);
      const fill = (rows: number) => `insert into big select g, repeat('x', 1000) from generate_series(1, ${rows}) g`;
      await as(t, (c) => c.query('create table big (n int, pad text)').then(() => c.query(fill(12_000))));
      // A session open when the limit comes into force ends; new ones are read-only.
      const holder = new pg.Client(login(t));
      holder.on('error', () => undefined);
      await holder.connect();
      const [over] = await govern(target(), [t], { previousSizes: {} });
      expect(over).toMatchObject({ overSize: true, settingsRestored: true });
      await expect(holder.query('select 1')).rejects.toThrow();
      await as(t, async (c) => {
        await expect(c.query(fill(10))).rejects.toThrow(/read-only transaction/);
        expect((await c.query('select count(*)::int as n from big')).rows[0].n).toBe(12_000);
      });
      // Lifting read-only in the session and growing the database ends the session.
      const sizes = { [t.database]: over!.sizeBytes };
      const { result, seen } = await governing(
        t,
        as(t, async (c) => {
          await c.query('set default_transaction_read_only = off');
          for (let i = 0; i < 200; i++) await c.query(fill(2000));
        }),
        sizes,
      );
      expect(message(result)).toMatch(/terminating connection due to administrator command|Connection terminated|not queryable/);
      expect(seen.flatMap((g) => g.terminated.map((x) => x.why))).toContain('it wrote past the size limit');
      // Deleting does not grow it: allowed, and once under the limit writes are back.
      await as(t, (c) =>
        c
          .query('begin read write')
          .then(() => c.query('truncate big'))
          .then(() => c.query('commit')),
      );
      const [under] = await govern(target(), [t], { previousSizes: {} });
      expect(under).toMatchObject({ overSize: false, settingsRestored: true });
      await as(t, (c) => c.query(fill(10)));
    },
  );

  it("cannot read the server files, the platform catalogs of others, or another tenant's database", async () => {
    const [a, b] = [newTenant(), newTenant()];
    await Promise.all([createTenant(target(), a), createTenant(target(), b)]);
    await as(a, async (c) => {
      await expect(c.query(`select pg_read_file('PG_VERSION')`)).rejects.toThrow(/permission denied/);
      await expect(c.query('create table f (l text)').then(() => c.query(`copy f from '/etc/passwd'`))).rejects.toThrow(
        /permission denied|must be superuser/,
      );
      await expect(c.query('select * from pg_hba_file_rules')).rejects.toThrow(/permission denied/);
      await expect(c.query(`select * from pg_ls_dir('.')`)).rejects.toThrow(/permission denied/);
    });
    const crossing = new pg.Client(login({ ...a, database: b.database }));
    await expect(crossing.connect()).rejects.toThrow(/permission denied for database/);
    await crossing.end().catch(() => undefined);
  });
});
