import { randomUUID } from 'node:crypto';
import { chmod, copyFile, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.ts';
import { FakePlatform } from '../support/platform.ts';
import { addonFetch, adminUrl, psql, startSystem, type System } from '../support/system.ts';
import { verifyFull } from '../support/tls.ts';
import { clusterPids, signalAll } from '../../src/chaos/processes.ts';
import { processRunning } from '../../src/pg/cluster.ts';
import { NumberedWriter } from '../support/writer.ts';

describe('the ha plan: a primary and a synchronous standby', { timeout: 180_000 }, () => {
  let db: TestDatabase;
  let system: System;
  const platform = new FakePlatform();
  let ha: { uuid: string; url: string };

  beforeAll(async () => {
    db = await createTestDatabase();
    await platform.start();
    system = await startSystem(db.url, ['web', 'worker', 'clock', 'router'], {
      HEROKU_API_URL: platform.url,
      HEROKU_ID_URL: platform.url,
      ADDON_CLIENT_SECRET: 's',
      PGFLEET_HANG_PROBES: '2',
      PGFLEET_READONLY_MAX_LAG: '1MB',
      PAGER_WEBHOOK_URL: `${platform.url}/pager`,
      PGFLEET_SYNC_PAGE_AFTER: '4',
    });
  });
  /** Walsenders a test stopped: never left frozen, whatever failed. */
  const stopped: number[] = [];
  afterAll(async () => {
    signalAll(stopped, 'SIGCONT');
    await system?.stop();
    await platform.stop();
    await db?.drop();
  });

  /** An ha database through the add-on API, once the platform has its config. */
  async function provisionHa(plan = 'ha'): Promise<{ uuid: string; url: string; readOnlyUrl: string }> {
    const uuid = randomUUID();
    const res = await addonFetch(system, 'POST', '/heroku/resources', {
      uuid,
      plan,
      region: 'us',
      callback_url: `${platform.url}/addons/${uuid}`,
      oauth_grant: { code: 'g' },
    });
    expect(res.status).toBe(202);
    const patch = await waitFor('the config', async () => platform.callsTo('PATCH', `/addons/${uuid}/config`)[0], 120_000);
    const config = Object.fromEntries((JSON.parse(patch.body).config as { name: string; value: string }[]).map((v) => [v.name, v.value]));
    expect(Object.keys(config).sort()).toEqual(['PGFLEET_CONNECTION_POOL_URL', 'PGFLEET_READONLY_URL', 'PGFLEET_URL']);
    return { uuid, url: config.PGFLEET_URL!, readOnlyUrl: config.PGFLEET_READONLY_URL! };
  }

  type Shown = { id: string; role: string; state: string; port: number };
  const resource = async (uuid: string) => (await system.api('GET', `/api/resources/${uuid}`)).body;
  const withRole = (r: { servers: Shown[] }, role: string) => r.servers.find((s) => s.role === role)!;
  const dataDir = (id: string) => path.join(system.config.home, 'servers', id, 'data');
  const serverUrl = (url: string, port: number) => Object.assign(new URL(url), { port: String(port) }).toString();

  /** Until the resource is whole again: available, its old primary back as a synchronous standby. */
  async function rejoined(uuid: string, url: string, oldPrimary: string): Promise<{ primary: Shown; standby: Shown }> {
    const r = await waitFor(
      'the old primary to rejoin as a standby',
      async () => {
        const shown = await resource(uuid);
        return shown.state === 'available' &&
          withRole(shown, 'standby')?.id === oldPrimary &&
          withRole(shown, 'standby').state === 'available'
          ? shown
          : undefined;
      },
      90_000,
    );
    const primary = withRole(r, 'primary');
    const standby = withRole(r, 'standby');
    expect(r.servers).toHaveLength(2);
    expect(await psql(serverUrl(url, standby.port), 'select pg_is_in_recovery()')).toBe('t');
    const sync = await psql(
      await adminUrl(db.pool, primary.id),
      `select application_name from pg_stat_replication where sync_state = 'sync'`,
    );
    expect(sync).toBe(oldPrimary.replace(/-/g, '_'));
    return { primary, standby };
  }

  /** Make a fault under writes through the resource's URL; resolve once writes resumed. */
  async function underWrites(url: string, table: string, fault: () => Promise<void>): Promise<NumberedWriter> {
    await psql(url, `create table ${table} (n int primary key)`);
    const writer = new NumberedWriter(verifyFull(url, system.caFile), table);
    writer.start();
    try {
      await waitFor('some commits', async () => writer.acknowledged.length > 50, 10_000, 5);
      writer.fault();
      await fault();
      await waitFor('writes to resume through the same URL', async () => writer.recoveryMs !== undefined, 60_000, 20);
      const after = writer.acknowledged.length;
      await waitFor('more writes', async () => writer.acknowledged.length > after + 20, 10_000, 10);
    } finally {
      await writer.stop();
    }
    return writer;
  }

  it('acknowledges a commit only once the standby has it', async () => {
    const { uuid, url } = await provisionHa();

    const shown = await resource(uuid);
    expect(shown.state).toBe('available');
    expect(shown.servers.map((s: Shown) => `${s.role}:${s.state}`)).toEqual(['primary:available', 'standby:available']);
    const standby = withRole(shown, 'standby');
    expect(shown.transitions.map((t: { to: string }) => t.to)).toContain('creating.synchronous.trying');

    await psql(url, 'create table acked (n int)');
    await psql(url, 'insert into acked values (1)');
    const standbyUrl = serverUrl(url, standby.port);
    await waitFor('the standby to have the row', async () => (await psql(standbyUrl, 'select count(*) from acked')) === '1');

    // Freeze the standby (its postmaster and every child, the WAL receiver too): a commit now
    // waits instead of being acknowledged by the primary alone.
    const pids = await clusterPids(dataDir(standby.id));
    const client = new pg.Client({ connectionString: verifyFull(url, system.caFile) });
    await client.connect();
    let acknowledged = false;
    signalAll(pids, 'SIGSTOP');
    let commit: Promise<unknown>;
    try {
      commit = client.query('insert into acked values (2)').then(() => (acknowledged = true));
      await new Promise((r) => setTimeout(r, 1500));
      expect(acknowledged).toBe(false);
    } finally {
      signalAll(pids, 'SIGCONT');
    }
    await commit;
    expect(acknowledged).toBe(true);
    await client.end();
    expect(await psql(standbyUrl, 'select count(*) from acked')).toBe('2');
    ha = { uuid, url };
  });

  /** Freeze the walsender that streams to the resource's standby: replication stalls, both servers stay up. */
  async function stallWalsender(uuid: string): Promise<{ primary: Shown; standby: Shown; admin: string; walsender: number }> {
    const shown = await resource(uuid);
    const primary = withRole(shown, 'primary');
    const standby = withRole(shown, 'standby');
    const admin = await adminUrl(db.pool, primary.id);
    const walsender = Number(
      await psql(admin, `select pid from pg_stat_replication where application_name = '${standby.id.replace(/-/g, '_')}'`),
    );
    expect(walsender).toBeGreaterThan(0);
    stopped.push(walsender);
    process.kill(walsender, 'SIGSTOP');
    return { primary, standby, admin, walsender };
  }

  type Incident = { id: string; entity: { id: string }; reason: string; state: string; escalations: { reason: string }[] };
  const incidentOf = async (uuid: string, reason: string) =>
    ((await system.api('GET', '/api/incidents')).body as Incident[]).find((i) => i.entity.id === uuid && i.reason === reason);
  const pages = (incidentId: string) =>
    platform
      .callsTo('POST', '/pager')
      .map((c) => JSON.parse(c.body) as { event_action: string; dedup_key: string })
      .filter((p) => p.dedup_key.includes(incidentId));

  it('stops waiting for a standby whose replication stalls, records it, and makes it synchronous again once it catches up', async () => {
    const { uuid, url } = await provisionHa();
    await psql(url, 'create table stalled (n int primary key)');
    const writer = new NumberedWriter(verifyFull(url, system.caFile), 'stalled');
    writer.start();
    let stall: Awaited<ReturnType<typeof stallWalsender>> | undefined;
    try {
      await waitFor('some commits', async () => writer.acknowledged.length > 50, 10_000, 5);
      stall = await stallWalsender(uuid);
      // A commit the standby had confirmed just before may still be acknowledged: from here on, none is.
      await new Promise((r) => setTimeout(r, 200));
      writer.fault();
      // Commits flow again without the standby within seconds, not after the 60 s lag alarm.
      await waitFor('commits to flow again without the stalled standby', async () => writer.recoveryMs !== undefined, 20_000, 20);
      expect(writer.recoveryMs).toBeGreaterThan(1000);
      expect(writer.recoveryMs).toBeLessThan(10_000);
      const degraded = await resource(uuid);
      expect(degraded.state).toBe('unsynchronized');
      expect(degraded.unsynchronizedSince).toEqual(expect.any(String));
      expect(await psql(stall.admin, 'show synchronous_standby_names')).toBe('');
      // The standby may lack acknowledged commits: not promoted, unless an operator accepts losing them.
      const promote = await system.api('POST', `/api/resources/${uuid}/promote`);
      expect([promote.status, promote.body.error]).toEqual([
        409,
        expect.stringMatching(/without a synchronous copy since .*"force": true/),
      ]);
      // Running without a synchronous copy is an incident, which pages once it lasts.
      const opened = await waitFor('the incident', () => incidentOf(uuid, 'running without a synchronous copy'));
      await waitFor('the page', async () => (pages(opened.id).some((p) => p.event_action === 'trigger') ? true : undefined), 20_000);
    } finally {
      if (stall) process.kill(stall.walsender, 'SIGCONT');
    }
    // Caught up, the standby is synchronous again: a commit waits for it once more.
    const whole = await waitFor(
      'the standby to be synchronous again',
      async () => {
        const r = await resource(uuid);
        if (r.state !== 'available') return undefined;
        const sync = await psql(stall!.admin, `select application_name from pg_stat_replication where sync_state = 'sync'`);
        return sync === stall!.standby.id.replace(/-/g, '_') ? r : undefined;
      },
      30_000,
    );
    expect(whole.unsynchronizedSince).toBeNull();
    await writer.stop();
    expect(writer.acknowledged.length).toBeGreaterThan(100);
    expect(await writer.missing()).toEqual([]);
    const incident = (await incidentOf(uuid, 'running without a synchronous copy'))!;
    await waitFor('the incident to resolve', async () =>
      (await incidentOf(uuid, 'running without a synchronous copy'))?.state === 'resolved' ? true : undefined,
    );
    await waitFor('the page to resolve', async () => (pages(incident.id).some((p) => p.event_action === 'resolve') ? true : undefined));
    const timeline = (await system.api('GET', `/api/incidents/${incident.id}`)).body.timeline as { summary: string }[];
    for (const step of ['unsynchronized.desynchronizing', 'unsynchronized.waiting', 'unsynchronized.resynchronizing', 'available']) {
      expect(timeline.some((e) => e.summary.includes(step))).toBe(true);
    }
  });

  it('on a strict plan keeps commits waiting for a stalled standby, but records the stall and pages', async () => {
    const { uuid, url } = await provisionHa('ha-strict');
    await psql(url, 'create table strict (n int)');
    const client = new pg.Client({ connectionString: verifyFull(url, system.caFile) });
    await client.connect();
    let stall: Awaited<ReturnType<typeof stallWalsender>> | undefined;
    let acknowledged = false;
    let commit: Promise<unknown> | undefined;
    try {
      stall = await stallWalsender(uuid);
      commit = client.query('insert into strict values (1)').then(() => (acknowledged = true));
      await waitFor('the stall to be recorded', async () => ((await resource(uuid)).state === 'stalled' ? true : undefined), 20_000);
      const opened = await waitFor('the incident', () => incidentOf(uuid, 'synchronous standby stalled: commits wait'));
      await waitFor('the page', async () => (pages(opened.id).some((p) => p.event_action === 'trigger') ? true : undefined), 30_000);
      // Never without a synchronous copy: the commit still waits for the standby.
      expect(acknowledged).toBe(false);
      expect(await psql(stall.admin, 'show synchronous_standby_names')).not.toBe('');
    } finally {
      if (stall) process.kill(stall.walsender, 'SIGCONT');
    }
    await commit;
    await client.end();
    expect(await psql(serverUrl(url, stall.standby.port), 'select count(*) from strict')).toBe('1');
    await waitFor(
      'the resource to be available again',
      async () => ((await resource(uuid)).state === 'available' ? true : undefined),
      30_000,
    );
    const { id } = (await incidentOf(uuid, 'synchronous standby stalled: commits wait'))!;
    await waitFor('the incident to resolve', async () =>
      (await incidentOf(uuid, 'synchronous standby stalled: commits wait'))?.state === 'resolved' ? true : undefined,
    );
    expect(((await system.api('GET', `/api/incidents/${id}`)).body as Incident).escalations.map((e) => e.reason)).toContain('stuck');
  });

  it('changes a dedicated database to ha and back: a standby is added and dropped, every row kept, the URL routed', async () => {
    const uuid = randomUUID();
    const post = await addonFetch(system, 'POST', '/heroku/resources', {
      uuid,
      plan: 'dedicated',
      region: 'us',
      callback_url: `${platform.url}/addons/${uuid}`,
      oauth_grant: { code: 'g' },
    });
    expect(post.status).toBe(202);
    const first = await waitFor('the config', async () => platform.callsTo('PATCH', `/addons/${uuid}/config`)[0], 120_000);
    const direct = (JSON.parse(first.body).config as { value: string }[])[0]!.value;
    await psql(direct, 'create table kept (n int)');
    await psql(direct, 'insert into kept select generate_series(1, 300)');

    const up = await addonFetch(system, 'PUT', `/heroku/resources/${uuid}`, { plan: 'ha' });
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
    const patch = await waitFor('the new config', async () => platform.callsTo('PATCH', `/addons/${uuid}/config`)[1], 30_000);
    const config = Object.fromEntries((JSON.parse(patch.body).config as { name: string; value: string }[]).map((v) => [v.name, v.value]));
    expect(config).toEqual(ready.config);
    expect(new URL(config.PGFLEET_URL!).port).not.toBe(new URL(direct).port);
    expect(await psql(config.PGFLEET_URL!, 'select count(*) from kept')).toBe('300');
    const standby = withRole(ready, 'standby');
    expect(
      await psql(
        await adminUrl(db.pool, withRole(ready, 'primary').id),
        `select application_name from pg_stat_replication where sync_state = 'sync'`,
      ),
    ).toBe(standby.id.replace(/-/g, '_'));

    const down = await addonFetch(system, 'PUT', `/heroku/resources/${uuid}`, { plan: 'dedicated' });
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
      async () => (await system.api('GET', `/api/servers/${standby.id}`)).body.state === 'deleted',
    );
    // The primary no longer waits for a standby, and the URL it was given stays.
    expect(await psql(await adminUrl(db.pool, withRole(ready, 'primary').id), 'show synchronous_standby_names')).toBe('');
    await psql(config.PGFLEET_URL!, 'insert into kept values (301)');
    expect(await psql(config.PGFLEET_URL!, 'select count(*) from kept')).toBe('301');

    // Kind and standbys at once is two changes: refused, saying which to make first.
    const shared = randomUUID();
    expect(
      (
        await addonFetch(system, 'POST', '/heroku/resources', {
          uuid: shared,
          plan: 'shared',
          region: 'us',
          callback_url: `${platform.url}/addons/${shared}`,
        })
      ).status,
    ).toBe(200);
    const both = await addonFetch(system, 'PUT', `/heroku/resources/${shared}`, { plan: 'ha' });
    expect(both.status).toBe(422);
    expect(((await both.json()) as { message: string }).message).toMatch(/change to the dedicated plan first/);
  });

  it('spreads reads over the standbys that keep up: a lagging one leaves the read-only pool and comes back', async () => {
    const { uuid, url, readOnlyUrl } = await provisionHa();
    const shown = await resource(uuid);
    const primary = withRole(shown, 'primary');
    const standby = withRole(shown, 'standby');
    const where = () => psql(readOnlyUrl, 'select inet_server_port(), pg_is_in_recovery()');
    // The router follows the control database within a refresh (250 ms).
    expect(
      await waitFor('reads to reach the standby', async () => ((await where()) === `${standby.port}|t` ? true : undefined), 5_000),
    ).toBe(true);
    await expect(psql(readOnlyUrl, 'create table nope (n int)')).rejects.toThrow(/read-only transaction/);

    // Replay stops on the standby while the primary writes past the 1MB bound; commits are
    // still acknowledged (the standby still receives and flushes the WAL), but its reads go stale.
    const admin = await adminUrl(db.pool, standby.id);
    await psql(admin, 'select pg_wal_replay_pause()');
    try {
      await psql(url, `create table filler as select repeat('x', 1000) as pad from generate_series(1, 4000)`);
      expect(
        await waitFor(
          'reads to leave the lagging standby',
          async () => ((await where()) === `${primary.port}|f` ? true : undefined),
          20_000,
        ),
      ).toBe(true);
    } finally {
      await psql(admin, 'select pg_wal_replay_resume()');
    }
    expect(
      await waitFor(
        'reads to come back to the standby once it caught up',
        async () => ((await where()) === `${standby.port}|t` ? true : undefined),
        20_000,
      ),
    ).toBe(true);
    expect(await psql(readOnlyUrl, 'select count(*) from filler')).toBe('4000');
  });

  it('replaces a standby that is lost for good, without holding commits up for good', async () => {
    const { uuid, url } = await provisionHa();
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
    expect(
      await psql(
        await adminUrl(db.pool, withRole(replaced, 'primary').id),
        `select application_name from pg_stat_replication where sync_state = 'sync'`,
      ),
    ).toBe(standby.id.replace(/-/g, '_'));
    await psql(url, 'insert into kept values (202)');
    await waitFor(
      'the new standby to have every row',
      async () => (await psql(serverUrl(url, standby.port), 'select count(*) from kept')) === '202',
    );
    await waitFor(
      'the lost standby to be deleted',
      async () => (await system.api('GET', `/api/servers/${lost.id}`)).body.state === 'deleted',
    );
  });

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
    expect(await writer.missing(verifyFull(serverUrl(ha.url, back.port), system.caFile))).toEqual([]);
    const { rows } = await db.pool.query<{ event: string }>(`select event from transitions where entity_id = $1 order by id`, [
      oldPrimary.id,
    ]);
    expect(rows.map((r) => r.event)).toEqual(expect.arrayContaining(['fence', 'fenced', 'rejoin', 'rejoined']));

    // Operators read it as one incident of the database, from the fault to whole again.
    const incidents = (await system.api('GET', '/api/incidents')).body as {
      id: string;
      entity: { id: string };
      reason: string;
      state: string;
    }[];
    expect(incidents.filter((i) => i.entity.id === oldPrimary.id)).toEqual([]);
    const failover = incidents.find((i) => i.entity.id === ha.uuid);
    expect(failover).toMatchObject({ reason: 'primary lost: failing over to the standby', state: 'resolved' });
    const timeline = (await system.api('GET', `/api/incidents/${failover!.id}`)).body.timeline as { summary: string }[];
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
    const bundle = path.join(system.config.home, 'bin', 'pgfleet-wal.cjs');
    const real = `${bundle}.real.cjs`;
    const starts = path.join(system.config.home, 'bin', 'starts.log');
    await copyFile(bundle, real);
    await writeFile(starts, '');
    await chmod(starts, 0o666);
    await writeFile(
      bundle,
      `require('fs').appendFileSync(${JSON.stringify(starts)}, Date.now() + ' ' + process.argv[2] + '\\n');\n` +
        `require(${JSON.stringify(real)});\n`,
    );
    try {
      const log = path.join(system.config.home, 'servers', standby.id, 'postgres.log');
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
    expect(await writer.missing(verifyFull(serverUrl(ha.url, back.port), system.caFile))).toEqual([]);
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
    const { uuid, url } = await provisionHa();
    await psql(url, 'create table kept (n int)');
    await psql(url, 'insert into kept select generate_series(1, 1000)');
    const first = withRole(await resource(uuid), 'primary');
    // A follower resource of it: a read-only copy that must keep following whichever server is primary.
    const followerUuid = randomUUID();
    const res = await addonFetch(system, 'POST', '/heroku/resources', {
      uuid: followerUuid,
      plan: 'dedicated',
      region: 'us',
      callback_url: `${platform.url}/addons/${followerUuid}`,
      oauth_grant: { code: 'g' },
      options: { follow: uuid },
    });
    expect(res.status).toBe(202);
    const patch = await waitFor('the follower config', async () => platform.callsTo('PATCH', `/addons/${followerUuid}/config`)[0], 120_000);
    const followerUrl = (JSON.parse(patch.body).config as { value: string }[])[0]!.value;
    expect(await psql(followerUrl, 'select count(*) from kept')).toBe('1000');
    const followerServer = withRole(await resource(followerUuid), 'primary').id;

    for (const expected of [1001, 1002]) {
      const before = await resource(uuid);
      const standby = withRole(before, 'standby');
      expect((await system.api('POST', `/api/resources/${uuid}/promote`)).status).toBe(202);
      // Until the old primary is back as a standby there is none to promote: refused, with the reason.
      const again = await system.api('POST', `/api/resources/${uuid}/promote`);
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
          const names = await psql(await adminUrl(db.pool, primary.id), 'select application_name from pg_stat_replication');
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
