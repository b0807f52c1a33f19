import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type TestDatabase } from '../support/db.ts';
import { addonFetch, adminUrl, provisionHa, psql, type System, useSystemWithPlatform } from '../support/system.ts';
import { verifyFull, untilRefused } from '../support/tls.ts';

/** The CA the system under test hands out, as a file; customers' URLs are checked against it. */
let caFile: string;

/** A node-postgres client of `url`, connected, checking the server's certificate against the CA. */
async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: verifyFull(url, caFile), connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function refusal(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: verifyFull(url, caFile), connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('select 1');
  } catch (err) {
    return (err as Error).message;
  } finally {
    await client.end().catch(() => undefined);
  }
  throw new Error(`${new URL(url).username} reached ${new URL(url).pathname} on port ${new URL(url).port}`);
}

const withDatabase = (url: string, database: string) => Object.assign(new URL(url), { pathname: `/${database}` }).toString();

describe('connection pooling: a pgbouncer in front of every server', { timeout: 180_000 }, () => {
  let db: TestDatabase;
  let system: System;
  const ctx = useSystemWithPlatform(['web', 'worker', 'clock', 'router'], { PGFLEET_ANSWER_WITHIN: '20' });
  const { platform } = ctx;
  type Shared = { id: string; url: string; pooled: string; server: string; role: string };
  let a: Shared;
  let b: Shared;

  beforeAll(async () => {
    ({ db, system } = ctx);
    caFile = system.caFile;
  });

  const resource = async (id: string) => (await system.api('GET', `/api/resources/${id}`)).body;
  const serverOf = async (id: string, role = 'primary') =>
    (await resource(id)).servers.find((s: { role: string }) => s.role === role) as { id: string; port: number };
  const observation = async (serverId: string) =>
    (await system.api('GET', `/api/servers/${serverId}`)).body.observation as Record<string, string>;
  const poolDir = (serverId: string) => path.join(system.config.home, 'servers', serverId, 'pgbouncer');
  const poolerPid = async (serverId: string) =>
    Number((await readFile(path.join(poolDir(serverId), 'pgbouncer.pid'), 'utf8').catch(() => '')).trim()) || undefined;

  async function provisionShared(): Promise<Shared> {
    const uuid = randomUUID();
    const res = await addonFetch(system, 'POST', '/heroku/resources', { uuid, plan: 'shared', region: 'us' });
    expect(res.status).toBe(200);
    const { config } = (await res.json()) as { config: Record<string, string> };
    expect(Object.keys(config).sort()).toEqual(['PGFLEET_CONNECTION_POOL_URL', 'PGFLEET_URL']);
    const server = await serverOf(uuid);
    return {
      id: uuid,
      url: config.PGFLEET_URL!,
      pooled: config.PGFLEET_CONNECTION_POOL_URL!,
      server: server.id,
      role: new URL(config.PGFLEET_URL!).username,
    };
  }

  it('hands a shared database a pooled URL beside the direct one, for psql and node-postgres', async () => {
    a = await provisionShared();
    b = await provisionShared();
    expect(b.server).toBe(a.server);
    const direct = new URL(a.url);
    const pooled = new URL(a.pooled);
    expect([pooled.username, pooled.password, pooled.pathname]).toEqual([direct.username, direct.password, direct.pathname]);
    expect(pooled.port).not.toBe(direct.port);

    await psql(a.pooled, 'create table notes (body text)');
    await psql(a.pooled, `insert into notes values ('through the pool')`);
    const client = await connect(a.pooled);
    await client.query('insert into notes values ($1)', ['from node-postgres']);
    expect((await client.query('select count(*)::int as n from notes')).rows[0].n).toBe(2);
    await client.end();
    expect(await psql(a.url, 'select count(*) from notes')).toBe('2');
  });

  /** Open direct connections one by one until the server refuses one; all closed again. */
  const directUntilRefused = (url: string) =>
    untilRefused(() => new pg.Client({ connectionString: verifyFull(url, caFile), connectionTimeoutMillis: 10_000 }), 100);

  it('serves more clients than the tenant has connections: its plan allows 20, 60 share 15 through the pool', async () => {
    const admin = await adminUrl(db.pool, a.server);
    // The plan's 20, and one for the platform's check that the customer can log in.
    expect(await psql(admin, `select rolconnlimit from pg_roles where rolname = '${a.role}'`)).toBe('21');
    const direct = await directUntilRefused(a.url);
    expect(direct.refused).toMatch(/too many connections for role/);
    expect(direct.opened).toBeLessThanOrEqual(21);

    const clients: pg.Client[] = [];
    try {
      for (let i = 0; i < 60; i++) clients.push(await connect(a.pooled));
      const answers = await Promise.all(clients.map((c, i) => c.query('select $1::int as i, pg_sleep(0.05)', [i])));
      expect(answers.map((r) => r.rows[0].i)).toEqual(clients.map((_, i) => i));
      expect(Number(await psql(admin, `select count(*) from pg_stat_activity where usename = '${a.role}'`))).toBeLessThanOrEqual(15);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it('a tenant holding its whole share through the pool locks nobody else out, directly or pooled', async () => {
    const clients: pg.Client[] = [];
    let waiting: Promise<unknown>[] = [];
    try {
      for (let i = 0; i < 20; i++) clients.push(await connect(a.pooled));
      const holders = clients.slice(0, 15);
      // Each open transaction keeps a server connection: 15 is the tenant's share; 5 wait.
      for (const c of holders) await c.query('begin; select 1');
      waiting = clients.slice(15).map((c) => c.query('select 1'));
      const seen = await waitFor(
        'the observer to see clients waiting',
        async () => {
          const obs = await observation(a.server);
          return Number(obs.pool_waiting_clients) >= 5 ? obs : undefined;
        },
        30_000,
      );
      expect(seen.pool_reachable).toBe('true');

      expect(await psql(b.pooled, 'select current_user')).toBe(b.role);
      expect(await psql(b.url, 'select current_user')).toBe(b.role);
      // The rest of its own limit is kept for its direct connections.
      expect(await psql(a.url, 'select current_user')).toBe(a.role);
      for (const c of holders) await c.query('commit');
      await Promise.all(waiting);
    } finally {
      await Promise.allSettled(waiting);
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it("keeps a tenant out of another tenant's database through the pool, as directly", async () => {
    const otherDatabase = new URL(b.url).pathname.slice(1);
    expect(await refusal(withDatabase(a.pooled, otherDatabase))).toMatch(/login rejected/);
    expect(await refusal(withDatabase(a.url, otherDatabase))).toMatch(/permission denied for database/);
    // Another tenant's name with one's own password, and the server's own database.
    const impostor = Object.assign(new URL(b.pooled), { password: new URL(a.pooled).password }).toString();
    expect(await refusal(impostor)).toMatch(/authentication failed/);
    expect(await refusal(withDatabase(a.pooled, 'postgres'))).toMatch(/login rejected|no such database/);
    expect(await refusal(withDatabase(a.pooled, 'pgbouncer'))).toMatch(/login rejected|not allowed/);
  });

  it('observes the pooler, and a killed pgbouncer comes back by itself', async () => {
    await waitFor('the pooler to be observed alive', async () => (await observation(a.server)).pool_alive === 'true', 10_000);
    const pid = (await poolerPid(a.server))!;
    process.kill(pid, 'SIGKILL');
    const again = await waitFor(
      'a new pgbouncer',
      async () => {
        const now = await poolerPid(a.server);
        return now !== undefined && now !== pid ? now : undefined;
      },
      30_000,
    );
    expect(again).not.toBe(pid);
    expect(await psql(a.pooled, 'select count(*) from notes')).toBe('2');
    const server = (await system.api('GET', `/api/servers/${a.server}`)).body;
    expect(server.state).toBe('available');
  });

  it("keeps an ha database's pooled URL working across a switchover", async () => {
    const { uuid, config } = await provisionHa(system, platform);
    expect(Object.keys(config).sort()).toEqual(['PGFLEET_CONNECTION_POOL_URL', 'PGFLEET_READONLY_URL', 'PGFLEET_URL']);
    const pooled = config.PGFLEET_CONNECTION_POOL_URL!;
    const before = await serverOf(uuid);
    const standby = await serverOf(uuid, 'standby');
    await psql(pooled, 'create table kept (n int)');
    await psql(pooled, 'insert into kept values (1)');
    expect(await psql(pooled, 'select inet_server_port()')).toBe(String(before.port));

    expect((await system.api('POST', `/api/resources/${uuid}/promote`)).status).toBe(202);
    await waitFor(
      'the pooled URL to reach the new primary',
      async () => {
        const port = await psql(pooled, 'select inet_server_port()').catch(() => '');
        return port === String(standby.port) || undefined;
      },
      90_000,
    );
    await psql(pooled, 'insert into kept values (2)');
    expect(await psql(pooled, 'select count(*) from kept')).toBe('2');
    // Through the new primary's pgbouncer, not straight to its Postgres: its pools show the client.
    const client = await connect(pooled);
    try {
      await client.query('select 1');
      await waitFor(
        "the new primary's pooler to serve the client",
        async () => Number((await observation(standby.id)).pool_active_clients) >= 1,
        30_000,
      );
    } finally {
      await client.end();
    }
    expect(await psql(config.PGFLEET_URL!, 'select count(*) from kept')).toBe('2');
  });
});
