import type { Queryable } from '../db.ts';
import type { AnyJob } from './jobs.ts';

/** What the queue holds, for the people and dashboards watching it. */

const JOB_COLUMNS = `id::text, queue, entity_id as "entityId", task, payload, key, priority, attempts, max_attempts as "maxAttempts"`;

export type DeadJob = AnyJob & {
  lastError: string | null;
  deadAt: Date;
};

export async function listDeadJobs(db: Queryable, limit = 100): Promise<DeadJob[]> {
  const { rows } = await db.query<DeadJob>(
    `select ${JOB_COLUMNS}, last_error as "lastError", dead_at as "deadAt" from jobs
     where dead_at is not null order by dead_at desc limit $1`,
    [limit],
  );
  return rows;
}

/** An operator's retry of a dead job: a fresh set of attempts, due now. */
export async function retryDeadJob(db: Queryable, id: string): Promise<boolean> {
  const { rowCount } = await db.query(
    'update jobs set dead_at = null, attempts = 0, run_at = now(), last_error = null where id = $1 and dead_at is not null',
    [id],
  );
  return (rowCount ?? 0) > 0;
}

/** How many jobs are due, scheduled for later, running and dead: the console's tiles. */
export async function jobCounts(db: Queryable): Promise<{ ready: number; scheduled: number; running: number; dead: number }> {
  const { rows } = await db.query<{ ready: number; scheduled: number; running: number; dead: number }>(
    `select count(*) filter (where dead_at is null and locked_by is null and run_at <= now())::int as ready,
       count(*) filter (where dead_at is null and locked_by is null and run_at > now())::int as scheduled,
       count(*) filter (where locked_by is not null)::int as running,
       count(*) filter (where dead_at is not null)::int as dead from jobs`,
  );
  return rows[0]!;
}

/** Jobs by queue and status (ready: due; scheduled: due later; running; dead), a row each: a gauge's series. */
export async function jobsByQueueAndStatus(db: Queryable): Promise<{ queue: string; status: string; value: number }[]> {
  const { rows } = await db.query<{ queue: string; status: string; value: number }>(
    `select queue, case when dead_at is not null then 'dead' when locked_by is not null then 'running'
       when run_at <= now() then 'ready' else 'scheduled' end as status, count(*)::int as value
     from jobs group by 1, 2`,
  );
  return rows;
}

/** The running jobs of these tasks on these entities, with the worker that holds each. */
export async function runningJobs(db: Queryable, tasks: string[], entityIds: string[]): Promise<{ task: string; lockedBy: string }[]> {
  const { rows } = await db.query<{ task: string; lockedBy: string }>(
    `select task, locked_by as "lockedBy" from jobs
     where locked_by is not null and task = any($1::text[]) and entity_id = any($2::uuid[])`,
    [tasks, entityIds],
  );
  return rows;
}

/** A job as it waits or runs: its lane, and who holds it until when, or when it is due (as the database prints times). */
export interface JobInQueue {
  task: string;
  lane: string;
  priority: number;
  attempts: number;
  lockedBy: string | null;
  lockedUntil: string | null;
  runAt: string;
}

/** Every job the queue holds for the entity, in the order they were enqueued: why its machine waits. */
export async function jobsOf(db: Queryable, entityId: string): Promise<JobInQueue[]> {
  const { rows } = await db.query<JobInQueue>(
    `select task, lane, priority, attempts, locked_by as "lockedBy", locked_until::text as "lockedUntil", run_at::text as "runAt"
     from jobs where entity_id = $1 order by id`,
    [entityId],
  );
  return rows;
}
