import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createPool, type Queryable } from '../../src/db.ts';
import { settler } from '../../src/web/settle.ts';
import { useTestDatabase, waitFor } from '../support/db.ts';

/** Provisions waiting to answer with the config share their looks at the control database. */
describe('waiting for resources to settle', () => {
  const ctx = useTestDatabase(['machines']);

  async function resource(state: string): Promise<string> {
    const id = randomUUID();
    await ctx.db.pool.query(`insert into machines (entity_id, machine, version, state, snapshot) values ($1, 'resource', 1, $2, '{}')`, [
      id,
      state,
    ]);
    return id;
  }

  const setState = (ids: string[], state: string) =>
    ctx.db.pool.query('update machines set state = $2 where entity_id = any($1::uuid[])', [ids, state]);

  it('looks at every waiting resource in one query, and answers each by its own state', async () => {
    const ids = await Promise.all(Array.from({ length: 50 }, () => resource('creating')));
    const looks: string[][] = [];
    const counted: Queryable = {
      query: ((sql: string, values: [string[]]) => (looks.push(values[0]), ctx.db.pool.query(sql, values))) as Queryable['query'],
    };
    const { settled } = settler(counted);
    const answers = Promise.all(ids.map((id) => settled(id, 60)));
    await waitFor('a look at all 50 at once', async () => looks.some((l) => l.length === 50), 10_000, 5);
    const [gone, ...ready] = ids;
    await setState(ready, 'available');
    await setState([gone!], 'deprovisioning');
    expect(await answers).toEqual([false, ...ready.map(() => true)]);
  });

  it('answers false when the time runs out, also for a resource it does not know', async () => {
    const { settled } = settler(ctx.db.pool);
    expect(
      await Promise.all([settled(await resource('creating'), 0.2), settled(randomUUID(), 0.2), settled(await resource('available'), 0.2)]),
    ).toEqual([false, false, true]);
  });

  it('hands a failed look to every request waiting on it', async () => {
    // Nothing listens on port 1: every connection is refused.
    const unreachable = createPool('postgres://pgfleet@127.0.0.1:1/pgfleet');
    const { settled } = settler(unreachable);
    const answers = [settled(randomUUID(), 5), settled(randomUUID(), 5)].map((p) =>
      p.then(
        () => 'answered',
        () => 'failed',
      ),
    );
    expect(await Promise.all(answers)).toEqual(['failed', 'failed']);
    await unreachable.end();
  });
});
