import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { observePooler } from '../../observers/pgbouncer.ts';
import { pgIdentity } from '../../src/pg/cluster.ts';
import { poolerStatus } from '../../src/pg/pgbouncer.ts';
import { accepts } from '../../src/pg/ports.ts';
import { govern } from '../../src/pg/governor.ts';
import { createTenant, dropTenant, tenantUrl, type Tenant } from '../../src/pg/tenant.ts';
import { testTenant } from '../support/tenants.ts';
import type { LocalProvider } from '../../src/providers/local.ts';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { PROVIDERS } from '../../src/providers/registry.ts';
import { initializeServer } from '../../src/replication/initialize.ts';
import { createAuthority, issueServerCertificate } from '../../src/tls/certificates.ts';
import { certificateHosts } from '../../src/tls/postgres.ts';
import { psql } from '../support/system.ts';
import { testProviderContext } from '../support/providers.ts';
import { caClient } from '../support/tls.ts';

/** Who listens on a port, as `ss` tells it: the process and its pid. */
async function listeners(port: number): Promise<string> {
  const { stdout } = await promisify(execFile)('ss', ['-Hltnp', `sport = :${port}`]).catch((err: Error) => ({ stdout: err.message }));
  return stdout.trim() || 'nobody listens';
}

describe('the pgbouncer in front of a local server', { timeout: 120_000 }, () => {
  let context: Awaited<ReturnType<typeof testProviderContext>>;
  let provider: LocalProvider;
  let caPem: string;
  const server: ServerRecord = {
    id: randomUUID(),
    provider: 'local',
    host: null,
    port: null,
    superuserPassword: randomBytes(24).toString('base64url'),
    attrs: {},
  };
  const a = testTenant();
  const b = testTenant();
  const poolDir = () => path.join(context.home, 'servers', server.id, 'pgbouncer');
  const host = () => provider.host(server);
  const pooled = (t: Tenant, database = t.database) => tenantUrl('127.0.0.1', Number(server.attrs.pool_port), { ...t, database });

  beforeAll(async () => {
    context = await testProviderContext({ pooler: true });
    provider = PROVIDERS.local(context);
    Object.assign(server, await provider.provision(server));
    const ca = await createAuthority();
    caPem = ca.certificate;
    await initializeServer(
      host(),
      server,
      await issueServerCertificate(ca, { name: server.id, hosts: certificateHosts(server.host), validityMs: 3_600_000 }),
      { storeUrl: `file://${context.home}/archive` },
    );
    await host().start();
    const target = { host: server.host!, port: server.port!, password: server.superuserPassword };
    await createTenant(target, a);
    await createTenant(target, b);
  });
  afterAll(async () => {
    await provider?.destroy(server).catch(() => undefined);
    await context?.remove();
  });

  it('runs as the Postgres user with a pid file of its own, and lets each tenant into its own database', async () => {
    expect(server.attrs.pool_port).toMatch(/^\d+$/);
    await host().refreshPool();
    const { running, pid } = await poolerStatus(poolDir());
    expect(running).toBe(true);
    const owner = (await fs.stat(`/proc/${pid}`)).uid;
    expect(owner).toBe(pgIdentity()?.uid ?? process.getuid!());
    expect(await psql(pooled(a), "select current_user || ' ' || current_database()")).toBe(`${a.role} ${a.database}`);
    const client = caClient(pooled(b), caPem);
    await client.connect();
    expect((await client.query('select $1::int + 1 as n', [41])).rows[0].n).toBe(42);
    await client.end();
    // No password in any file: the verifiers Postgres holds, and the settings.
    for (const file of await fs.readdir(poolDir())) {
      const text = await fs.readFile(path.join(poolDir(), file), 'utf8');
      expect(text).not.toContain(a.password);
      expect(text).not.toContain(server.superuserPassword);
    }
  });

  it("refuses a tenant another tenant's database, the superuser, and its admin console", async () => {
    await expect(psql(pooled(a, b.database), 'select 1')).rejects.toThrow(/login rejected/);
    await expect(psql(pooled({ ...b, password: a.password }), 'select 1')).rejects.toThrow(/authentication failed/);
    const superuser = { database: a.database, role: 'postgres', password: server.superuserPassword };
    await expect(psql(tenantUrl('127.0.0.1', Number(server.attrs.pool_port), superuser), 'select 1')).rejects.toThrow(
      /authentication failed|login rejected/,
    );
    await expect(psql(pooled(a, 'pgbouncer'), 'show pools')).rejects.toThrow(/login rejected|not allowed/);
  });

  it('is observed: alive to the provider, its pools to the stats user', async () => {
    expect((await host().observe()).pool_alive).toBe('true');
    const seen = await observePooler('127.0.0.1', Number(server.attrs.pool_port), server.superuserPassword);
    expect(seen).toMatchObject({ pool_reachable: 'true', pool_waiting_clients: '0' });
  });

  it('is refreshed in place: the same process learns a new tenant, and forgets a dropped one', async () => {
    const before = (await poolerStatus(poolDir())).pid;
    const c = testTenant();
    await createTenant({ host: server.host!, port: server.port!, password: server.superuserPassword }, c);
    await expect(psql(pooled(c), 'select 1')).rejects.toThrow();
    await host().refreshPool();
    expect(await psql(pooled(c), 'select 1')).toBe('1');
    await dropTenant({ host: server.host!, port: server.port!, password: server.superuserPassword }, c);
    await host().refreshPool();
    const ini = await fs.readFile(path.join(poolDir(), 'pgbouncer.ini'), 'utf8');
    expect([ini.includes(a.database), ini.includes(c.database)]).toEqual([true, false]);
    expect((await poolerStatus(poolDir())).pid).toBe(before);
  });

  it('serialises refreshes: several workers refreshing one pooler at once all succeed, and every tenant gets in', async () => {
    const target = { host: server.host!, port: server.port!, password: server.superuserPassword };
    const made = Array.from({ length: 4 }, () => testTenant());
    for (const t of made) await createTenant(target, t);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => host().refreshPool()));
    expect(results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []))).toEqual([]);
    for (const t of made) expect(await psql(pooled(t), 'select current_user')).toBe(t.role);
  });

  it('holds a tenant to its plan through the pooler as directly: a lifted statement timeout is cancelled', async () => {
    const strict = { ...testTenant(), statementTimeoutMs: 1500 };
    const target = { host: server.host!, port: server.port!, password: server.superuserPassword };
    await createTenant(target, strict);
    await host().refreshPool();
    const client = caClient(pooled(strict), caPem);
    await client.connect();
    try {
      // In one transaction: the pool keeps it on one server connection, where the SET holds.
      let done = false;
      const sleeping = (async () => {
        try {
          await client.query('begin');
          await client.query('set local statement_timeout = 0');
          await client.query('select pg_sleep(60)');
        } finally {
          done = true;
        }
      })();
      sleeping.catch(() => undefined);
      const cancelled: number[] = [];
      while (!done) {
        const [governed] = await govern(target, [strict], { previousSizes: {} });
        cancelled.push(...governed!.cancelled);
        await new Promise((r) => setTimeout(r, 250));
      }
      await expect(sleeping).rejects.toThrow(/canceling statement due to user request/);
      expect(cancelled.length).toBeGreaterThan(0);
    } finally {
      await client.end().catch(() => undefined);
    }
  });

  it("holds a tenant to its size through the pooler, and keeps the server's files from it there too", async () => {
    const target = { host: server.host!, port: server.port!, password: server.superuserPassword };
    const probe = { ...testTenant() };
    await createTenant(target, probe);
    const empty = (await govern(target, [probe], { previousSizes: {} }))[0]!.sizeBytes;
    const small = { ...testTenant(), sizeLimitBytes: empty + 4 * 1024 ** 2 };
    await createTenant(target, small);
    await host().refreshPool();
    const pooledAs = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
      const c = caClient(pooled(small), caPem);
      c.on('error', () => undefined);
      await c.connect();
      try {
        return await fn(c);
      } finally {
        await c.end().catch(() => undefined);
      }
    };
    await pooledAs(async (c) => {
      await expect(c.query(`select pg_read_file('PG_VERSION')`)).rejects.toThrow(/permission denied/);
      await c.query(`create table big as select g as n, repeat('x', 1000) as pad from generate_series(1, 8000) g`);
    });
    const [over] = await govern(target, [small], { previousSizes: {} });
    expect(over).toMatchObject({ overSize: true, settingsRestored: true });
    // The pooler's server connections from before the limit were ended; new ones are read-only.
    await pooledAs(async (c) => {
      await expect(c.query("insert into big values (0, 'x')")).rejects.toThrow(/read-only transaction/);
      expect((await c.query<{ n: number }>('select count(*)::int as n from big')).rows[0]!.n).toBe(8000);
    });
  });

  it('stops with its server (a fence takes no connection), comes back with it, and goes with it', async () => {
    const port = Number(server.attrs.pool_port);
    await host().stop('kill');
    // Once in a few full-suite runs the port still answered here: say who listens on it.
    await expect
      .poll(async () => ((await accepts('127.0.0.1', port)) ? `answered: ${await listeners(port)}` : 'refused'), { timeout: 2000 })
      .toBe('refused');
    expect((await host().observe()).pool_alive).toBe('false');
    await host().start();
    await host().refreshPool();
    expect(await psql(pooled(a), 'select 1')).toBe('1');

    // Killed on its own, it leaves its pid file behind; a refresh starts it again.
    const { pid } = await poolerStatus(poolDir());
    process.kill(pid!, 'SIGKILL');
    await expect.poll(async () => (await poolerStatus(poolDir())).running).toBe(false);
    await host().refreshPool();
    expect((await poolerStatus(poolDir())).pid).not.toBe(pid);
    expect(await psql(pooled(a), 'select 1')).toBe('1');

    const last = (await poolerStatus(poolDir())).pid!;
    await provider.destroy(server);
    expect(await accepts('127.0.0.1', port)).toBe(false);
    expect(existsSync(`/proc/${last}/cmdline`) && (await fs.readFile(`/proc/${last}/cmdline`, 'utf8')).includes('pgbouncer.ini')).toBe(
      false,
    );
    expect(existsSync(poolDir())).toBe(false);
  });
});
