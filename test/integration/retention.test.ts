import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { openArchive } from '../../src/store/open.ts';
import { pruneDeletedArchives } from '../../src/backups/retention.ts';
import { waitFor } from '../support/db.ts';
import { addonFetch, adminUrl, psql, useSystem } from '../support/system.ts';

/**
 * What deprovisioning leaves behind goes: empty shared servers beyond one spare per region,
 * and the archives of deleted servers once their retention has passed. Here a shared server
 * has room for one tenant (40 connections: 27 after the platform's 13, one plan of 20 + 1), and the
 * system keeps archives an hour, so only the test prunes them.
 */
describe('leftovers', () => {
  const ctx = useSystem(['web', 'worker', 'clock'], { PGFLEET_SHARED_MAX_CONNECTIONS: '40', PGFLEET_ARCHIVE_RETENTION_SECONDS: '3600' });

  async function provision(plan: string): Promise<{ id: string; url: string; server: string }> {
    const id = randomUUID();
    expect([200, 202]).toContain((await addonFetch(ctx.system, 'POST', '/heroku/resources', { uuid: id, plan, region: 'eu' })).status);
    return waitFor(
      'the database',
      async () => {
        const { body } = await ctx.system.api('GET', `/api/resources/${id}`);
        return body.state === 'available'
          ? { id, url: body.config.PGFLEET_URL as string, server: body.servers[0].id as string }
          : undefined;
      },
      90_000,
      250,
    );
  }

  const liveShared = async () =>
    (
      await ctx.db.pool.query<{ id: string }>(
        `select s.id from servers s join machines m on m.entity_id = s.id
         where s.tenancy = 'shared' and s.region = 'eu-west-1' and m.finished_at is null and m.state <> 'deleting'`,
      )
    ).rows.map((r) => r.id);

  it('retires shared servers that deprovisioning emptied, keeping one spare, which the next tenant takes', async () => {
    const tenants = [await provision('shared'), await provision('shared'), await provision('shared')];
    expect(new Set(tenants.map((t) => t.server)).size).toBe(3);
    expect((await liveShared()).length).toBeGreaterThan(3);
    for (const t of tenants) expect((await addonFetch(ctx.system, 'DELETE', `/heroku/resources/${t.id}`)).status).toBe(204);
    await waitFor('one spare to be left', async () => (await liveShared()).length === 1, 60_000, 250);
    const [spare] = await liveShared();
    expect((await provision('shared')).server).toBe(spare);
  });

  it("removes a deleted server's archive once its retention has passed, and only then", async () => {
    const db = await provision('dedicated');
    await psql(db.url, 'create table t (n int); insert into t select generate_series(1, 1000)');
    await psql(await adminUrl(ctx.db.pool, db.server), 'select pg_switch_wal()');
    const store = openArchive({ storeUrl: `file://${ctx.system.config.home}/archive` });
    await waitFor('WAL in the archive', async () => (await store.list(`servers/${db.server}/`)).length > 0, 30_000);
    const log = createLogger('silent');
    // The servers the test before retired are deleted; this one is live, and its archive stays.
    expect(await pruneDeletedArchives(ctx.db.pool, store, 1, log)).not.toContain(db.server);
    expect((await store.list(`servers/${db.server}/`)).length).toBeGreaterThan(0);
    expect((await addonFetch(ctx.system, 'DELETE', `/heroku/resources/${db.id}`)).status).toBe(204);
    await waitFor(
      'the server to be deleted',
      async () => (await ctx.system.api('GET', `/api/servers/${db.server}`)).body.state === 'deleted',
      60_000,
    );
    // Within the retention it stays.
    expect(await pruneDeletedArchives(ctx.db.pool, store, 3600, log)).toEqual([]);
    expect((await store.list(`servers/${db.server}/`)).length).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await pruneDeletedArchives(ctx.db.pool, store, 1, log)).toEqual([db.server]);
    expect(await store.list(`servers/${db.server}/`)).toEqual([]);
    expect(await pruneDeletedArchives(ctx.db.pool, store, 1, log)).toEqual([]);
  });
});
