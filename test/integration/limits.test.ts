import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { recordUsage } from '../../src/resources/limits.ts';
import { useTestDatabase, waitFor } from '../support/db.ts';
import { addonFetch, psql, useSystem } from '../support/system.ts';
import { verifyFull } from '../support/tls.ts';

/** The plan's limits on a shared server, held by the running system from outside the tenant's sessions. */
describe('plan limits on a shared server', () => {
  const ctx = useSystem(['web', 'worker', 'clock']);

  async function provisionShared(): Promise<{ id: string; url: string }> {
    const id = randomUUID();
    expect([200, 202]).toContain(
      (await addonFetch(ctx.system, 'POST', '/heroku/resources', { uuid: id, plan: 'shared', region: 'us' })).status,
    );
    const url = await waitFor(
      'the shared database',
      async () => {
        const { body } = await ctx.system.api('GET', `/api/resources/${id}`);
        return body.state === 'available' ? (body.config.PGFLEET_URL as string) : undefined;
      },
      60_000,
      250,
    );
    return { id, url };
  }

  it('puts back a statement timeout the tenant lifted on its own role, and records its size', async () => {
    const { id, url } = await provisionShared();
    await psql(url, 'alter role current_user set statement_timeout = 0');
    await waitFor(
      "the plan's timeout to be back for new sessions",
      async () => (await psql(url, 'show statement_timeout')) === '30s',
      20_000,
      250,
    );
    const size = await waitFor(
      'the size to be recorded',
      async () => {
        const { rows } = await ctx.db.pool.query<{ size: string | null }>(
          `select attrs->'size_bytes' as size from resources where id = $1`,
          [id],
        );
        return rows[0]?.size ?? undefined;
      },
      20_000,
      250,
    );
    expect(Number(size)).toBeGreaterThan(1024 * 1024);
  });
});

/** What one look found, kept on the resource; the customer hears of each change once. */
describe("recording a tenant's size", () => {
  const ctx = useTestDatabase();

  it('tells the customer once when its database passes its size, and once when it is back under', async () => {
    const id = randomUUID();
    await ctx.db.pool.query(
      `insert into resources (id, plan, region, aws_region, database_name, role_name, password_sealed)
       values ($1, 'shared', 'us', 'us-east-1', $2, $3, 'x')`,
      [id, `d${id.slice(0, 8)}`, `u${id.slice(0, 8)}`],
    );
    const tenant = { id, overSize: false, sizeLimitBytes: 1024 ** 3 };
    const notices = async () =>
      (
        await ctx.db.pool.query<{ phase: string; body: string }>(
          'select phase, body from notifications where resource_id = $1 order by id',
          [id],
        )
      ).rows;
    await recordUsage(ctx.db.pool, tenant, { sizeBytes: 1.2 * 1024 ** 3, overSize: true });
    await recordUsage(ctx.db.pool, { ...tenant, overSize: true }, { sizeBytes: 1.3 * 1024 ** 3, overSize: true });
    expect(await notices()).toEqual([
      { phase: 'size_limit', body: expect.stringMatching(/holds 1\.2 GB, more than the 1\.0 GB its plan allows/) },
    ]);
    await recordUsage(ctx.db.pool, { ...tenant, overSize: true }, { sizeBytes: 0.5 * 1024 ** 3, overSize: false });
    expect((await notices()).map((n) => n.phase)).toEqual(['size_limit', 'size_ok']);
    const { rows } = await ctx.db.pool.query<{ over: string }>(`select attrs->'over_size' as over from resources where id = $1`, [id]);
    expect(rows[0]?.over).toBe('false');
  });
});

/**
 * A shared server takes tenants only while their plans' connection limits fit in its
 * max_connections (here 100: four tenants of 20 + 1 after the platform's 13). Before, 50 tenants
 * of 20 shared 100 slots, and five holding their limit locked every other tenant out.
 */
describe('connections on shared servers', () => {
  const ctx = useSystem(['web', 'worker', 'clock'], { PGFLEET_SHARED_MAX_CONNECTIONS: '100' });

  async function provision(plan: string): Promise<{ id: string; url: string; server: string }> {
    const id = randomUUID();
    expect([200, 202]).toContain((await addonFetch(ctx.system, 'POST', '/heroku/resources', { uuid: id, plan, region: 'us' })).status);
    return waitFor(
      'the shared database',
      async () => {
        const { body } = await ctx.system.api('GET', `/api/resources/${id}`);
        return body.state === 'available'
          ? { id, url: body.config.PGFLEET_URL as string, server: body.servers[0].id as string }
          : undefined;
      },
      60_000,
      250,
    );
  }

  async function hold(url: string, n: number): Promise<pg.Client[]> {
    const clients = Array.from(
      { length: n },
      () => new pg.Client({ connectionString: verifyFull(url, ctx.system.caFile), connectionTimeoutMillis: 10_000 }),
    );
    for (const c of clients) c.on('error', () => undefined);
    const results = await Promise.allSettled(clients.map((c) => c.connect()));
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
    if (failed.length > 0) {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      throw new Error(`${failed.length} of ${n} connections failed: ${failed[0]}`);
    }
    return clients;
  }

  it('lets every tenant hold its whole limit at once, and moves a resize that no longer fits', async () => {
    const tenants: { id: string; url: string; server: string }[] = [];
    for (let i = 0; i < 5; i++) tenants.push(await provision('shared'));
    const held: pg.Client[] = [];
    try {
      for (const t of tenants) held.push(...(await hold(t.url, 20)));
      // Each tenant's own limit still holds (one more, the platform's slot, is free between its checks).
      await expect(hold(tenants[0]!.url, 2)).rejects.toThrow(/too many connections for role/);
    } finally {
      await Promise.all(held.map((c) => c.end().catch(() => undefined)));
    }
    expect(new Set(tenants.map((t) => t.server)).size).toBe(2);

    // shared-plus takes 61 of the 87: not left beside two others (42), so it moves.
    const crowded = tenants.find((t) => tenants.filter((o) => o.server === t.server).length >= 3)!;
    const resized = await addonFetch(ctx.system, 'PUT', `/heroku/resources/${crowded.id}`, { plan: 'shared-plus' });
    expect([200, 202]).toContain(resized.status);
    const moved = await waitFor(
      'the resize to move the database',
      async () => {
        const { body } = await ctx.system.api('GET', `/api/resources/${crowded.id}`);
        return body.state === 'available' && body.plan === 'shared-plus' && body.servers[0].id !== crowded.server
          ? (body.config.PGFLEET_URL as string)
          : undefined;
      },
      90_000,
      250,
    );
    await Promise.all((await hold(moved, 60)).map((c) => c.end()));
  });
});
