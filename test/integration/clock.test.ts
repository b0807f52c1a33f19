import { randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { claimPeriod, enqueueMissing, enqueueReplicatedObservations, pruneObservations } from '../../src/processes/clock.ts';
import { PRIORITY } from '../../src/queue/jobs.ts';
import { createMachine, publishTo, sendEvent } from '../../src/runner/runner.ts';
import { sweepExpiredSessions } from '../../src/web/sessions.ts';
import { createServer } from '../../src/servers/rows.ts';
import { useTestDatabase } from '../support/db.ts';
import { TEST_SEALER } from '../support/system.ts';

const t = useTestDatabase(['jobs', 'clock_runs']);
// What these look at is the jobs of a machine's own entity: no one hears its steps.
publishTo([]);

async function jobsOf(id: string): Promise<string[]> {
  const { rows } = await t.db.pool.query<{ task: string }>('select task from jobs where entity_id = $1 order by task', [id]);
  return rows.map((r) => r.task);
}

describe('clock', () => {
  it('puts back the observation and tick of every live entity, and nothing twice when two clocks run', async () => {
    const a = await createServer(t.db.pool, TEST_SEALER, 'local');
    const b = await createServer(t.db.pool, TEST_SEALER, 'local');
    await t.db.pool.query('delete from jobs');
    await t.db.pool.query(`update machines set finished_at = now() where entity_id = $1`, [b.id]);
    const results = await Promise.all([enqueueMissing(t.db.pool), enqueueMissing(t.db.pool), enqueueMissing(t.db.pool)]);
    expect(results.reduce((x, y) => x + y, 0)).toBe(2);
    expect(await jobsOf(a.id)).toEqual(['observe', 'tick']);
    expect(await jobsOf(b.id)).toEqual([]);
  });

  it('observes the servers of a database with a standby every second: its failover waits on their observations', async () => {
    const [primary, standby, lone] = await Promise.all([1, 2, 3].map(() => createServer(t.db.pool, TEST_SEALER, 'local')));
    const resource = randomUUID();
    await t.db.pool.query(
      `insert into resources (id, plan, region, aws_region, database_name, role_name, password_sealed)
       values ($1, 'ha', 'us', 'us-east-1', $2, $2, 'x')`,
      [resource, `d${resource.slice(0, 8)}`],
    );
    await t.db.pool.query(`insert into resource_servers (resource_id, server_id, role) values ($1, $2, 'primary'), ($1, $3, 'standby')`, [
      resource,
      primary!.id,
      standby!.id,
    ]);
    await t.db.pool.query('delete from jobs');
    expect(await enqueueReplicatedObservations(t.db.pool)).toBe(2);
    expect(await enqueueReplicatedObservations(t.db.pool)).toBe(0);
    expect([await jobsOf(primary!.id), await jobsOf(standby!.id), await jobsOf(lone!.id)]).toEqual([['observe'], ['observe'], []]);
    // Above routine work, raising the routine observation of theirs that the clock put back.
    await t.db.pool.query(`update jobs set priority = $2 where entity_id = $1`, [primary!.id, PRIORITY.routine]);
    expect(await enqueueReplicatedObservations(t.db.pool)).toBe(1);
    const { rows } = await t.db.pool.query<{ p: number }>('select distinct priority as p from jobs where entity_id = any($1::uuid[])', [
      [primary!.id, standby!.id],
    ]);
    expect(rows.map((r) => r.p)).toEqual([PRIORITY.work]);
    // A database whose standby stalled is observed every second too, until it is whole again.
    await createMachine(t.db.pool, 'resource', resource);
    await t.db.pool.query('delete from jobs');
    expect(await enqueueReplicatedObservations(t.db.pool)).toBe(2);
    await t.db.pool.query(`update machines set state = 'unsynchronized' where entity_id = $1`, [resource]);
    expect(await enqueueReplicatedObservations(t.db.pool)).toBe(1);
    expect(await jobsOf(resource)).toEqual(['observe']);
  });

  it('ranks its routine jobs below what machines ask for, and those below what a server in trouble asks for', async () => {
    const server = await createServer(t.db.pool, TEST_SEALER, 'local');
    const other = await createServer(t.db.pool, TEST_SEALER, 'local');
    await t.db.pool.query('delete from jobs where entity_id = $1', [other.id]);
    await enqueueMissing(t.db.pool);
    await sendEvent(t.db.pool, server.id, { type: 'fence' });
    const { rows } = await t.db.pool.query<{ entity: string; task: string; priority: number }>(
      'select entity_id as entity, task, priority from jobs where entity_id = any($1::uuid[]) order by entity_id = $2 desc, task',
      [[server.id, other.id], server.id],
    );
    expect(rows.map((r) => `${r.entity === server.id ? 'server' : 'other'} ${r.task} ${r.priority}`)).toEqual([
      `server fence ${PRIORITY.urgent}`,
      `server observe ${PRIORITY.routine}`,
      `server provision ${PRIORITY.work}`,
      `server tick ${PRIORITY.routine}`,
      `other observe ${PRIORITY.routine}`,
      `other tick ${PRIORITY.routine}`,
    ]);
  });

  it('does periodic work once per period however many clocks race for it', async () => {
    const wins = await Promise.all(Array.from({ length: 8 }, () => claimPeriod(t.db.pool, 'test-period', 60)));
    expect(wins.filter(Boolean)).toHaveLength(1);
    expect(await claimPeriod(t.db.pool, 'test-period', 60)).toBe(false);
    expect(await claimPeriod(t.db.pool, 'test-period', 0.05)).toBe(true);
  });

  it('keeps only recent observations, by dropping whole daily partitions', async () => {
    await pruneObservations(t.db.pool, 10);
    const entity = randomUUID();
    await t.db.pool.query(
      `insert into observations (entity_id, observed_at, source, attrs) values
         ($1, now() - interval '9 days', 'postgres', 'reachable=>true'), ($1, now(), 'postgres', 'reachable=>true')`,
      [entity],
    );
    await pruneObservations(t.db.pool, 2);
    const { rows } = await t.db.pool.query<{ days: number }>(
      `select floor(extract(epoch from now() - observed_at) / 86400)::int as days from observations where entity_id = $1`,
      [entity],
    );
    expect(rows.map((r) => r.days)).toEqual([0]);
    // Partitions exist ahead of time, so tomorrow's observations have somewhere to go.
    await t.db.pool.query(
      `insert into observations (entity_id, observed_at, source, attrs) values ($1, now() + interval '1 day', 'x', '')`,
      [entity],
    );
  });

  it('sweeps sessions and used SSO tokens that have expired, and keeps the live ones', async () => {
    const token = () => randomBytes(32);
    const live = token();
    await t.db.pool.query(
      `insert into sessions (token_sha256, purpose, resource_id, csrf, expires_at)
       values ($1, 'console', null, 'c', now() - interval '1 minute'), ($2, 'console', null, 'c', now() + interval '1 hour')`,
      [token(), live],
    );
    await t.db.pool.query(`insert into sso_tokens_used (token_sha256, expires_at) values ($1, now() - interval '1 second')`, [token()]);
    await sweepExpiredSessions(t.db.pool);
    expect((await t.db.pool.query<{ t: Buffer }>('select token_sha256 as t from sessions')).rows.map((r) => r.t.equals(live))).toEqual([
      true,
    ]);
    expect((await t.db.pool.query('select 1 from sso_tokens_used')).rowCount).toBe(0);
  });
});
