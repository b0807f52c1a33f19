import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { incidentJournal } from '../../src/incidents/escalation.ts';
import { incidentSubscriber } from '../../src/incidents/subscriber.ts';
import { createLogger } from '../../src/log.ts';
import { claimJobs } from '../../src/queue/claim.ts';
import { enqueue, enqueueMany, PRIORITY, type AnyJob, type TaskMap } from '../../src/queue/jobs.ts';
import { listDeadJobs, retryDeadJob } from '../../src/queue/status.ts';
import { Worker, type AnyJobHandler } from '../../src/queue/worker.ts';
import { publishTo } from '../../src/runner/runner.ts';
import { useTestDatabase, waitFor } from '../support/db.ts';

const log = createLogger('silent');
const t = useTestDatabase(['jobs']);
// An escalated job's incident is told of it as in every process: incidents hear its steps.
publishTo([incidentSubscriber]);

async function pending(): Promise<number> {
  const { rows } = await t.db.pool.query<{ n: number }>('select count(*)::int as n from jobs');
  return rows[0]!.n;
}

async function withWorkers<T>(
  count: number,
  handlers: Record<string, AnyJobHandler>,
  fn: () => Promise<T>,
  extra: Partial<ConstructorParameters<typeof Worker<TaskMap>>[1]> = {},
): Promise<T> {
  const workers = Array.from(
    { length: count },
    () => new Worker<TaskMap>(t.db.pool, { queues: undefined, concurrency: 8, leaseSeconds: 30, handlers, log, pollMs: 200, ...extra }),
  );
  await Promise.all(workers.map((w) => w.start()));
  try {
    return await fn();
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}

describe('queue', () => {
  it('refuses, in the schema, a second running job for one entity', async () => {
    const entity = randomUUID();
    await enqueueMany<TaskMap>(t.db.pool, [
      { task: 'a', entityId: entity },
      { task: 'b', entityId: entity },
    ]);
    await t.db.pool.query(`update jobs set locked_by = 'w1' where entity_id = $1 and task = 'a'`, [entity]);
    await expect(t.db.pool.query(`update jobs set locked_by = 'w2' where entity_id = $1 and task = 'b'`, [entity])).rejects.toMatchObject({
      code: '23505',
    });
  });

  it('never runs two jobs of one entity at once, across workers under load, and runs each job once', async () => {
    const entities = Array.from({ length: 12 }, () => randomUUID());
    const specs = entities.flatMap((entityId) => Array.from({ length: 40 }, (_, i) => ({ task: 'work', entityId, payload: { i } })));
    await enqueueMany<TaskMap>(t.db.pool, specs);
    const running = new Set<string>();
    const runs = new Map<string, number>();
    let overlaps = 0;
    let maxParallel = 0;
    const handler: AnyJobHandler = async (job: AnyJob) => {
      if (running.has(job.entityId!)) overlaps += 1;
      running.add(job.entityId!);
      maxParallel = Math.max(maxParallel, running.size);
      await new Promise((r) => setTimeout(r, Math.random() * 4));
      running.delete(job.entityId!);
      runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
    };
    await withWorkers(3, { work: handler }, () => waitFor('the queue to drain', async () => (await pending()) === 0));
    expect(overlaps).toBe(0);
    expect(runs.size).toBe(specs.length);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    // Serialization per entity, not a global lock: several entities did run side by side.
    expect(maxParallel).toBeGreaterThan(1);
  });

  it('is fair: one busy entity does not starve the others', async () => {
    const busy = randomUUID();
    await enqueueMany<TaskMap>(
      t.db.pool,
      Array.from({ length: 300 }, () => ({ task: 'work', entityId: busy })),
    );
    const quiet = Array.from({ length: 5 }, () => randomUUID());
    await enqueueMany<TaskMap>(
      t.db.pool,
      quiet.map((entityId) => ({ task: 'work', entityId })),
    );
    const order: string[] = [];
    await withWorkers(1, { work: async (job) => void order.push(job.entityId!) }, () =>
      waitFor('the queue to drain', async () => (await pending()) === 0),
    );
    // Each quiet entity's job runs within the first few claims, not after the busy backlog.
    const lastQuiet = Math.max(...quiet.map((e) => order.indexOf(e)));
    expect(lastQuiet).toBeLessThan(20);
  });

  it('retries a failing job with backoff, then shows it dead; an operator can retry it', async () => {
    const entity = randomUUID();
    await enqueue<TaskMap>(t.db.pool, { task: 'flaky', entityId: entity, maxAttempts: 2 });
    let calls = 0;
    await withWorkers(
      1,
      {
        flaky: async () => {
          calls += 1;
          throw new Error(`attempt ${calls} broke`);
        },
      },
      async () => {
        // Attempt 1 fails at once; the retry waits 2 s of backoff; attempt 2 makes it dead.
        const dead = await waitFor(
          'the job to die',
          async () => (await listDeadJobs(t.db.pool)).find((j) => j.entityId === entity),
          20_000,
        );
        expect(dead.lastError).toBe('attempt 2 broke');
        expect(dead.attempts).toBe(2);
        const { rows } = await t.db.pool.query<{ gap: number }>(
          `select extract(epoch from dead_at - created_at)::float8 as gap from jobs where id = $1`,
          [dead.id],
        );
        expect(rows[0]!.gap).toBeGreaterThanOrEqual(2);
        expect(await retryDeadJob(t.db.pool, dead.id)).toBe(true);
        await waitFor('the retried job to run', async () => calls >= 3);
      },
    );
  });

  it("pages a human for a job's unexpected error, not for a lost connection, which the retry is for", async () => {
    // A control-database restart failed every job under way with "Connection terminated
    // unexpectedly", and each opened an incident and paged (the chaos run's control-restart).
    const [lost, broken] = [randomUUID(), randomUUID()];
    for (const id of [lost, broken]) {
      await t.db.pool.query(
        `insert into machines (entity_id, machine, version, state, snapshot)
         values ($1, 'server', 1, 'available', '{"value":"available","context":{}}')`,
        [id],
      );
    }
    await enqueue<TaskMap>(t.db.pool, { task: 'lose', entityId: lost, maxAttempts: 1 });
    await enqueue<TaskMap>(t.db.pool, { task: 'break', entityId: broken, maxAttempts: 1 });
    const handlers: Record<string, AnyJobHandler> = {
      async lose() {
        const client = new pg.Client({ connectionString: t.db.url });
        client.on('error', () => undefined);
        await client.connect();
        await client.query('select pg_terminate_backend(pg_backend_pid())');
      },
      async break() {
        throw new Error('a bug');
      },
    };
    await withWorkers(1, handlers, () => waitFor('both jobs to die', async () => (await listDeadJobs(t.db.pool)).length === 2), {
      journal: incidentJournal,
    });
    const { rows } = await t.db.pool.query<{ entity_id: string }>('select entity_id from incidents');
    expect(rows.map((r) => r.entity_id)).toEqual([broken]);
    await t.db.pool.query('delete from incidents');
    await t.db.pool.query('delete from machines where entity_id = any($1::uuid[]) or machine = $2', [[lost, broken], 'incident']);
  });

  it('runs a job again after its worker dies mid-job and its lease runs out', async () => {
    const entity = randomUUID();
    await enqueue<TaskMap>(t.db.pool, { task: 'hang', entityId: entity });
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/hanging-worker.ts'], {
      env: { ...process.env, DATABASE_URL: t.db.url, LEASE: '2' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await waitFor('the child worker to claim the job', async () => out.includes('claimed'), 30_000);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const ranAgain: string[] = [];
    await withWorkers(1, { hang: async (job) => void ranAgain.push(`${job.id}:${job.attempts}`) }, () =>
      waitFor('the job to run again', async () => ranAgain.length > 0, 30_000),
    );
    expect(ranAgain).toHaveLength(1);
    expect(ranAgain[0]).toMatch(/:2$/);
  });

  it('keeps the lease of a job that is still running while its worker stops', async () => {
    await enqueue<TaskMap>(t.db.pool, { task: 'slow' });
    const runs: string[] = [];
    const slow: AnyJobHandler = async (job) => {
      runs.push(job.id);
      await new Promise((r) => setTimeout(r, 2500));
    };
    const stopping = new Worker<TaskMap>(t.db.pool, {
      queues: undefined,
      concurrency: 1,
      leaseSeconds: 1,
      handlers: { slow },
      log,
      pollMs: 100,
    });
    await stopping.start();
    await waitFor('the job to start', async () => runs.length === 1);
    const stopped = stopping.stop();
    // Another worker sweeps expired leases meanwhile; the job must not be taken from the first.
    await withWorkers(1, { slow }, () => stopped, { leaseSeconds: 1 });
    expect(runs).toHaveLength(1);
    expect(await pending()).toBe(0);
  });

  it('wakes an idle worker with NOTIFY instead of waiting for its poll', async () => {
    const ran: number[] = [];
    await withWorkers(
      1,
      { ping: async () => void ran.push(Date.now()) },
      async () => {
        await new Promise((r) => setTimeout(r, 300));
        await enqueue<TaskMap>(t.db.pool, { task: 'ping' });
        // The worker polls once a minute here, so only the notification can wake it in time.
        await waitFor('the job to run', async () => ran.length > 0, 20_000);
      },
      { pollMs: 60_000 },
    );
    expect(ran).toHaveLength(1);
  });

  it('runs a delayed job when it falls due, not at the next poll', async () => {
    const ran: number[] = [];
    await withWorkers(
      1,
      { later: async () => void ran.push(Date.now()) },
      async () => {
        await new Promise((r) => setTimeout(r, 300));
        const enqueuedAt = Date.now();
        await enqueue<TaskMap>(t.db.pool, { task: 'later', delaySeconds: 0.5 });
        // The worker polls once a minute and the NOTIFY comes before the job is due: only
        // sleeping until it falls due runs it in time.
        await waitFor('the delayed job to run', async () => ran.length > 0, 20_000);
        expect(ran[0]! - enqueuedAt).toBeGreaterThanOrEqual(450);
      },
      { pollMs: 60_000 },
    );
    expect(ran).toHaveLength(1);
  });

  it('keeps named queues apart: a dedicated worker takes only its queues', async () => {
    await enqueueMany<TaskMap>(t.db.pool, [
      { task: 'seen', queue: 'observe' },
      { task: 'other', queue: 'default' },
    ]);
    const ran: string[] = [];
    const handlers = { seen: async () => void ran.push('seen'), other: async () => void ran.push('other') };
    await withWorkers(1, handlers, () => waitFor('the observe job', async () => ran.includes('seen')), { queues: ['observe'] });
    await new Promise((r) => setTimeout(r, 300));
    expect(ran).toEqual(['seen']);
    const { rows } = await t.db.pool.query<{ task: string }>('select task from jobs');
    expect(rows.map((r) => r.task)).toEqual(['other']);
  });

  it("makes a keyed job unique while pending, inside the caller's transaction", async () => {
    const entity = randomUUID();
    const client = await t.db.pool.connect();
    try {
      await client.query('begin');
      await enqueue<TaskMap>(client, { task: 'tick', entityId: entity, key: 'tick' });
      await enqueue<TaskMap>(client, { task: 'tick', entityId: entity, key: 'tick' });
      expect(await pending()).toBe(0);
      await client.query('rollback');
    } finally {
      client.release();
    }
    expect(await pending()).toBe(0);
    await enqueue<TaskMap>(t.db.pool, { task: 'tick', entityId: entity, key: 'tick' });
    await enqueue<TaskMap>(t.db.pool, { task: 'tick', entityId: entity, key: 'tick' });
    expect(await pending()).toBe(1);
  });
});

describe('queue priorities', () => {
  const claim = (limit: number) => claimJobs(t.db.pool, { workerId: 'test-worker', queues: undefined, limit, leaseSeconds: 30 });

  it('claims an urgent job before the routine jobs that fell due before it', async () => {
    await t.db.pool.query('delete from jobs');
    await enqueueMany<TaskMap>(
      t.db.pool,
      Array.from({ length: 200 }, () => ({ task: 'observe', entityId: randomUUID(), key: 'observe', priority: PRIORITY.routine })),
    );
    await enqueue<TaskMap>(t.db.pool, { task: 'fence', entityId: randomUUID(), key: 'fence', priority: PRIORITY.urgent });
    expect((await claim(1)).map((j) => j.task)).toEqual(['fence']);
    // Then the rest in the order they fell due.
    expect((await claim(3)).map((j) => j.priority)).toEqual([PRIORITY.routine, PRIORITY.routine, PRIORITY.routine]);
  });

  it("runs an entity's urgent job before its routine one, while a delayed urgent job holds nothing up", async () => {
    await t.db.pool.query('delete from jobs');
    const troubled = randomUUID();
    await enqueue<TaskMap>(t.db.pool, { task: 'maintain', entityId: troubled, key: 'maintain', priority: PRIORITY.routine });
    await enqueue<TaskMap>(t.db.pool, { task: 'fence', entityId: troubled, key: 'fence', priority: PRIORITY.urgent });
    const calm = randomUUID();
    await enqueue<TaskMap>(t.db.pool, { task: 'tick', entityId: calm, key: 'tick', priority: PRIORITY.routine });
    await enqueue<TaskMap>(t.db.pool, { task: 'observe', entityId: calm, key: 'observe', priority: PRIORITY.urgent, delaySeconds: 60 });
    const claimed = await claim(10);
    expect(claimed.map((j) => `${j.entityId === troubled ? 'troubled' : 'calm'}:${j.task}`).sort()).toEqual([
      'calm:tick',
      'troubled:fence',
    ]);
  });

  it("raises a pending job's priority when it is asked for again more urgently, never lowers it", async () => {
    await t.db.pool.query('delete from jobs');
    const entity = randomUUID();
    const priority = async () =>
      (await t.db.pool.query<{ p: number }>('select priority as p from jobs where entity_id = $1', [entity])).rows.map((r) => r.p);
    await enqueue<TaskMap>(t.db.pool, { task: 'observe', entityId: entity, key: 'observe', priority: PRIORITY.routine });
    await enqueue<TaskMap>(t.db.pool, { task: 'observe', entityId: entity, key: 'observe', priority: PRIORITY.urgent });
    expect(await priority()).toEqual([PRIORITY.urgent]);
    await enqueue<TaskMap>(t.db.pool, { task: 'observe', entityId: entity, key: 'observe', priority: PRIORITY.routine });
    expect(await priority()).toEqual([PRIORITY.urgent]);
  });

  it('keeps slots for urgent jobs: a worker full of slow routine jobs still runs an urgent one at once', async () => {
    await t.db.pool.query('delete from jobs');
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let routine = 0;
    let mostRoutine = 0;
    const urgent: string[] = [];
    const handlers: Record<string, AnyJobHandler> = {
      observe: async () => {
        routine += 1;
        mostRoutine = Math.max(mostRoutine, routine);
        await gate;
        routine -= 1;
      },
      fence: async (job) => void urgent.push(job.id),
    };
    await enqueueMany<TaskMap>(
      t.db.pool,
      Array.from({ length: 20 }, () => ({ task: 'observe', entityId: randomUUID(), priority: PRIORITY.routine })),
    );
    await withWorkers(
      1,
      handlers,
      async () => {
        try {
          // Concurrency 4 and one slot kept beyond it: four routine jobs run, and the rest wait although a slot is free.
          await waitFor('the routine jobs to take their slots', async () => routine === 4, 20_000);
          await enqueue<TaskMap>(t.db.pool, { task: 'fence', entityId: randomUUID(), priority: PRIORITY.urgent });
          await waitFor('the urgent job to run beside the stuck routine ones', async () => urgent.length === 1, 20_000);
          expect(routine).toBe(4);
        } finally {
          release();
        }
        await waitFor('the queue to drain', async () => (await pending()) === 0);
      },
      { concurrency: 4, urgentSlots: 1 },
    );
    expect(mostRoutine).toBe(4);
  });
});
