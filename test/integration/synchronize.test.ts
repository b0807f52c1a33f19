import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { transaction } from '../../src/db.ts';
import { createLogger } from '../../src/log.ts';
import { wireSubscribers } from '../../src/processes/subscribers.ts';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { enqueue, type Job, type TaskMap } from '../../src/queue/jobs.ts';
import { Worker, type AnyJobHandler } from '../../src/queue/worker.ts';
import { repointStandby, standbyName } from '../../src/replication/standbys.ts';
import { linkServer } from '../../src/resources/placement.ts';
import { resourceTasks } from '../../src/resources/tasks.ts';
import { insertServer } from '../../src/servers/rows.ts';
import { takeBaseBackup } from '../../src/wal/backup.ts';
import { archivedServers, type ArchivedServers } from '../support/archived.ts';
import { useTestDatabase, waitFor } from '../support/db.ts';
import { testTaskOptions } from '../support/tasks.ts';
import { createTestResource } from '../support/resources.ts';
import { TEST_SEALER } from '../support/system.ts';

const t = useTestDatabase(['jobs']);
const config = loadConfig({ LOG_LEVEL: 'silent' });
wireSubscribers(config.paging);
const log = createLogger('silent');

/**
 * The `synchronize` step of a resource, run by a worker, while its standby is slow to come:
 * it polled in place for up to 15 s, and every other action of the resource (one runs at a
 * time in its act lane) waited behind it. Now each run ends at once and the step is asked
 * again, so another action runs in between.
 */
describe('the synchronize step', { timeout: 120_000 }, () => {
  let s: ArchivedServers;
  let primary: ServerRecord;
  let standby: ServerRecord;
  let resourceId: string;
  let standbyRow: string;

  /** A row for a server made on the local provider, as placement leaves it. */
  async function serverRow(server: ServerRecord): Promise<string> {
    return transaction(t.db.pool, async (client) => {
      const id = await insertServer(client, TEST_SEALER, 'local', { tenancy: 'dedicated', region: 'us' });
      await client.query('update servers set host = $2, port = $3, superuser_password_sealed = $4 where id = $1', [
        id,
        server.host,
        server.port,
        TEST_SEALER.seal(server.superuserPassword),
      ]);
      return id;
    });
  }

  beforeAll(async () => {
    s = await archivedServers();
    primary = await s.server();
    const address = { host: primary.host!, port: primary.port!, password: primary.superuserPassword };
    await takeBaseBackup(s.bin, s.store, `servers/${primary.id}`, address, 'p-1');
    standby = await s.server({ follows: primary.id, backup_label: 'p-1' }, primary);
    await s.provider.host(standby).stop('kill');
    resourceId = randomUUID();
    await createTestResource(t.db.pool, resourceId, 'ha');
    await linkServer(t.db.pool, resourceId, await serverRow(primary), 'primary');
    standbyRow = await serverRow(standby);
    await linkServer(t.db.pool, resourceId, standbyRow, 'standby');
    // Only the step under test runs: not the placement the new resource's machine asked for.
    await t.db.pool.query('delete from jobs');
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  it('ends each run at once while the standby is away, and lets another action of the resource run in between', async () => {
    const tasks = resourceTasks(await testTaskOptions(t.db.pool, s.archive), async () => undefined);
    const runs: { task: string; ms: number }[] = [];
    const timed =
      (task: string, handler: AnyJobHandler): AnyJobHandler =>
      async (job, ctx) => {
        const started = performance.now();
        try {
          return await handler(job, ctx);
        } finally {
          runs.push({ task, ms: performance.now() - started });
        }
      };
    // The real step beside an action that is not one of pgfleet's: the worker hands the step only its own jobs.
    const handlers = {
      synchronize: timed('synchronize', (job, ctx) => tasks.synchronize(job as Job<'synchronize'>, ctx)),
      other: timed('other', async () => undefined),
    };
    const worker = new Worker<TaskMap>(t.db.pool, { queues: undefined, concurrency: 4, leaseSeconds: 30, handlers, log, pollMs: 200 });
    await worker.start();
    try {
      await enqueue(t.db.pool, { task: 'synchronize', entityId: resourceId, key: 'synchronize' });
      await waitFor('the step to be asked again', async () => runs.filter((r) => r.task === 'synchronize').length >= 2, 10_000);
      await enqueue<TaskMap>(t.db.pool, { task: 'other', entityId: resourceId, key: 'other' });
      await waitFor('the other action to run', async () => runs.some((r) => r.task === 'other'), 5_000);
      expect((await s.query(primary, 'select 1 from pg_stat_replication')).rowCount).toBe(0);
      expect(runs.filter((r) => r.task === 'synchronize').length).toBeGreaterThanOrEqual(2);

      // The standby comes, under the name the resource knows it by: the step is done.
      await s.provider.host(standby).start();
      await repointStandby(
        { host: standby.host!, port: standby.port!, password: standby.superuserPassword },
        { host: primary.host!, port: primary.port! },
        standbyRow,
      );
      await waitFor('the step to be done', async () => (await t.db.pool.query('select 1 from jobs')).rowCount === 0, 15_000);
      const sync = await s.query(primary, `select application_name from pg_stat_replication where sync_state = 'sync'`);
      expect(sync.rows).toEqual([{ application_name: standbyName(standbyRow) }]);
    } finally {
      await worker.stop();
    }
    expect(Math.max(...runs.map((r) => r.ms))).toBeLessThan(1000);
  });
});
