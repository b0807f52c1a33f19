import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCredential, namedRole, requestRotation } from '../../src/credentials/rows.ts';
import { findPlan } from '../../src/plans.ts';
import { changePlan, loadResourceRecord, resourceServers, tellResource } from '../../src/resources/rows.ts';
import { PLATFORM_LOGIN_SLOTS, type Tenant } from '../../src/pg/tenant.ts';
import { loadServerRecord } from '../../src/servers/rows.ts';
import { FakePlatform } from '../support/platform.ts';
import { createTestResource } from '../support/resources.ts';
import { TEST_SEALER } from '../support/system.ts';
import { asked, lastTransition, observeNow, runTask, serverQuery, serverUp, stateOf, tell, useTaskBench } from '../support/tasks.ts';

/**
 * Each task of the resource machine on a shared plan and across a move to a dedicated
 * server, run as a worker runs it against real servers of the local provider: the event
 * its report gives the machine, where that takes the machine, and what the task did to the
 * servers. One database lives through the file's tests in order; the high-availability
 * steps are in test/tasks/failover.test.ts.
 */
describe('the resource tasks, on real servers', { timeout: 120_000 }, () => {
  const platform = new FakePlatform();
  beforeAll(() => platform.start());
  afterAll(() => platform.stop());
  const bench = useTaskBench({ pooler: true, platformUrl: () => platform.url });
  const id = randomUUID();

  const servers = () => resourceServers(bench.pool, id);
  const serverWithRole = async (role: string) => (await servers()).find((s) => s.role === role)!;
  const tenant = async () => (await loadResourceRecord(bench.pool, TEST_SEALER, id))!.tenant;
  const context = async () =>
    (
      await bench.pool.query<{ context: Record<string, unknown> }>(
        `select snapshot->'context' as context from machines where entity_id = $1`,
        [id],
      )
    ).rows[0]!.context;

  /** Log in as a tenant's role over TLS, as a customer does, and run `sql`. */
  async function asTenant(
    server: { host: string | null; port: number | null },
    login: Pick<Tenant, 'database' | 'role' | 'password'>,
    sql: string,
  ) {
    const client = new pg.Client({
      host: server.host!,
      port: server.port!,
      user: login.role,
      password: login.password,
      database: login.database,
      ssl: { ca: bench.ca },
      connectionTimeoutMillis: 5000,
    });
    client.on('error', () => undefined);
    await client.connect();
    try {
      return (await client.query(sql)).rows;
    } finally {
      await client.end();
    }
  }
  const refused = (promise: Promise<unknown>) => expect(promise).rejects.toThrow();

  beforeAll(async () => {
    await createTestResource(bench.pool, id, 'shared', { callbackUrl: `${platform.url}/addons/${id}`, oauthGrant: { code: 'grant' } });
  });

  it('place: puts the database on a new shared server and reports `placed`', async () => {
    await runTask(bench, 'place', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'placed', from: 'creating.placing.trying', to: 'creating.waiting' });
    const primary = await serverWithRole('primary');
    expect(primary.tenancy).toBe('shared');
    expect(await asked(bench, 'provision', primary.id)).toBe(true);
  });

  it('observe and tick: its primary seen available takes the database on to its tenant', async () => {
    await serverUp(bench, (await serverWithRole('primary')).id);
    await observeNow(bench, id);
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'observed', from: 'creating.waiting', to: 'creating.tenant.trying' });
  });

  it('create_tenant: makes the database and its owner, and reports `tenant.created`', async () => {
    await runTask(bench, 'create_tenant', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'tenant.created', from: 'creating.tenant.trying', to: 'available' });
    expect(await asTenant(await serverWithRole('primary'), await tenant(), 'select current_user as who')).toEqual([
      { who: (await tenant()).role },
    ]);
  });

  it('deliver: reports `delivery.failed` while the platform fails, and `delivered` once it has the config', async () => {
    platform.failing = true;
    await tell(bench, id, { type: 'deferred' });
    await runTask(bench, 'deliver', { entity: id });
    const failed = await lastTransition(bench, id);
    expect(failed).toMatchObject({ event: 'delivery.failed', from: 'available', to: 'available', byJob: true });
    expect(failed.data?.error).toEqual(expect.any(String));
    expect(await context()).toMatchObject({ deliver: true, deliveryFailures: 1 });

    platform.failing = false;
    await runTask(bench, 'deliver', { entity: id });
    // Delivered, the machine stays where it is: its context says so, not a transition row.
    expect(await context()).toMatchObject({ deliver: false, deliveryFailures: 0 });
    const patch = platform.callsTo('PATCH', `/addons/${id}/config`).at(-1)!;
    const vars = JSON.parse(patch.body).config as { name: string; value: string }[];
    expect(vars.map((v) => v.name)).toContain('DATABASE_URL');
    expect(await asked(bench, 'deliver', id)).toBe(false);
  });

  it('apply_plan: reports `step.failed` while the primary is down, and `applied` with the new limits once it is back', async () => {
    const primary = await serverWithRole('primary');
    const record = (await loadServerRecord(bench.pool, TEST_SEALER, primary.id))!;
    await changePlan(bench.pool, id, findPlan('shared-plus')!, { move: false });
    await bench.local.host(record).stop('fast');
    try {
      await runTask(bench, 'apply_plan', { entity: id });
      const failed = await lastTransition(bench, id);
      expect(failed).toMatchObject({ event: 'step.failed', from: 'resizing.trying', to: 'resizing.trying', byJob: true });
      expect(failed.data?.error).toEqual(expect.any(String));
    } finally {
      await bench.local.host(record).start();
    }
    await runTask(bench, 'apply_plan', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'applied', from: 'resizing.trying', to: 'available' });
    const role = (await tenant()).role;
    const limits = await serverQuery<{ limit: number }>(
      bench,
      primary.id,
      `select rolconnlimit as limit from pg_roles where rolname = '${role}'`,
    );
    expect(limits).toEqual([{ limit: findPlan('shared-plus')!.connectionLimit + PLATFORM_LOGIN_SLOTS }]);
  });

  it('rotate_password: sets the pending password on the primary and reports `rotated`', async () => {
    const before = await tenant();
    const outcome = await requestRotation(bench.pool, TEST_SEALER, (await loadResourceRecord(bench.pool, TEST_SEALER, id))!, 'available');
    expect(outcome.ok).toBe(true);
    await runTask(bench, 'rotate_password', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'rotated', from: 'rotating.trying', to: 'available' });
    const after = await tenant();
    expect(after.password).not.toBe(before.password);
    const primary = await serverWithRole('primary');
    expect(await asTenant(primary, after, 'select 1 as one')).toEqual([{ one: 1 }]);
    await refused(asTenant(primary, before, 'select 1'));
  });

  it('sync_credentials: makes a named credential on the primary and reports `credentials.synced`', async () => {
    const resource = (await loadResourceRecord(bench.pool, TEST_SEALER, id))!;
    const created = await createCredential(bench.pool, TEST_SEALER, resource, 'available', 'reader', 'read');
    if (!created.ok) throw new Error(created.message);
    await runTask(bench, 'sync_credentials', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'credentials.synced', from: 'syncing.trying', to: 'available' });
    const role = namedRole(resource.tenant.role, 'reader');
    const primary = await serverWithRole('primary');
    expect(
      await asTenant(primary, { database: resource.tenant.database, role, password: created.value }, 'select current_user as who'),
    ).toEqual([{ who: role }]);
  });

  describe('a move to a dedicated server', () => {
    let from: string;

    it('place: puts the database on a new dedicated server as the target of the move, and reports `placed`', async () => {
      from = (await serverWithRole('primary')).id;
      await asTenant(await serverWithRole('primary'), await tenant(), 'create table kept (n int); insert into kept values (42)');
      await changePlan(bench.pool, id, findPlan('dedicated')!, { move: true });
      await runTask(bench, 'place', { entity: id });
      expect(await lastTransition(bench, id)).toMatchObject({ event: 'placed', from: 'changing.placing.trying', to: 'changing.waiting' });
      const target = await serverWithRole('target');
      expect(target.tenancy).toBe('dedicated');
      await serverUp(bench, target.id);
      await observeNow(bench, id);
      expect(await stateOf(bench, id)).toBe('changing.copying.trying');
    });

    it('move: copies every committed row to the target, which becomes the primary, and reports `moved`', async () => {
      const target = (await serverWithRole('target')).id;
      await runTask(bench, 'move', { entity: id });
      expect(await lastTransition(bench, id)).toMatchObject({
        event: 'moved',
        from: 'changing.copying.trying',
        to: 'changing.activating.trying',
      });
      expect((await serverWithRole('primary')).id).toBe(target);
      expect((await serverWithRole('former')).id).toBe(from);
      expect(await serverQuery(bench, target, 'select n from kept', (await tenant()).database)).toEqual([{ n: 42 }]);
    });

    it('activate: lets the tenant in on the new primary and reports `activated`', async () => {
      await runTask(bench, 'activate', { entity: id });
      expect(await lastTransition(bench, id)).toMatchObject({
        event: 'activated',
        from: 'changing.activating.trying',
        to: 'changing.cleaning.trying',
      });
      expect(await asTenant(await serverWithRole('primary'), await tenant(), 'select n from kept')).toEqual([{ n: 42 }]);
    });

    it('cleanup: drops the tenant from the shared server it left and reports `cleaned`', async () => {
      await runTask(bench, 'cleanup', { entity: id });
      expect(await lastTransition(bench, id)).toMatchObject({ event: 'cleaned', from: 'changing.cleaning.trying', to: 'available' });
      expect((await servers()).map((s) => s.role)).toEqual(['primary']);
      const database = (await tenant()).database;
      expect(await serverQuery(bench, from, `select datname from pg_database where datname = '${database}'`)).toEqual([]);
    });
  });

  it('drop_tenant: takes the database off its servers, asks for its dedicated server to be deleted, and reports `dropped`', async () => {
    const primary = (await serverWithRole('primary')).id;
    await tellResource(bench.pool, id, { type: 'deprovision' });
    await runTask(bench, 'drop_tenant', { entity: id });
    expect(await lastTransition(bench, id)).toMatchObject({ event: 'dropped', from: 'deprovisioning.trying', to: 'deleted' });
    expect(await servers()).toEqual([]);
    expect(await stateOf(bench, primary)).toBe('deleting');
    expect(await asked(bench, 'destroy', primary)).toBe(true);
  });
});
