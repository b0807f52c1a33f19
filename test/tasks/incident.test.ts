import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transaction } from '../../src/db.ts';
import { scheduleMaintenance } from '../../src/incidents/maintenance.ts';
import { linkServer } from '../../src/resources/placement.ts';
import { insertServer, loadServerRecord } from '../../src/servers/rows.ts';
import { FakePlatform } from '../support/platform.ts';
import { createTestResource } from '../support/resources.ts';
import { TEST_SEALER } from '../support/system.ts';
import { asked, dropJobs, lastTransition, observeNow, runTask, serverUp, stateOf, tell, useTaskBench } from '../support/tasks.ts';

/**
 * The incident machine's tasks, run as a worker runs them, about a real server of the local
 * provider that serves a database: scheduled maintenance (the customer told, the changeover
 * restarting the server), and trouble (a deadline, a page, and its resolution). Pages go to
 * a stand-in webhook.
 */
describe('the incident tasks, about a real server', { timeout: 120_000 }, () => {
  const pager = new FakePlatform();
  beforeAll(() => pager.start());
  afterAll(() => pager.stop());
  const bench = useTaskBench({ pagerUrl: () => `${pager.url}/pager` });
  let server: string;
  let resource: string;

  const notifications = async (incident: string) =>
    (
      await bench.pool.query<{ resource: string; phase: string }>(
        'select resource_id as resource, phase from notifications where incident_id = $1 order by created_at',
        [incident],
      )
    ).rows;
  const incidentOf = async (kind: string) =>
    (await bench.pool.query<{ id: string }>('select id from incidents where entity_id = $1 and kind = $2', [server, kind])).rows[0]?.id;
  const pages = () => pager.callsTo('POST', '/pager').map((c) => JSON.parse(c.body) as { event_action: string; dedup_key: string });

  beforeAll(async () => {
    server = await transaction(bench.pool, (client) =>
      insertServer(client, TEST_SEALER, 'local', { tenancy: 'shared', region: 'us-east-1' }),
    );
    await serverUp(bench, server);
    resource = randomUUID();
    await createTestResource(bench.pool, resource, 'shared');
    await linkServer(bench.pool, resource, server, 'primary');
    // Only the incidents' tasks and the server's run here: not the new database's own steps.
    await dropJobs(bench);
  });

  describe('scheduled maintenance', () => {
    let incident: string;

    it('notify: tells every customer on the server when it will restart', async () => {
      incident = (await scheduleMaintenance(bench.pool, server, new Date(Date.now() + 3_600_000)))!;
      expect(await stateOf(bench, incident)).toBe('scheduled');
      await runTask(bench, 'notify', { entity: incident });
      expect(await notifications(incident)).toEqual([{ resource, phase: 'scheduled' }]);
    });

    it("changeover: reports `changeover.started` and has the server's machine restart it on purpose", async () => {
      expect(await asked(bench, 'changeover', incident)).toBe(true);
      await runTask(bench, 'changeover', { entity: incident });
      expect(await lastTransition(bench, incident, 'changeover.started')).toMatchObject({
        event: 'changeover.started',
        from: 'scheduled',
        to: 'changing',
        byJob: true,
      });
      expect(await lastTransition(bench, server)).toMatchObject({ event: 'maintain', from: 'available', to: 'maintaining.running' });
      await runTask(bench, 'maintain', { entity: server });
      await observeNow(bench, server);
      expect(await stateOf(bench, incident)).toBe('resolved');
      await runTask(bench, 'notify', { entity: incident });
      expect((await notifications(incident)).map((n) => n.phase)).toEqual(['scheduled', 'done']);
    });
  });

  describe('trouble', () => {
    let incident: string;

    it('deadline: reports `deadline`, and the incident waits on while its time has not run out', async () => {
      const record = (await loadServerRecord(bench.pool, TEST_SEALER, server))!;
      await bench.local.host(record).kill();
      await observeNow(bench, server);
      expect(await stateOf(bench, server)).toBe('unreachable');
      incident = (await incidentOf('trouble'))!;
      expect(await stateOf(bench, incident)).toBe('open');
      await runTask(bench, 'deadline', { entity: incident });
      expect(await lastTransition(bench, incident)).toMatchObject({ event: 'deadline', from: 'open', to: 'open', byJob: true });
      expect(await asked(bench, 'deadline', incident)).toBe(true);
    });

    it('page: pages a human about an escalated incident', async () => {
      await tell(bench, incident, { type: 'escalate', reason: 'exception', detail: 'a task raised an error' });
      expect(await stateOf(bench, incident)).toBe('escalated');
      await runTask(bench, 'page', { entity: incident });
      expect(pages()).toEqual([expect.objectContaining({ event_action: 'trigger', dedup_key: incident })]);
      const { rows } = await bench.pool.query('select action from pages where incident_id = $1', [incident]);
      expect(rows).toEqual([{ action: 'trigger' }]);
    });

    it('unpage: resolves the page once the server is back', async () => {
      await observeNow(bench, server);
      expect(await stateOf(bench, server)).toBe('restarting.running');
      await runTask(bench, 'restart', { entity: server });
      await observeNow(bench, server);
      expect(await stateOf(bench, server)).toBe('available');
      expect(await stateOf(bench, incident)).toBe('resolved');
      await runTask(bench, 'unpage', { entity: incident });
      expect(pages().map((p) => p.event_action)).toEqual(['trigger', 'resolve']);
    });
  });
});
