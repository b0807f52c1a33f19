import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { recordUsage } from '../../src/limits.ts';
import { useTestDatabase, waitFor } from '../support/db.ts';
import { addonFetch, psql, useSystem } from '../support/system.ts';

/** The plan's limits on a shared server, held by the running system from outside the tenant's sessions. */
describe('plan limits on a shared server', () => {
  const ctx = useSystem(['web', 'worker', 'clock']);

  async function provisionShared(): Promise<{ id: string; url: string }> {
    const id = randomUUID();
    expect([200, 202]).toContain((await addonFetch(ctx.system, 'POST', '/heroku/resources', { uuid: id, plan: 'shared', region: 'us' })).status);
    const url = await waitFor('the shared database', async () => {
      const { body } = await ctx.system.api('GET', `/api/resources/${id}`);
      return body.state === 'available' ? (body.config.PGFLEET_URL as string) : undefined;
    }, 60_000, 250);
    return { id, url };
  }

  it('puts back a statement timeout the tenant lifted on its own role, and records its size', async () => {
    const { id, url } = await provisionShared();
    await psql(url, 'alter role current_user set statement_timeout = 0');
    await waitFor('the plan\'s timeout to be back for new sessions', async () => (await psql(url, 'show statement_timeout')) === '30s', 20_000, 250);
    const size = await waitFor('the size to be recorded', async () => {
      const { rows } = await ctx.db.pool.query<{ size: string | null }>(`select attrs->'size_bytes' as size from resources where id = $1`, [id]);
      return rows[0]?.size ?? undefined;
    }, 20_000, 250);
    expect(Number(size)).toBeGreaterThan(1024 * 1024);
  });
});

/** What one look found, kept on the resource; the customer hears of each change once. */
describe('recording a tenant\'s size', () => {
  const ctx = useTestDatabase();

  it('tells the customer once when its database passes its size, and once when it is back under', async () => {
    const id = randomUUID();
    await ctx.db.pool.query(
      `insert into resources (id, plan, region, aws_region, database_name, role_name, password_sealed) values ($1, 'shared', 'us', 'us-east-1', $2, $3, 'x')`,
      [id, `d${id.slice(0, 8)}`, `u${id.slice(0, 8)}`],
    );
    const tenant = { id, overSize: false, sizeLimitBytes: 1024 ** 3 };
    const notices = async () =>
      (await ctx.db.pool.query<{ phase: string; body: string }>('select phase, body from notifications where resource_id = $1 order by id', [id])).rows;
    await recordUsage(ctx.db.pool, tenant, { sizeBytes: 1.2 * 1024 ** 3, overSize: true });
    await recordUsage(ctx.db.pool, { ...tenant, overSize: true }, { sizeBytes: 1.3 * 1024 ** 3, overSize: true });
    expect(await notices()).toEqual([{ phase: 'size_limit', body: expect.stringMatching(/holds 1\.2 GB, more than the 1\.0 GB its plan allows/) }]);
    await recordUsage(ctx.db.pool, { ...tenant, overSize: true }, { sizeBytes: 0.5 * 1024 ** 3, overSize: false });
    expect((await notices()).map((n) => n.phase)).toEqual(['size_limit', 'size_ok']);
    const { rows } = await ctx.db.pool.query<{ over: string }>(`select attrs->'over_size' as over from resources where id = $1`, [id]);
    expect(rows[0]?.over).toBe('false');
  });
});
