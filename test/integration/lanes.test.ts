import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseServerObservation } from '../../machines/observations.ts';
import { createLogger } from '../../src/log.ts';
import { enqueue, enqueueMany, PRIORITY, type TaskMap } from '../../src/queue/jobs.ts';
import { Worker, type AnyJobHandler } from '../../src/queue/worker.ts';
import { publishTo, sendEvent } from '../../src/runner/runner.ts';
import { createServer } from '../../src/servers/rows.ts';
import { useTestDatabase, waitFor } from '../support/db.ts';
import { TEST_SEALER } from '../support/system.ts';

/**
 * An observation changes nothing in the world: it must not wait behind a stuck action of
 * its entity, or a held `promote` blinds the machine (issue 11). Each entity has two lanes,
 * one for observing (observe, tick) and one for acting, and runs one job at a time in each.
 */
const log = createLogger('silent');
const t = useTestDatabase(['jobs']);
// What these look at is the jobs of a machine's own entity: no one hears its steps.
publishTo([]);

describe('lanes', () => {
  it('refuses, in the schema, a second running job of one entity in one lane, not one in the other lane', async () => {
    const entity = randomUUID();
    await enqueueMany(t.db.pool, [
      { task: 'observe', entityId: entity, key: 'observe' },
      { task: 'tick', entityId: entity, key: 'tick' },
      { task: 'promote', entityId: entity, key: 'promote' },
      { task: 'fence', entityId: entity, key: 'fence' },
    ]);
    const lock = (task: string) => t.db.pool.query(`update jobs set locked_by = $2 where entity_id = $1 and task = $2`, [entity, task]);
    await lock('observe');
    await lock('promote');
    await expect(lock('tick')).rejects.toMatchObject({ code: '23505' });
    await expect(lock('fence')).rejects.toMatchObject({ code: '23505' });
  });

  it('observes and ticks an entity while its action hangs, one observation at a time', async () => {
    const entity = randomUUID();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let observing = 0;
    let overlaps = 0;
    const ran: string[] = [];
    const observation: AnyJobHandler = async (job) => {
      observing += 1;
      if (observing > 1) overlaps += 1;
      await new Promise((r) => setTimeout(r, 50));
      observing -= 1;
      ran.push(job.task);
    };
    const handlers: Record<string, AnyJobHandler> = { promote: () => gate, observe: observation, tick: observation };
    const worker = new Worker<TaskMap>(t.db.pool, { queues: undefined, concurrency: 8, leaseSeconds: 30, handlers, log, pollMs: 200 });
    await worker.start();
    try {
      await enqueue(t.db.pool, { task: 'promote', entityId: entity, key: 'promote', priority: PRIORITY.urgent });
      await waitFor(
        'the action to start',
        async () => (await t.db.pool.query('select 1 from jobs where locked_by is not null')).rowCount === 1,
      );
      await enqueueMany(t.db.pool, [
        { task: 'observe', entityId: entity, key: 'observe', queue: 'observe' },
        { task: 'tick', entityId: entity, key: 'tick' },
      ]);
      await waitFor('the observation and the tick to run beside the action', async () => ran.length === 2, 10_000);
      expect(overlaps).toBe(0);
    } finally {
      release();
      await worker.stop();
    }
  });

  it('asks for a job again on a fresh observation, but not while that job runs: its report is still to come', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    for (const type of ['fence', 'fenced', 'rejoin'] as const) await sendEvent(t.db.pool, server.id, { type });
    const rejoins = async () =>
      (
        await t.db.pool.query<{ running: boolean }>(
          `select locked_by is not null as running from jobs where entity_id = $1 and task = 'rejoin'`,
          [server.id],
        )
      ).rows.map((r) => r.running);
    expect(await rejoins()).toEqual([false]);
    await t.db.pool.query(
      `update jobs set locked_by = 'w#1', locked_until = now() + interval '1 minute' where entity_id = $1 and task = 'rejoin'`,
      [server.id],
    );
    const seen = () =>
      sendEvent<'server'>(t.db.pool, server.id, {
        type: 'observed',
        at: new Date().toISOString(),
        obs: parseServerObservation({ reachable: 'false' }),
      });
    // A tick runs beside the rejoin now: a second rejoin queued behind the first would run
    // once the first has finished, against a server that is a standby again.
    await seen();
    expect(await rejoins()).toEqual([true]);
    // The job fell out (an operator deleted it): the next fresh observation puts it back.
    await t.db.pool.query(`delete from jobs where entity_id = $1 and task = 'rejoin'`, [server.id]);
    await new Promise((r) => setTimeout(r, 5));
    await seen();
    expect(await rejoins()).toEqual([false]);
  });
});
