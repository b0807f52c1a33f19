import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/db.ts';
import { adminUrl, psql, useSystem } from '../support/system.ts';

describe('base backups and followers', () => {
  const ctx = useSystem();

  const server = async (id: string) => (await ctx.system.api('GET', `/api/servers/${id}`)).body;

  it('backs a server up into the store, and a follower built from it catches up, streams and serves reads', async () => {
    const leader = (await ctx.system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
    await waitFor('the leader to be available', async () => (await server(leader)).state === 'available');
    const leaderUrl = await adminUrl(ctx.db.pool, leader);
    await psql(leaderUrl, 'create table ledger (n int primary key, note text)');
    await psql(leaderUrl, "insert into ledger select g, 'before the backup' from generate_series(1, 1000) g");

    const backup = await ctx.system.api('POST', `/api/servers/${leader}/backups`);
    expect(backup.status).toBe(202);
    const [manifest] = await waitFor('the backup to finish', async () => {
      const list = (await ctx.system.api('GET', `/api/servers/${leader}/backups`)).body as { label: string }[];
      return list.length > 0 ? list : undefined;
    }, 60_000);
    expect(manifest).toMatchObject({ label: backup.body.label, prefix: `servers/${leader}`, timeline: 1 });
    expect((manifest as unknown as { parts: unknown[] }).parts.length).toBeGreaterThanOrEqual(1);

    // Written after the backup: only the archive and streaming can bring these.
    await psql(leaderUrl, "insert into ledger select g, 'after the backup' from generate_series(1001, 2000) g");
    await psql(leaderUrl, 'select pg_switch_wal()');

    const follower = (await ctx.system.api('POST', '/api/servers', { provider: 'local', follow: leader })).body.id as string;
    const ready = await waitFor('the follower to be available', async () => {
      const s = await server(follower);
      return s.state === 'available' ? s : undefined;
    }, 90_000);
    expect(ready.observation.in_recovery).toBe('true');
    const followerUrl = await adminUrl(ctx.db.pool, follower);
    await waitFor('the follower to have every row', async () => (await psql(followerUrl, 'select count(*) from ledger')) === '2000');

    // Streaming: a row committed on the leader shows on the follower within moments.
    await psql(leaderUrl, "insert into ledger values (2001, 'streamed')");
    await waitFor('the streamed row', async () => (await psql(followerUrl, 'select note from ledger where n = 2001')) === 'streamed', 15_000);
    expect(await psql(leaderUrl, 'select application_name, state from pg_stat_replication')).toBe(`${follower.replace(/-/g, '_')}|streaming`);
    // Read-only, on the leader's timeline.
    const client = new pg.Client({ connectionString: followerUrl });
    await client.connect();
    await expect(client.query("insert into ledger values (9999, 'no')")).rejects.toThrow(/read-only transaction/);
    await client.end();
    expect(await psql(followerUrl, 'select timeline_id from pg_control_checkpoint()')).toBe('1');
  });

  it('refuses to follow a server that does not exist', async () => {
    const res = await ctx.system.api('POST', '/api/servers', { provider: 'local', follow: '0b6f1c9e-2d7a-4c55-9a51-3f0e8d2b7c41' });
    expect(res.status).toBe(422);
    expect(res.body.error).toMatch(/no available server/);
  });
});
