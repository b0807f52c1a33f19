import { describe, expect, it, vi } from 'vitest';
import { parseServerObservation } from '../../machines/observations.ts';
import { transaction } from '../../src/db.ts';
import { publishTo, sendEvent, type ObservationShown, type StepTaken } from '../../src/runner/runner.ts';
import { createServer } from '../../src/servers/rows.ts';
import { useTestDatabase } from '../support/db.ts';
import { TEST_SEALER } from '../support/system.ts';

/**
 * The runner publishes what happened and knows nothing of who listens: its subscribers are
 * called in the transaction that stores the step, so what they do commits or rolls back with it.
 */
const t = useTestDatabase(['jobs']);

async function stateOf(id: string): Promise<{ state: string; transitions: number; jobs: string[] }> {
  const { rows } = await t.db.pool.query<{ state: string; transitions: number; jobs: string[] }>(
    `select state, (select count(*)::int from transitions where entity_id = $1) as transitions,
       array(select task from jobs where entity_id = $1 order by task) as jobs
     from machines where entity_id = $1`,
    [id],
  );
  return rows[0]!;
}

describe('the runner', () => {
  it('refuses to send an event before the process has said who hears its steps', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    vi.resetModules();
    // A process that wired nothing: the runner as its first import finds it.
    const unwired = await import('../../src/runner/runner.ts');
    await expect(transaction(t.db.pool, (client) => unwired.sendEvent(client, server.id, { type: 'fence' }))).rejects.toThrow(
      /no one hears what the runner does/,
    );
    expect((await stateOf(server.id)).state).toBe('provisioning');
  });

  it('publishes a change of state to its subscribers, whose writes commit with the step', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    const heard: StepTaken[] = [];
    publishTo([
      {
        async changed(db, step) {
          heard.push(step);
          await db.query(`update servers set attrs = attrs || hstore('heard', $2) where id = $1`, [
            step.entityId,
            `${step.from} → ${step.to}`,
          ]);
        },
      },
    ]);
    await transaction(t.db.pool, (client) => sendEvent(client, server.id, { type: 'fence' }));
    expect(heard).toEqual([
      {
        machine: 'server',
        entityId: server.id,
        from: 'provisioning',
        to: 'fencing',
        jobs: [{ type: 'job', task: 'fence' }],
        event: { type: 'fence', at: heard[0]!.at },
        at: expect.stringMatching(/^\d{4}-/),
        jobId: undefined,
      },
    ]);
    const { rows } = await t.db.pool.query<{ heard: string }>(`select attrs->'heard' as heard from servers where id = $1`, [server.id]);
    expect(rows[0]!.heard).toBe('provisioning → fencing');
  });

  it('rolls the step back, its transition and its jobs too, when a subscriber fails', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    const before = await stateOf(server.id);
    publishTo([
      {
        async changed() {
          throw new Error('a subscriber that fails');
        },
      },
    ]);
    await expect(transaction(t.db.pool, (client) => sendEvent(client, server.id, { type: 'fence' }))).rejects.toThrow(
      'a subscriber that fails',
    );
    expect(await stateOf(server.id)).toEqual(before);
  });

  it('publishes an observation shown to a live machine whether or not it moves, and none to a finished one', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    const changed: string[] = [];
    const observed: ObservationShown[] = [];
    publishTo([
      {
        changed: async (_, step) => void changed.push(step.to),
        observed: async (_, observation) => void observed.push(observation),
      },
    ]);
    const at = new Date().toISOString();
    const shown = { type: 'observed' as const, at, obs: parseServerObservation({ reachable: 'false' }) };
    await transaction(t.db.pool, (client) => sendEvent<'server'>(client, server.id, shown));
    expect(changed).toEqual([]);
    expect(observed).toEqual([{ machine: 'server', entityId: server.id, at, obs: { reachable: 'false' } }]);
    await t.db.pool.query(`update machines set state = 'deleted', finished_at = now() where entity_id = $1`, [server.id]);
    expect(await transaction(t.db.pool, (client) => sendEvent<'server'>(client, server.id, shown))).toBeUndefined();
    expect(observed).toHaveLength(1);
  });

  it('keeps an observation that moved a machine as its observers recorded it, not as the machine read it', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    await t.db.pool.query(
      `update machines set state = 'available', snapshot = jsonb_set(snapshot, '{value}', '"available"') where entity_id = $1`,
      [server.id],
    );
    const at = new Date().toISOString();
    const raw = { reachable: 'false', alive: 'true', failed_probes: '1' };
    const step = await transaction(t.db.pool, (client) =>
      sendEvent<'server'>(client, server.id, { type: 'observed', at, obs: parseServerObservation(raw) }),
    );
    expect(step?.to).toBe('unreachable');
    const { rows } = await t.db.pool.query<{ data: unknown }>(
      `select event_data as data from transitions where entity_id = $1 and event = 'observed'`,
      [server.id],
    );
    expect(rows).toEqual([{ data: { at, obs: raw } }]);
  });
});
