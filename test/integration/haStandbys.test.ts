import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { clusterPids } from '../../src/chaos/processes.ts';
import { waitFor } from '../support/db.ts';
import { serverUrl, useHa, withRole, type Shown } from '../support/ha.ts';
import { addonFetch, adminUrl, psql } from '../support/system.ts';

describe('the ha plan: standbys added, dropped, read from and replaced', { timeout: 180_000 }, () => {
  const { ctx, provision, resource, dataDir, synchronousStandbyOf } = useHa();

  it('changes a dedicated database to ha and back: a standby is added and dropped, every row kept, the URL routed', async () => {
    const uuid = randomUUID();
    const post = await addonFetch(ctx.system, 'POST', '/heroku/resources', {
      uuid,
      plan: 'dedicated',
      region: 'us',
      callback_url: `${ctx.platform.url}/addons/${uuid}`,
      oauth_grant: { code: 'g' },
    });
    expect(post.status).toBe(202);
    const first = await waitFor('the config', async () => ctx.platform.callsTo('PATCH', `/addons/${uuid}/config`)[0], 120_000);
    const direct = (JSON.parse(first.body).config as { value: string }[])[0]!.value;
    await psql(direct, 'create table kept (n int)');
    await psql(direct, 'insert into kept select generate_series(1, 300)');

    const up = await addonFetch(ctx.system, 'PUT', `/heroku/resources/${uuid}`, { plan: 'ha' });
    expect([200, 202]).toContain(up.status);
    const ready = await waitFor(
      'the standby to be added',
      async () => {
        const r = await resource(uuid);
        return r.state === 'available' && r.servers.length === 2 && r.servers.every((s: Shown) => s.state === 'available') ? r : undefined;
      },
      120_000,
    );
    expect(ready.plan).toBe('ha');
    expect(ready.transitions.map((t: { to: string }) => t.to)).toEqual(
      expect.arrayContaining(['adding.standby.trying', 'adding.synchronous.trying']),
    );
    // The platform is handed the new URLs, the router's, which outlive any server.
    const patch = await waitFor('the new config', async () => ctx.platform.callsTo('PATCH', `/addons/${uuid}/config`)[1], 30_000);
    const config = Object.fromEntries((JSON.parse(patch.body).config as { name: string; value: string }[]).map((v) => [v.name, v.value]));
    expect(config).toEqual(ready.config);
    expect(new URL(config.PGFLEET_URL!).port).not.toBe(new URL(direct).port);
    expect(await psql(config.PGFLEET_URL!, 'select count(*) from kept')).toBe('300');
    const standby = withRole(ready, 'standby');
    expect(await synchronousStandbyOf(withRole(ready, 'primary').id)).toBe(standby.id.replace(/-/g, '_'));

    const down = await addonFetch(ctx.system, 'PUT', `/heroku/resources/${uuid}`, { plan: 'dedicated' });
    expect([200, 202]).toContain(down.status);
    await waitFor(
      'the standby to be dropped',
      async () => {
        const r = await resource(uuid);
        return r.state === 'available' && r.plan === 'dedicated' && r.servers.length === 1;
      },
      60_000,
    );
    await waitFor(
      'the standby server to be deleted',
      async () => (await ctx.system.api('GET', `/api/servers/${standby.id}`)).body.state === 'deleted',
    );
    // The primary no longer waits for a standby, and the URL it was given stays.
    expect(await psql(await adminUrl(ctx.db.pool, withRole(ready, 'primary').id), 'show synchronous_standby_names')).toBe('');
    await psql(config.PGFLEET_URL!, 'insert into kept values (301)');
    expect(await psql(config.PGFLEET_URL!, 'select count(*) from kept')).toBe('301');

    // Kind and standbys at once is two changes: refused, saying which to make first.
    const shared = randomUUID();
    expect(
      (
        await addonFetch(ctx.system, 'POST', '/heroku/resources', {
          uuid: shared,
          plan: 'shared',
          region: 'us',
          callback_url: `${ctx.platform.url}/addons/${shared}`,
        })
      ).status,
    ).toBe(200);
    const both = await addonFetch(ctx.system, 'PUT', `/heroku/resources/${shared}`, { plan: 'ha' });
    expect(both.status).toBe(422);
    expect(((await both.json()) as { message: string }).message).toMatch(/change to the dedicated plan first/);
  });

  it('spreads reads over the standbys that keep up: a lagging one leaves the read-only pool and comes back', async () => {
    const { uuid, url, readOnlyUrl } = await provision();
    const shown = await resource(uuid);
    const primary = withRole(shown, 'primary');
    const standby = withRole(shown, 'standby');
    const where = () => psql(readOnlyUrl, 'select inet_server_port(), pg_is_in_recovery()');
    /** Until reads through the read-only URL land on `server`, in recovery (`t`) or not (`f`). */
    const readsReach = (what: string, server: Shown, recovery: 't' | 'f', timeoutMs: number) =>
      waitFor(what, async () => ((await where()) === `${server.port}|${recovery}` ? true : undefined), timeoutMs);
    // The router follows the control database within a refresh (250 ms).
    expect(await readsReach('reads to reach the standby', standby, 't', 5_000)).toBe(true);
    await expect(psql(readOnlyUrl, 'create table nope (n int)')).rejects.toThrow(/read-only transaction/);

    // Replay stops on the standby while the primary writes past the 1MB bound; commits are
    // still acknowledged (the standby still receives and flushes the WAL), but its reads go stale.
    const admin = await adminUrl(ctx.db.pool, standby.id);
    await psql(admin, 'select pg_wal_replay_pause()');
    try {
      await psql(url, `create table filler as select repeat('x', 1000) as pad from generate_series(1, 4000)`);
      expect(await readsReach('reads to leave the lagging standby', primary, 'f', 20_000)).toBe(true);
    } finally {
      await psql(admin, 'select pg_wal_replay_resume()');
    }
    expect(await readsReach('reads to come back to the standby once it caught up', standby, 't', 20_000)).toBe(true);
    expect(await psql(readOnlyUrl, 'select count(*) from filler')).toBe('4000');
  });

  it('replaces a standby that is lost for good, without holding commits up for good', async () => {
    const { uuid, url } = await provision();
    await psql(url, 'create table kept (n int)');
    await psql(url, 'insert into kept select generate_series(1, 200)');
    const lost = withRole(await resource(uuid), 'standby');
    // Its disk is gone: restarts cannot bring it back, and its server machine gives up.
    const [postmaster] = await clusterPids(dataDir(lost.id));
    process.kill(postmaster!, 'SIGKILL');
    await rm(dataDir(lost.id), { recursive: true, force: true });
    // A commit now waits for the lost standby, until the primary is told to stop waiting.
    await psql(url, 'insert into kept values (201)');

    const replaced = await waitFor(
      'a new standby',
      async () => {
        const r = await resource(uuid);
        const standby = r.state === 'available' ? withRole(r, 'standby') : undefined;
        return standby && standby.id !== lost.id && standby.state === 'available' ? r : undefined;
      },
      120_000,
    );
    expect(replaced.transitions.map((t: { to: string }) => t.to)).toEqual(
      expect.arrayContaining(['replacing.releasing.trying', 'replacing.synchronous.trying']),
    );
    const standby = withRole(replaced, 'standby');
    expect(await synchronousStandbyOf(withRole(replaced, 'primary').id)).toBe(standby.id.replace(/-/g, '_'));
    await psql(url, 'insert into kept values (202)');
    await waitFor(
      'the new standby to have every row',
      async () => (await psql(serverUrl(url, standby.port), 'select count(*) from kept')) === '202',
    );
    await waitFor(
      'the lost standby to be deleted',
      async () => (await ctx.system.api('GET', `/api/servers/${lost.id}`)).body.state === 'deleted',
    );
  });
});
