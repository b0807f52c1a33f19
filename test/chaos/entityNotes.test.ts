import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { entityNotes } from '../../src/chaos/entityNotes.ts';
import { enqueue, PRIORITY } from '../../src/queue/jobs.ts';
import { recordObservation } from '../../src/runner/observations.ts';
import { createServer } from '../../src/servers/rows.ts';
import { useTestDatabase } from '../support/db.ts';
import { TEST_SEALER } from '../support/system.ts';

/** What the chaos tool and bench:failover write down about an entity that did not get where it should have. */
const t = useTestDatabase(['jobs']);

describe('the notes on an entity', () => {
  it("tell its machine's state, its latest observation and its jobs, the running one with its holder", async () => {
    const { id } = await createServer(t.db.pool, TEST_SEALER, 'local');
    await recordObservation(t.db.pool, id, { postgres: { reachable: 'true', version: '17' }, probe: { failed_probes: '0' } }, 'servers');
    await enqueue(t.db.pool, { task: 'observe', entityId: id, key: 'observe', priority: PRIORITY.work });
    await t.db.pool.query(
      `update jobs set locked_by = 'w1#abcd', locked_until = now() + interval '30 s' where entity_id = $1 and task = 'observe'`,
      [id],
    );
    const [machine, jobs] = await entityNotes(t.db.pool, id, 'the old primary');
    expect(machine).toMatch(/^the old primary: its machine provisioning since .+; last observed .+ \(reachable true, failed_probes 0\)$/);
    expect(jobs).toMatch(
      /^the old primary: its jobs: .*observe \(observe, priority 1, attempt 0, due [^)]+, held by w1#abcd until [^)]+\)/,
    );
  });

  it('say so of an entity that has no machine', async () => {
    expect(await entityNotes(t.db.pool, randomUUID(), 'the resource')).toEqual(['the resource: no machine']);
  });
});
