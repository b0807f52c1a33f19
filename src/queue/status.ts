import type { Queryable } from '../db.ts';
import type { Job } from './jobs.ts';

const JOB_COLUMNS = `id::text, queue, entity_id as "entityId", task, payload, key, priority, attempts, max_attempts as "maxAttempts"`;

export interface DeadJob extends Job {
  lastError: string | null;
  deadAt: Date;
}

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
