import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { clusterPids, signalAll } from '../../src/chaos/processes.ts';
import { waitFor } from '../support/db.ts';
import { serverUrl, useHa, withRole, type Incident, type Shown } from '../support/ha.ts';
import { psql } from '../support/system.ts';
import { verifyFull } from '../support/tls.ts';
import { NumberedWriter } from '../support/writer.ts';

describe('the ha plan: a primary and a synchronous standby', { timeout: 180_000 }, () => {
  const { ctx, provision, resource, dataDir, stallWalsender, incidentOf, pages } = useHa();

  it('acknowledges a commit only once the standby has it', async () => {
    const { uuid, url } = await provision();

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
    const client = new pg.Client({ connectionString: verifyFull(url, ctx.system.caFile) });
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
  });

  it('stops waiting for a standby whose replication stalls, records it, and makes it synchronous again once it catches up', async () => {
    const { uuid, url } = await provision();
    await psql(url, 'create table stalled (n int primary key)');
    const writer = new NumberedWriter(verifyFull(url, ctx.system.caFile), 'stalled');
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
      const promote = await ctx.system.api('POST', `/api/resources/${uuid}/promote`);
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
    const timeline = (await ctx.system.api('GET', `/api/incidents/${incident.id}`)).body.timeline as { summary: string }[];
    for (const step of ['unsynchronized.desynchronizing', 'unsynchronized.waiting', 'unsynchronized.resynchronizing', 'available']) {
      expect(timeline.some((e) => e.summary.includes(step))).toBe(true);
    }
  });

  it('on a strict plan keeps commits waiting for a stalled standby, but records the stall and pages', async () => {
    const { uuid, url } = await provision('ha-strict');
    await psql(url, 'create table strict (n int)');
    const client = new pg.Client({ connectionString: verifyFull(url, ctx.system.caFile) });
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
    expect(((await ctx.system.api('GET', `/api/incidents/${id}`)).body as Incident).escalations.map((e) => e.reason)).toContain('stuck');
  });
});
