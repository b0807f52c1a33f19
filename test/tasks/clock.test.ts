import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { observeTls } from '../../observers/tls.ts';
import { transaction } from '../../src/db.ts';
import { noticeToResource } from '../../src/notifications.ts';
import { enqueueUnlessQueued } from '../../src/queue/jobs.ts';
import { enqueueEnforcement } from '../../src/resources/limits.ts';
import { resourceServers } from '../../src/resources/rows.ts';
import { queueForTask } from '../../src/runner/runner.ts';
import { enqueueRenewals } from '../../src/servers/certificates.ts';
import { insertServer, loadServerRecord } from '../../src/servers/rows.ts';
import { serverArchivePrefix } from '../../src/store/open.ts';
import { FakePlatform } from '../support/platform.ts';
import { createTestResource } from '../support/resources.ts';
import { TEST_SEALER } from '../support/system.ts';
import { observeNow, runTask, serverQuery, serverUp, stateOf, tell, useTaskBench } from '../support/tasks.ts';

/**
 * The tasks the clock asks for rather than a machine, run as a worker runs them on a real
 * shared server with a tenant: they tell no machine anything, so each asserts what it did.
 */
describe('the tasks the clock asks for, on a real server', { timeout: 120_000 }, () => {
  const customer = new FakePlatform();
  beforeAll(() => customer.start());
  afterAll(() => customer.stop());
  const bench = useTaskBench();
  const id = randomUUID();
  let server: string;

  beforeAll(async () => {
    await createTestResource(bench.pool, id, 'shared');
    await runTask(bench, 'place', { entity: id });
    server = (await resourceServers(bench.pool, id))[0]!.id;
    await serverUp(bench, server);
    await observeNow(bench, id);
    await runTask(bench, 'create_tenant', { entity: id });
    expect(await stateOf(bench, id)).toBe('available');
  });

  it("enforce: looks at the shared server's tenants and records each database's size", async () => {
    await enqueueEnforcement(bench.pool, queueForTask('enforce'));
    await runTask(bench, 'enforce', { payload: { server } });
    const { rows } = await bench.pool.query<{ size: string | null }>(`select attrs->'size_bytes' as size from resources where id = $1`, [
      id,
    ]);
    expect(Number(rows[0]!.size)).toBeGreaterThan(1024 * 1024);
  });

  it("notify_resource: delivers a notice to the customer's webhook", async () => {
    await bench.pool.query('update resources set notify_url = $2 where id = $1', [id, `${customer.url}/notices`]);
    await transaction(bench.pool, (client) => noticeToResource(client, id, { phase: 'size_ok', subject: 'a notice', body: 'for you' }));
    await runTask(bench, 'notify_resource', { payload: { resource: id } });
    expect(customer.callsTo('POST', '/notices').map((c) => JSON.parse(c.body).subject)).toEqual(['a notice']);
    const { rows } = await bench.pool.query('select 1 from notifications where resource_id = $1 and delivered_at is null', [id]);
    expect(rows).toEqual([]);
  });

  it('renew_certificate: turns TLS back on for a server an observation found serving none', async () => {
    await serverQuery(bench, server, 'alter system set ssl = off');
    await serverQuery(bench, server, 'select pg_reload_conf()');
    const record = (await loadServerRecord(bench.pool, TEST_SEALER, server))!;
    await expect.poll(async () => (await observeTls(record.host!, record.port!, 2000)).tls_offered).toBe('false');
    await observeNow(bench, server);
    expect(await enqueueRenewals(bench.pool, 30)).toBe(1);
    await runTask(bench, 'renew_certificate', { entity: server });
    expect((await observeTls(record.host!, record.port!, 2000)).tls_offered).toBe('true');
  });

  it('prune_archives: removes the archive of a server deleted longer ago than the retention', async () => {
    const gone = await transaction(bench.pool, (client) =>
      insertServer(client, TEST_SEALER, 'local', { tenancy: 'dedicated', region: 'us-east-1' }),
    );
    await serverUp(bench, gone);
    const key = `${serverArchivePrefix(gone)}/wal/000000010000000000000001`;
    await bench.store.putIfAbsent(key, Buffer.from('wal'), {});
    await tell(bench, gone, { type: 'delete' });
    await runTask(bench, 'destroy', { entity: gone });
    expect(await stateOf(bench, gone)).toBe('deleted');
    // The file's retention is a second.
    await new Promise((r) => setTimeout(r, 1100));
    await enqueueUnlessQueued(bench.pool, 'prune_archives', 'default', [{}]);
    await runTask(bench, 'prune_archives', { payload: {} });
    expect(await bench.store.list(`${serverArchivePrefix(gone)}/`)).toEqual([]);
    const { rows } = await bench.pool.query(`select 1 from servers where id = $1 and attrs ? 'archive_removed_at'`, [gone]);
    expect(rows).toHaveLength(1);
  });
});
