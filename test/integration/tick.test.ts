import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { transaction } from '../../src/db.ts';
import type { Job } from '../../src/queue/jobs.ts';
import { createLogger } from '../../src/log.ts';
import { createServer } from '../../src/servers/rows.ts';
import { recordObservation } from '../../src/runner/observations.ts';
import { wireSubscribers } from '../../src/processes/subscribers.ts';
import { allTasks } from '../../src/processes/tasks.ts';
import { useTestDatabase } from '../support/db.ts';
import { testTaskOptions } from '../support/tasks.ts';
import { TEST_SEALER } from '../support/system.ts';

const t = useTestDatabase(['incidents', 'jobs']);
const config = loadConfig({ LOG_LEVEL: 'silent' });
wireSubscribers(config.paging);

/** The worker's tick for the entity, run as a worker runs it: its outcome committed in one transaction. */
async function tick(entityId: string): Promise<void> {
  const tasks = allTasks({}, await testTaskOptions(t.db.pool, { storeUrl: 'file:///nonexistent', env: {} }));
  const job: Job<'tick'> = {
    id: '1',
    queue: 'default',
    entityId,
    task: 'tick',
    payload: {},
    key: 'tick',
    priority: 0,
    attempts: 1,
    maxAttempts: 1,
  };
  const outcome = await tasks.tick(job, { pool: t.db.pool, log: createLogger('silent') });
  if (outcome) await transaction(t.db.pool, outcome.commit);
}

/** What an observer records of a server that answers with its disk 99 % full. */
const DISK_FULL = { postgres: { reachable: 'true', disk_total_bytes: '100', disk_free_bytes: '1' } };

async function incidentReasons(entityId: string): Promise<string[]> {
  const { rows } = await t.db.pool.query<{ reason: string }>('select reason from incidents where entity_id = $1', [entityId]);
  return rows.map((r) => r.reason);
}

describe('the tick', () => {
  it('pages on a condition it sees in the observation of a live server', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    await recordObservation(t.db.pool, server.id, DISK_FULL, 'servers');
    await tick(server.id);
    expect(await incidentReasons(server.id)).toEqual(['disk filling']);
  });

  it('pages on nothing for a server whose machine has finished: its last observation came before it was deleted', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    await recordObservation(t.db.pool, server.id, DISK_FULL, 'servers');
    await t.db.pool.query(`update machines set state = 'deleted', finished_at = now() where entity_id = $1`, [server.id]);
    await tick(server.id);
    expect(await incidentReasons(server.id)).toEqual([]);
  });
});
