import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { transaction } from '../../src/db.ts';
import { followLeader, insertFollower, insertServer } from '../../src/servers/rows.ts';
import { waitFor } from '../support/db.ts';
import { adminUrl, psql, TEST_SEALER, useSystem } from '../support/system.ts';

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
    const [manifest] = await waitFor(
      'the backup to finish',
      async () => {
        const list = (await ctx.system.api('GET', `/api/servers/${leader}/backups`)).body as { label: string }[];
        return list.length > 0 ? list : undefined;
      },
      60_000,
    );
    expect(manifest).toMatchObject({ label: backup.body.label, prefix: `servers/${leader}`, timeline: 1 });
    expect((manifest as unknown as { parts: unknown[] }).parts.length).toBeGreaterThanOrEqual(1);

    // Written after the backup: only the archive and streaming can bring these.
    await psql(leaderUrl, "insert into ledger select g, 'after the backup' from generate_series(1001, 2000) g");
    await psql(leaderUrl, 'select pg_switch_wal()');

    const follower = (await ctx.system.api('POST', '/api/servers', { provider: 'local', follow: leader })).body.id as string;
    const ready = await waitFor(
      'the follower to be available',
      async () => {
        const s = await server(follower);
        return s.state === 'available' ? s : undefined;
      },
      90_000,
    );
    expect(ready.observation.in_recovery).toBe('true');
    const followerUrl = await adminUrl(ctx.db.pool, follower);
    await waitFor('the follower to have every row', async () => (await psql(followerUrl, 'select count(*) from ledger')) === '2000');

    // Streaming: a row committed on the leader shows on the follower within moments.
    await psql(leaderUrl, "insert into ledger values (2001, 'streamed')");
    await waitFor(
      'the streamed row',
      async () => (await psql(followerUrl, 'select note from ledger where n = 2001')) === 'streamed',
      15_000,
    );
    expect(await psql(leaderUrl, 'select application_name, state from pg_stat_replication')).toBe(
      `${follower.replace(/-/g, '_')}|streaming`,
    );
    // Read-only, on the leader's timeline.
    const client = new pg.Client({ connectionString: followerUrl });
    await client.connect();
    await expect(client.query("insert into ledger values (9999, 'no')")).rejects.toThrow(/read-only transaction/);
    await client.end();
    expect(await psql(followerUrl, 'select timeline_id from pg_control_checkpoint()')).toBe('1');
  });

  it(
    'builds a follower from a fresh backup when the one it was given can no longer finish, without waiting for it',
    { timeout: 120_000 },
    async () => {
      const leader = (await ctx.system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
      await waitFor('the leader to be available', async () => (await server(leader)).state === 'available');
      await psql(await adminUrl(ctx.db.pool, leader), 'create table kept as select generate_series(1, 100) as n');
      // Its backup's job died (its leader was down through every attempt, say): that label never comes.
      const follower = await transaction(ctx.db.pool, async (client) => {
        await client.query(
          `insert into jobs (task, payload, max_attempts, attempts, dead_at, last_error)
           values ('backup', $1, 3, 3, now(), 'pg_basebackup failed')`,
          [JSON.stringify({ server: leader, label: 'never-finished' })],
        );
        return (await insertFollower(client, leader, 'never-finished'))!;
      });
      const started = performance.now();
      await waitFor('the follower to be available', async () => (await server(follower)).state === 'available', 60_000);
      expect(performance.now() - started).toBeLessThan(45_000);
      const { rows } = await ctx.db.pool.query<{ label: string }>(`select attrs->'backup_label' as label from servers where id = $1`, [
        follower,
      ]);
      expect(rows[0]!.label).not.toBe('never-finished');
      expect(await psql(await adminUrl(ctx.db.pool, follower), 'select count(*) from kept')).toBe('100');
    },
  );

  it('asks for no more fresh backups of a leader whose backups keep dying', async () => {
    const leader = (await ctx.system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
    await waitFor('the leader to be available', async () => (await server(leader)).state === 'available');
    const follower = await transaction(ctx.db.pool, async (client) => {
      for (const label of ['dead-1', 'dead-2', 'dead-3']) {
        await client.query(
          `insert into jobs (task, payload, max_attempts, attempts, dead_at, last_error)
           values ('backup', $1, 5, 5, now(), 'the archive is broken')`,
          [JSON.stringify({ server: leader, label })],
        );
      }
      return (await insertFollower(client, leader, 'dead-3'))!;
    });
    await waitFor('the follower to ask for its backup', async () => (await server(follower)).state === 'initializing', 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    const { rows } = await ctx.db.pool.query<{ label: string }>(`select attrs->'backup_label' as label from servers where id = $1`, [
      follower,
    ]);
    expect(rows[0]!.label).toBe('dead-3');
    const { rows: backups } = await ctx.db.pool.query(
      `select 1 from jobs where task = 'backup' and payload->>'server' = $1 and dead_at is null`,
      [leader],
    );
    expect(backups).toEqual([]);
    expect((await server(follower)).state).toBe('initializing');
  });

  it('hurries the backup a follower waits for when it waits out a retry and its leader is available', async () => {
    const leader = (await ctx.system.api('POST', '/api/servers', { provider: 'local' })).body.id as string;
    await waitFor('the leader to be available', async () => (await server(leader)).state === 'available');
    // Its first attempt failed (the leader was down a moment): the retry is a minute away.
    const follower = await transaction(ctx.db.pool, async (client) => {
      await client.query(
        `insert into jobs (task, payload, max_attempts, attempts, run_at, last_error)
         values ('backup', $1, 5, 1, now() + interval '60 seconds', 'pg_basebackup failed')`,
        [JSON.stringify({ server: leader, label: 'retried' })],
      );
      return (await insertFollower(client, leader, 'retried'))!;
    });
    await waitFor('the follower to be available', async () => (await server(follower)).state === 'available', 40_000);
    const { rows } = await ctx.db.pool.query<{ label: string }>(`select attrs->'backup_label' as label from servers where id = $1`, [
      follower,
    ]);
    expect(rows[0]!.label).toBe('retried');
  });

  it('fails, rather than waits, to build a follower whose leader is gone', async () => {
    const follower = await transaction(ctx.db.pool, async (client) => {
      const id = await insertServer(client, TEST_SEALER, 'local', { tenancy: 'dedicated', region: 'us-east-1' });
      await followLeader(client, id, '0b6f1c9e-2d7a-4c55-9a51-3f0e8d2b7c41', 'never-finished');
      return id;
    });
    const error = await waitFor(
      'the initialization to fail',
      async () => {
        const { rows } = await ctx.db.pool.query<{ last_error: string | null }>(
          `select last_error from jobs where entity_id = $1 and task = 'initialize'`,
          [follower],
        );
        return rows[0]?.last_error ?? undefined;
      },
      30_000,
    );
    expect(error).toMatch(/the backup never-finished of the leader 0b6f1c9e-.* is not finished, and the leader is gone/);
  });

  it('refuses to follow a server that does not exist', async () => {
    const res = await ctx.system.api('POST', '/api/servers', { provider: 'local', follow: '0b6f1c9e-2d7a-4c55-9a51-3f0e8d2b7c41' });
    expect(res.status).toBe(422);
    expect(res.body.error).toMatch(/no available server/);
  });
});
