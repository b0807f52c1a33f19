import type { Queryable } from '../db.ts';
import type { Tasks } from '../tasks.ts';

/**
 * Every query of the queue lives in src/queue/: how jobs get in and what tasks ask of them
 * (here), how workers take and finish them (claim.ts), what operators see (status.ts).
 */

/**
 * Claims take higher priorities first. With 30 other servers observed every 5 s, a
 * failover's steps (each a job: the re-probes, the ticks, the fence, the promotion) queued
 * behind 60 routine observations and ticks at each step (bench:failover). What
 * the clock enqueues on its period is `routine`; what a machine asks for is `work`; what it
 * asks for while its entity is in trouble or failing over, and what follows from that, is
 * `urgent`, and a worker keeps slots that only urgent jobs take (src/queue/worker.ts).
 */
export const PRIORITY = { routine: 0, work: 1, urgent: 2 } as const;

/** A job's payload, as the jobs table keeps it: a JSON object. */
export type Payload = Record<string, unknown>;

/**
 * What the jobs of a task carry: the id of the entity they run on (`null` for a task that
 * runs alone) and their payload.
 */
export interface TaskShape {
  entityId: string | null;
  payload: Payload;
}

/**
 * Task name → what its jobs carry. The queue is typed by one: pgfleet's is `Tasks`
 * (src/tasks.ts), the default everywhere; this open one, any name carrying anything, is for
 * the queue's own workings and its tests.
 */
export type TaskMap = Record<string, TaskShape>;

export type TaskName<M extends TaskMap = Tasks> = keyof M & string;

/**
 * The tasks of `M` that run on an entity and need nothing else: a job of one names its entity
 * alone. What machines emit (src/runner/runner.ts) and what the clock puts back are these.
 */
export type EntityTask<M extends TaskMap = Tasks> = {
  [T in TaskName<M>]: M[T]['entityId'] extends string ? (Record<never, never> extends M[T]['payload'] ? T : never) : never;
}[TaskName<M>];

/** The tasks of `M` that run alone. */
export type LoneTask<M extends TaskMap = Tasks> = { [T in TaskName<M>]: M[T]['entityId'] extends null ? T : never }[TaskName<M>];

interface JobFields {
  id: string;
  queue: string;
  key: string | null;
  priority: number;
  attempts: number;
  maxAttempts: number;
}

/**
 * A job of task `T`, its entity and payload typed by the task: an entity task's job has its
 * entity's id. Over a union of tasks it is a union of jobs, which `task` narrows.
 */
export type Job<T extends string = TaskName, M extends TaskMap = Tasks> =
  T extends TaskName<M> ? JobFields & { task: T; entityId: M[T]['entityId']; payload: M[T]['payload'] } : never;

/** A job of any task, as the queue itself handles it. */
export type AnyJob = Job<string, TaskMap>;

interface SpecFields {
  queue?: string;
  /** Pending jobs with the same entity and key are one job: a second enqueue is a no-op. */
  key?: string | null;
  delaySeconds?: number;
  maxAttempts?: number;
  /** PRIORITY.work unless given. */
  priority?: number;
  /**
   * Asked for again rather than for the first time (a machine's re-ask on a fresh
   * observation): nothing is added while the same keyed job runs, whose report is still
   * to come. A tick runs beside its entity's action (they are in different lanes), and a
   * second copy queued behind a running one would act again once the machine has moved on.
   */
  unlessRunning?: boolean;
}

/** An entity task's job names its entity; a payload with a required field must be given. */
type Carried<S extends TaskShape> = (null extends S['entityId'] ? { entityId?: S['entityId'] } : { entityId: S['entityId'] }) &
  (Record<never, never> extends S['payload'] ? { payload?: S['payload'] } : { payload: S['payload'] });

/** A job to enqueue, of task `T`; over a union of tasks, a union of specs that `task` narrows. */
export type JobSpec<T extends string = TaskName, M extends TaskMap = Tasks> =
  T extends TaskName<M> ? SpecFields & { task: T } & Carried<M[T]> : never;

/**
 * A job of an entity task that needs nothing else, whichever of them: one type for specs
 * built from a task known only as one of a union (a machine's emitted job), which JobSpec's
 * union, one member per task, would not take.
 */
export type EntityJobSpec<M extends TaskMap = Tasks> = SpecFields & { task: EntityTask<M>; entityId: string };

type AnySpec = JobSpec<string, TaskMap>;

/**
 * Enqueue inside the caller's transaction (pass its client), so a job exists exactly when
 * the change that wants it commits. A keyed duplicate only pulls the pending job's run_at
 * earlier, and never that of a job waiting out a retry backoff, and raises its priority
 * (a routine observation asked for again by a server in trouble becomes urgent); two
 * clocks enqueueing the same tick make one job. The task map `M` is never inferred from a
 * spec (NoInfer): a misspelt task would make a map of its own and compile.
 */
export async function enqueue<M extends TaskMap = Tasks>(db: Queryable, spec: NoInfer<JobSpec<TaskName<M>, M>>): Promise<void> {
  await insertJobs(db, [spec]);
}

export async function enqueueMany<M extends TaskMap = Tasks>(
  db: Queryable,
  specs: NoInfer<JobSpec<TaskName<M>, M> | EntityJobSpec<M>>[],
): Promise<void> {
  await insertJobs(db, specs);
}

async function insertJobs(db: Queryable, specs: AnySpec[]): Promise<void> {
  if (specs.length === 0) return;
  await db.query(
    `insert into jobs (queue, entity_id, task, payload, key, run_at, max_attempts, priority)
     select q, e, t, p, k, now() + make_interval(secs => d), m, r
     from unnest($1::text[], $2::uuid[], $3::text[], $4::jsonb[], $5::text[], $6::float8[], $7::int[], $8::smallint[], $9::bool[])
       as x(q, e, t, p, k, d, m, r, u)
     where not (u and exists (select 1 from jobs j where j.entity_id = x.e and j.key = x.k and j.locked_by is not null))
     on conflict (entity_id, key) where locked_by is null and dead_at is null
     do update set run_at = case when jobs.attempts = 0 then least(jobs.run_at, excluded.run_at) else jobs.run_at end,
       priority = greatest(jobs.priority, excluded.priority)`,
    [
      specs.map((s) => s.queue ?? 'default'),
      specs.map((s) => s.entityId ?? null),
      specs.map((s) => s.task),
      specs.map((s) => JSON.stringify(s.payload ?? {})),
      specs.map((s) => s.key ?? null),
      specs.map((s) => s.delaySeconds ?? 0),
      specs.map((s) => s.maxAttempts ?? 10),
      specs.map((s) => s.priority ?? PRIORITY.work),
      specs.map((s) => s.unlessRunning ?? false),
    ],
  );
}

/**
 * The same job again in `delaySeconds`, carrying `payload` (its own unless given): a step
 * that cannot be done yet ends and is asked again, in the commit that ends it, rather than
 * waiting in place or spending its attempts. A pending twin (a machine's re-ask) is the one
 * that stays.
 */
export async function enqueueAgain<T extends TaskName<M>, M extends TaskMap = Tasks>(
  db: Queryable,
  job: Job<T, M>,
  delaySeconds: number,
  payload: NoInfer<M[T]['payload']> = job.payload,
): Promise<void> {
  await insertJobs(db, [
    {
      task: job.task,
      entityId: job.entityId,
      key: job.key,
      queue: job.queue,
      priority: job.priority,
      payload,
      delaySeconds,
    },
  ]);
}

/**
 * One keyed job per task for every live entity of the given machines, unless one is pending:
 * how the clock puts back jobs that fell out. Running it twice at once adds nothing twice.
 * Routine (the column's default): a pending job asked for more urgently keeps its priority.
 */
export async function enqueueForLiveEntities(
  db: Queryable,
  machines: string[],
  tasks: { task: EntityTask; queue: string }[],
): Promise<number> {
  const { rowCount } = await db.query(
    `insert into jobs (queue, entity_id, task, key)
     select t.queue, m.entity_id, t.task, t.task
     from entity_states m cross join unnest($1::text[], $2::text[]) as t(task, queue)
     where m.finished_at is null and m.machine = any($3::text[])
     on conflict (entity_id, key) where locked_by is null and dead_at is null do nothing`,
    [tasks.map((t) => t.task), tasks.map((t) => t.queue), machines],
  );
  return rowCount ?? 0;
}

/**
 * One keyed job of `task` for each of the entities, unless one is pending: periodic work on
 * entities the caller chose (servers whose certificates are due). Routine, as the clock's
 * work is; a pending job keeps its time and its priority.
 */
export async function enqueueEach(db: Queryable, task: EntityTask, queue: string, entityIds: string[]): Promise<number> {
  if (entityIds.length === 0) return 0;
  const { rowCount } = await db.query(
    `insert into jobs (queue, entity_id, task, key)
     select $1, e, $2, $2 from unnest($3::uuid[]) as e
     on conflict (entity_id, key) where locked_by is null and dead_at is null do nothing`,
    [queue, task, entityIds],
  );
  return rowCount ?? 0;
}

/**
 * One keyed job of `task` at `priority` for each of the entities; a pending one ranked lower
 * is raised to it and keeps its time (the servers a failover depends on, observed every
 * second above routine work). Counts the jobs added or raised.
 */
export async function enqueueRaising(
  db: Queryable,
  task: EntityTask,
  queue: string,
  entityIds: string[],
  priority: number,
): Promise<number> {
  if (entityIds.length === 0) return 0;
  const { rowCount } = await db.query(
    `insert into jobs (queue, entity_id, task, key, priority)
     select $1::text, e, $2, $2, $4::smallint from unnest($3::uuid[]) as e
     on conflict (entity_id, key) where locked_by is null and dead_at is null
     do update set priority = excluded.priority where jobs.priority < excluded.priority`,
    [queue, task, entityIds, priority],
  );
  return rowCount ?? 0;
}

/**
 * One job of `task` per payload, with no entity (so it waits behind no entity's queue), unless
 * one with the same payload is pending or running: periodic checks that must not pile up
 * behind a slow worker. One attempt each: the next period is the retry.
 */
export async function enqueueUnlessQueued<T extends LoneTask<M>, M extends TaskMap = Tasks>(
  db: Queryable,
  task: T,
  queue: string,
  payloads: NoInfer<M[T]['payload']>[],
): Promise<number> {
  if (payloads.length === 0) return 0;
  const { rowCount } = await db.query(
    `insert into jobs (queue, task, payload, max_attempts)
     select $1, $2, p, 1 from unnest($3::jsonb[]) as p
     where not exists (select 1 from jobs j where j.task = $2 and j.payload = p and j.dead_at is null)`,
    [queue, task, payloads.map((p) => JSON.stringify(p))],
  );
  return rowCount ?? 0;
}

/** Whether a job of `task` whose payload holds `payload` is waiting or running: not dead, not done. */
export async function jobLive<T extends TaskName>(db: Queryable, task: T, payload: Partial<Tasks[T]['payload']>): Promise<boolean> {
  const { rows } = await db.query('select 1 from jobs where task = $1 and payload @> $2::jsonb and dead_at is null limit 1', [
    task,
    JSON.stringify(payload),
  ]);
  return rows.length > 0;
}

/** Run now the waiting job of `task` whose payload holds `payload`, if it waits out a retry backoff. */
export async function hurryJob<T extends TaskName>(db: Queryable, task: T, payload: Partial<Tasks[T]['payload']>): Promise<boolean> {
  const { rowCount } = await db.query(
    `update jobs set run_at = now()
     where task = $1 and payload @> $2::jsonb and locked_by is null and dead_at is null and attempts > 0 and run_at > now()`,
    [task, JSON.stringify(payload)],
  );
  return (rowCount ?? 0) > 0;
}

/** How many jobs of `task` whose payload holds `payload` died in the last `seconds`. */
export async function recentlyDead<T extends TaskName>(
  db: Queryable,
  task: T,
  payload: Partial<Tasks[T]['payload']>,
  seconds: number,
): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    'select count(*)::int as n from jobs where task = $1 and payload @> $2::jsonb and dead_at > now() - make_interval(secs => $3)',
    [task, JSON.stringify(payload), seconds],
  );
  return rows[0]!.n;
}
