import { randomUUID } from 'node:crypto';
import { chmod, copyFile, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { clusterPids, signalAll } from '../../src/chaos/processes.ts';
import { processRunning } from '../../src/pg/cluster.ts';
import { waitFor } from '../support/db.ts';
import { serverUrl, useHa, withRole } from '../support/ha.ts';
import { addonFetch, adminUrl, psql } from '../support/system.ts';
import { verifyFull } from '../support/tls.ts';
import type { NumberedWriter } from '../support/writer.ts';

describe('the ha plan: failover and switchover under writes', { timeout: 180_000 }, () => {
  const { ctx, provision, resource, dataDir, rejoined, underWrites } = useHa();
  /** The database the failovers below take turns on, each leaving it whole for the next. */
  let ha: { uuid: string; url: string };
  beforeAll(async () => {
    const { uuid, url } = await provision();
    ha = { uuid, url };
  }, 180_000);

  it('fails over when the primary is killed under writes: same URL, no acknowledged row lost, the old primary rejoins', async () => {
    const before = await resource(ha.uuid);
    const oldPrimary = withRole(before, 'primary');
    const standby = withRole(before, 'standby');
    expect(new URL(ha.url).port).not.toBe(String(oldPrimary.port));

    const [postmaster] = await clusterPids(dataDir(oldPrimary.id));
    const writer = await underWrites(ha.url, 'crashed', async () => void process.kill(postmaster!, 'SIGKILL'));

    const after = await resource(ha.uuid);
    expect(after.transitions.map((t: { to: string }) => t.to)).toEqual(
      expect.arrayContaining(['failover.fencing.trying', 'failover.waiting', 'failover.promoting.trying']),
    );
    // The URL did not change: clients only reconnected.
    expect(after.config.PGFLEET_URL).toBe(ha.url);
    expect(await psql(ha.url, 'select inet_server_port(), pg_is_in_recovery()')).toBe(`${standby.port}|f`);
    expect(await writer.missing()).toEqual([]);

    // The old primary comes back as the new primary's synchronous standby, with every row.
    const { primary, standby: back } = await rejoined(ha.uuid, ha.url, oldPrimary.id);
    expect(primary.id).toBe(standby.id);
    expect(await writer.missing(verifyFull(serverUrl(ha.url, back.port), ctx.system.caFile))).toEqual([]);
    const { rows } = await ctx.db.pool.query<{ event: string }>(`select event from transitions where entity_id = $1 order by id`, [
      oldPrimary.id,
    ]);
    expect(rows.map((r) => r.event)).toEqual(expect.arrayContaining(['fence', 'fenced', 'rejoin', 'rejoined']));

    // Operators read it as one incident of the database, from the fault to whole again.
    const incidents = (await ctx.system.api('GET', '/api/incidents')).body as {
      id: string;
      entity: { id: string };
      reason: string;
      state: string;
    }[];
    expect(incidents.filter((i) => i.entity.id === oldPrimary.id)).toEqual([]);
    const failover = incidents.find((i) => i.entity.id === ha.uuid);
    expect(failover).toMatchObject({ reason: 'primary lost: failing over to the standby', state: 'resolved' });
    const timeline = (await ctx.system.api('GET', `/api/incidents/${failover!.id}`)).body.timeline as { summary: string }[];
    for (const step of ['failover.fencing.trying', 'failover.promoting.trying', 'rejoining.syncing', 'available']) {
      expect(timeline.some((e) => e.summary.includes(step))).toBe(true);
    }
  });

  it('promotes a standby that has every archived segment without starting the restore command', async () => {
    const before = await resource(ha.uuid);
    const oldPrimary = withRole(before, 'primary');
    const standby = withRole(before, 'standby');
    // Each start of the archiver is a process of its own (0.13 s on an idle machine, 0.5 s
    // under load); at its end, recovery asks it for the next segment and for history files,
    // none of which the archive can have when the standby streamed everything archived. The
    // bundle that Postgres runs is wrapped here to write down when it starts, then runs as is.
    const bundle = path.join(ctx.system.config.home, 'bin', 'pgfleet-wal.cjs');
    const real = `${bundle}.real.cjs`;
    const starts = path.join(ctx.system.config.home, 'bin', 'starts.log');
    await copyFile(bundle, real);
    await writeFile(starts, '');
    await chmod(starts, 0o666);
    await writeFile(
      bundle,
      `require('fs').appendFileSync(${JSON.stringify(starts)}, Date.now() + ' ' + process.argv[2] + '\\n');\n` +
        `require(${JSON.stringify(real)});\n`,
    );
    try {
      const log = path.join(ctx.system.config.home, 'servers', standby.id, 'postgres.log');
      const logged = (await readFile(log)).length;
      const [postmaster] = await clusterPids(dataDir(oldPrimary.id));
      await underWrites(ha.url, 'promoted_quickly', async () => void process.kill(postmaster!, 'SIGKILL'));

      const lines = (await readFile(log)).subarray(logged).toString('utf8').split('\n');
      const at = (text: string) => {
        const line = lines.find((l) => l.includes(text));
        expect(line, text).toBeDefined();
        return Date.parse(line!.slice(0, 23).replace(' ', 'T') + 'Z');
      };
      const [promoting, promoted] = [at('received promote request'), at('database system is ready to accept connections')];
      const fetches = (await readFile(starts, 'utf8'))
        .split('\n')
        .filter((l) => l.endsWith(' wal-fetch'))
        .map((l) => Number(l.split(' ')[0]));
      expect(fetches.length).toBeGreaterThan(0);
      expect(fetches.filter((t) => t >= promoting && t <= promoted)).toEqual([]);
    } finally {
      await rename(real, bundle);
    }
    await rejoined(ha.uuid, ha.url, oldPrimary.id);
  });

  it('fails over when the primary hangs (SIGSTOP) under writes, fences it, and it rejoins', async () => {
    const before = await resource(ha.uuid);
    const hung = withRole(before, 'primary');
    const standby = withRole(before, 'standby');
    const pids = await clusterPids(dataDir(hung.id));
    let writer: NumberedWriter;
    try {
      writer = await underWrites(ha.url, 'hung', async () => signalAll(pids, 'SIGSTOP'));
    } finally {
      // The fence kills the frozen processes; whatever it did not, must not stay frozen.
      signalAll(pids, 'SIGCONT');
    }
    expect(await psql(ha.url, 'select inet_server_port(), pg_is_in_recovery()')).toBe(`${standby.port}|f`);
    expect(await writer.missing()).toEqual([]);
    // The fence killed every process of the hung server, frozen as they were.
    expect(await Promise.all(pids.map(processRunning))).toEqual(pids.map(() => false));
    const { standby: back } = await rejoined(ha.uuid, ha.url, hung.id);
    expect(await writer.missing(verifyFull(serverUrl(ha.url, back.port), ctx.system.caFile))).toEqual([]);
  });

  it('rebuilds a failed primary whose data directory is lost from a backup of the new primary', async () => {
    const before = await resource(ha.uuid);
    const lost = withRole(before, 'primary');
    const standby = withRole(before, 'standby');
    await psql(ha.url, 'create table survives (n int)');
    await psql(ha.url, 'insert into survives select generate_series(1, 500)');
    const [postmaster] = await clusterPids(dataDir(lost.id));
    process.kill(postmaster!, 'SIGKILL');
    await rm(dataDir(lost.id), { recursive: true, force: true });

    // Nothing is left to rewind: it comes back from the new primary's base backup and archive.
    const { primary, standby: back } = await rejoined(ha.uuid, ha.url, lost.id);
    expect(primary.id).toBe(standby.id);
    expect(await psql(serverUrl(ha.url, back.port), 'select count(*) from survives')).toBe('500');
    expect(await psql(ha.url, 'select count(*) from survives')).toBe('500');
  });

  it('switches over by hand (pgfleet promote) and back: every row kept, through the same URL, followers repointed', async () => {
    const { uuid, url } = await provision();
    await psql(url, 'create table kept (n int)');
    await psql(url, 'insert into kept select generate_series(1, 1000)');
    const first = withRole(await resource(uuid), 'primary');
    // A follower resource of it: a read-only copy that must keep following whichever server is primary.
    const followerUuid = randomUUID();
    const res = await addonFetch(ctx.system, 'POST', '/heroku/resources', {
      uuid: followerUuid,
      plan: 'dedicated',
      region: 'us',
      callback_url: `${ctx.platform.url}/addons/${followerUuid}`,
      oauth_grant: { code: 'g' },
      options: { follow: uuid },
    });
    expect(res.status).toBe(202);
    const patch = await waitFor(
      'the follower config',
      async () => ctx.platform.callsTo('PATCH', `/addons/${followerUuid}/config`)[0],
      120_000,
    );
    const followerUrl = (JSON.parse(patch.body).config as { value: string }[])[0]!.value;
    expect(await psql(followerUrl, 'select count(*) from kept')).toBe('1000');
    const followerServer = withRole(await resource(followerUuid), 'primary').id;

    for (const expected of [1001, 1002]) {
      const before = await resource(uuid);
      const standby = withRole(before, 'standby');
      expect((await ctx.system.api('POST', `/api/resources/${uuid}/promote`)).status).toBe(202);
      // Until the old primary is back as a standby there is none to promote: refused, with the reason.
      const again = await ctx.system.api('POST', `/api/resources/${uuid}/promote`);
      expect(again.status).toBe(409);
      expect(again.body.error).toMatch(/promote it once it is available/);
      const { primary } = await rejoined(uuid, url, withRole(before, 'primary').id);
      expect(primary.id).toBe(standby.id);
      expect(
        await waitFor('the router to follow', async () => {
          const port = await psql(url, 'select inet_server_port()').catch(() => '');
          return port === String(standby.port) ? port : undefined;
        }),
      ).toBe(String(standby.port));
      await psql(url, `insert into kept values (${expected})`);
      expect(await psql(url, 'select count(*) from kept')).toBe(String(expected));
      await waitFor(
        'the follower to follow the new primary',
        async () => (await psql(followerUrl, 'select count(*) from kept')) === String(expected),
        30_000,
      );
      // It streams from the new primary itself, not through the old one (which may never come back).
      const streaming = await waitFor(
        'the follower to stream from the new primary',
        async () => {
          const names = await psql(await adminUrl(ctx.db.pool, primary.id), 'select application_name from pg_stat_replication');
          return names.split('\n').includes(followerServer.replace(/-/g, '_')) ? names : undefined;
        },
        30_000,
      );
      expect(streaming).toContain(followerServer.replace(/-/g, '_'));
    }
    // Back where it started.
    expect(withRole(await resource(uuid), 'primary').id).toBe(first.id);
  });
});
