import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { findPlan } from '../../src/plans.ts';
import { parseResourceObservation } from '../../machines/observations.ts';
import { standbyName } from '../../src/replication/standbys.ts';
import { changePlan, resourceServers, tellResource } from '../../src/resources/rows.ts';
import { serverArchivePrefix } from '../../src/store/open.ts';
import { findBackup } from '../../src/wal/backup.ts';
import { waitFor } from '../support/db.ts';
import { createTestResource } from '../support/resources.ts';
import { asked, lastTransition, observeNow, runTask, serverQuery, serverUp, stateOf, tell, useTaskBench } from '../support/tasks.ts';

/**
 * The tasks of a database with a synchronous standby (the `ha` plan), run as a worker runs
 * them against real servers of the local provider, in the order a life takes them: the
 * standby built from a backup and made synchronous, a stall, a failover, the old primary
 * back as a standby, and the standby dropped. Each asserts the event the machine took,
 * where that took it, and what the task did to the servers. Server tasks without a
 * standby are in test/tasks/server.test.ts, other resource tasks in test/tasks/resource.test.ts.
 */
describe('the high-availability tasks, on real servers', { timeout: 180_000 }, () => {
  const bench = useTaskBench();
  const id = randomUUID();
  let first: string;
  let second: string;

  const withRole = async (role: string) => (await resourceServers(bench.pool, id)).find((s) => s.role === role)?.id;
  const inRecovery = async (server: string) => (await serverQuery<{ r: boolean }>(bench, server, 'select pg_is_in_recovery() as r'))[0]!.r;
  const syncNames = async (server: string) =>
    (await serverQuery<{ synchronous_standby_names: string }>(bench, server, 'show synchronous_standby_names'))[0]!
      .synchronous_standby_names;
  const syncStates = (server: string) =>
    serverQuery<{ name: string; state: string }>(
      bench,
      server,
      'select application_name as name, sync_state as state from pg_stat_replication',
    );

  /** The backup a task's commit asked for, of `server`, taken by the real `backup` task; its label. */
  async function backupOf(server: string): Promise<string> {
    const { rows } = await bench.pool.query<{ label: string }>(
      `select payload->>'label' as label from jobs where task = 'backup' and payload->>'server' = $1`,
      [server],
    );
    const label = rows[0]!.label;
    await runTask(bench, 'backup', { payload: { server } });
    expect(await findBackup(bench.store, serverArchivePrefix(server), label)).toBeDefined();
    return label;
  }

  /**
   * `synchronize` until it reports: each run that finds the standby not yet confirmed ends
   * and asks for itself again, reporting nothing, as in production.
   */
  async function synchronize(): Promise<void> {
    await waitFor(
      'synchronize to report',
      async () => {
        await runTask(bench, 'synchronize', { entity: id });
        return !(await asked(bench, 'synchronize', id));
      },
      30_000,
      200,
    );
  }

  beforeAll(async () => {
    await createTestResource(bench.pool, id, 'ha');
    await runTask(bench, 'place', { entity: id });
    first = (await withRole('primary'))!;
    await serverUp(bench, first);
    await observeNow(bench, id);
    await runTask(bench, 'create_tenant', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'tenant.created', to: 'creating.standby.trying' });
  });

  it('place_standby: links a follower of the primary, asks for a backup to build it from, and reports `placed`', async () => {
    await runTask(bench, 'place_standby', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'placed', from: 'creating.standby.trying', to: 'creating.syncing' });
    second = (await withRole('standby'))!;
    const { rows } = await bench.pool.query<{ follows: string }>(`select attrs->'follows' as follows from servers where id = $1`, [second]);
    expect(rows[0]!.follows).toBe(first);
    expect(await asked(bench, 'provision', second)).toBe(true);
  });

  it('backup: puts a base backup of the primary in the archive, from which the standby starts', async () => {
    await backupOf(first);
    await serverUp(bench, second);
    expect(await inRecovery(second)).toBe(true);
    await observeNow(bench, id);
    expect(await stateOf(bench, id)).toBe('creating.synchronous.trying');
  });

  it('synchronize: makes the standby synchronous and reports `synchronized`', async () => {
    await synchronize();
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'synchronized', from: 'creating.synchronous.trying', to: 'available' });
    expect(await syncStates(first)).toEqual([{ name: standbyName(second), state: 'sync' }]);
  });

  it('desynchronize: stops the primary waiting for a stalled standby and reports `desynchronized`', async () => {
    await tell(bench, id, {
      type: 'observed',
      obs: parseResourceObservation({
        'primary.state': 'available',
        'standby.state': 'available',
        'sync.names': 'x',
        'sync.waiting': '1',
        'sync.wait_ms': '60000',
      }),
    });
    expect(await stateOf(bench, id)).toBe('unsynchronized.desynchronizing.trying');
    await runTask(bench, 'desynchronize', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({
      event: 'desynchronized',
      from: 'unsynchronized.desynchronizing.trying',
      to: 'unsynchronized.waiting',
    });
    expect(await syncNames(first)).toBe('');
  });

  it('synchronize: makes a standby that caught up synchronous again and reports `synchronized`', async () => {
    await observeNow(bench, first);
    await observeNow(bench, id);
    expect(await stateOf(bench, id)).toBe('unsynchronized.resynchronizing');
    await synchronize();
    expect(await lastTransition(bench, id)).toMatchObject({
      event: 'synchronized',
      from: 'unsynchronized.resynchronizing',
      to: 'available',
    });
    expect(await syncStates(first)).toEqual([{ name: standbyName(second), state: 'sync' }]);
  });

  it("fence_primary: tells the primary's machine to fence it and reports `fencing`; the server's fence stops it", async () => {
    await tellResource(bench.pool, id, { type: 'switchover' });
    await runTask(bench, 'fence_primary', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'fencing', from: 'failover.fencing.trying', to: 'failover.waiting' });
    expect(await lastTransition(bench, first)).toMatchObject({ event: 'fence', from: 'available', to: 'fencing' });
    await runTask(bench, 'fence', { entity: first });
    expect(await stateOf(bench, first)).toBe('fenced');
    await observeNow(bench, id);
    expect(await stateOf(bench, id)).toBe('failover.promoting.trying');
  });

  it('promote: makes the standby the primary and reports `promoted`', async () => {
    await runTask(bench, 'promote', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({
      event: 'promoted',
      from: 'failover.promoting.trying',
      to: 'rejoining.placing.trying',
    });
    expect(await inRecovery(second)).toBe(false);
    expect(await withRole('primary')).toBe(second);
    expect(await withRole('former')).toBe(first);
  });

  it("restore_standby: asks the former primary's machine to rejoin from a backup of the new one, and reports `placed`", async () => {
    await runTask(bench, 'restore_standby', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'placed', from: 'rejoining.placing.trying', to: 'rejoining.syncing' });
    expect(await withRole('standby')).toBe(first);
    expect(await lastTransition(bench, first)).toMatchObject({ event: 'rejoin', from: 'fenced', to: 'rejoining' });
  });

  it('rejoin: brings the former primary back as a standby of the new one and reports `rejoined`', async () => {
    await backupOf(second);
    await runTask(bench, 'rejoin', { entity: first });
    expect(await lastTransition(bench, first)).toMatchObject({ event: 'rejoined', from: 'rejoining', to: 'starting.verifying' });
    expect(await inRecovery(first)).toBe(true);
    await observeNow(bench, first);
    expect(await stateOf(bench, first)).toBe('available');
    await observeNow(bench, id);
    await synchronize();
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'synchronized', from: 'rejoining.synchronous.trying', to: 'available' });
    expect(await syncStates(second)).toEqual([{ name: standbyName(first), state: 'sync' }]);
  });

  it('drop_standby: stops the primary waiting for its standby, has the standby deleted, and reports `standby.dropped`', async () => {
    await changePlan(bench.pool, id, findPlan('dedicated')!, { move: false, standby: 'drop' });
    await runTask(bench, 'drop_standby', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'standby.dropped', from: 'dropping.trying', to: 'resizing.trying' });
    expect(await syncNames(second)).toBe('');
    expect(await withRole('standby')).toBeUndefined();
    expect(await stateOf(bench, first)).toBe('deleting');
  });
});
