import { backoff, type Backoff } from '../backoff.ts';
import type { Queryable } from '../db.ts';
import { PRIORITY, type AnyJob } from './jobs.ts';

/**
 * A worker shows it is alive by a session of its own (its LISTEN connection) named
 * `pgfleet worker <its id>` in pg_stat_activity: the session of a killed process ends the
 * moment its socket closes, so its claims are released within a sweep (releaseLostClaims)
 * rather than when its lease runs out. Worker ids are `<name>#<8 hex>`; the name says which
 * worker it is across restarts (PGFLEET_WORKER_NAME, or Heroku's DYNO).
 */
export function presenceName(workerId: string): string {
  return `pgfleet worker ${workerId}`;
}

/**
 * Seconds after the control database starts in which no claim counts as lost: every
 * session ended with the restart, and live workers need a moment to come back (they
 * reconnect within a second, src/queue/worker.ts) and renew leases that ran out meanwhile.
 */
export const RESTART_GRACE_SECONDS = 5;

/**
 * When the control database last came up: its start, or the restart of every process after
 * a crash of one (the checkpointer starts again; the postmaster keeps its start time).
 */
const UP_SINCE = `greatest(pg_postmaster_start_time(),
  (select max(backend_start) from pg_stat_activity where backend_type = 'checkpointer'))`;

/**
 * Claim up to `limit` due jobs of at least `minPriority` in one statement, higher priorities
 * first and then in run order. Each entity has two lanes (migrations/0012_job_lanes.sql):
 * observations and ticks, and actions. A job of an entity is claimable only when it is the
 * head of its lane (no due pending job of the entity and lane ranks before it) and no job
 * of that lane is running, so a batch never holds two jobs of one lane of one entity, an
 * observation never waits behind an action, and a busy entity offers one job at a time while
 * the others keep flowing. A delayed job holds up nothing: an urgent re-probe half a second
 * away does not stop the routine job due now. `FOR UPDATE SKIP LOCKED` lets workers pass
 * each other instead of queueing on row locks. Should two claims still race for one lane,
 * the unique index jobs_one_running_per_entity refuses the second: the caller retries.
 *
 * A worker whose presence session is down claims nothing (its claims would be released as
 * a dead worker's at once), except just after the control database started, when no
 * session is there yet and claims are not judged by it.
 */
export async function claimJobs(
  db: Queryable,
  opts: { workerId: string; queues: string[] | undefined; limit: number; leaseSeconds: number; minPriority?: number; present?: boolean },
): Promise<AnyJob[]> {
  const { rows } = await db.query<AnyJob>(
    `with candidates as (
       select j.id from jobs j
       where ($6 or ${UP_SINCE} > now() - make_interval(secs => $7))
         and j.locked_by is null and j.dead_at is null and j.run_at <= now() and j.priority >= $5
         and ($1::text[] is null or j.queue = any($1::text[]))
         and (j.entity_id is null or (
           not exists (select 1 from jobs r where r.entity_id = j.entity_id and r.lane = j.lane and r.locked_by is not null)
           and not exists (
             select 1 from jobs e
             where e.entity_id = j.entity_id and e.lane = j.lane and e.locked_by is null and e.dead_at is null
               and e.priority > j.priority and e.run_at <= now())
           and not exists (
             select 1 from jobs e
             where e.entity_id = j.entity_id and e.lane = j.lane and e.locked_by is null and e.dead_at is null
               and e.priority = j.priority and (e.run_at, e.id) < (j.run_at, j.id))))
       order by j.priority desc, j.run_at, j.id
       limit $2
       for update skip locked
     )
     update jobs set locked_by = $3, locked_until = now() + make_interval(secs => $4), attempts = attempts + 1
     from candidates where jobs.id = candidates.id
     returning jobs.id::text, jobs.queue, jobs.entity_id as "entityId", jobs.task, jobs.payload, jobs.key,
       jobs.priority, jobs.attempts, jobs.max_attempts as "maxAttempts"`,
    [
      opts.queues ?? null,
      opts.limit,
      opts.workerId,
      opts.leaseSeconds,
      opts.minPriority ?? PRIORITY.routine,
      opts.present ?? true,
      RESTART_GRACE_SECONDS,
    ],
  );
  return rows;
}

/** Milliseconds until the next delayed job of these queues falls due; undefined when none waits. */
export async function nextDueInMs(db: Queryable, queues: string[] | undefined): Promise<number | undefined> {
  const { rows } = await db.query<{ ms: number | null }>(
    `select extract(epoch from min(run_at) - now())::float8 * 1000 as ms from jobs
     where locked_by is null and dead_at is null and run_at > now() and ($1::text[] is null or queue = any($1::text[]))`,
    [queues ?? null],
  );
  return rows[0]?.ms ?? undefined;
}

/** Finished jobs leave the table at once: a queue table that keeps them bloats. */
export async function completeJobs(db: Queryable, workerId: string, ids: string[]): Promise<number> {
  const { rowCount } = await db.query('delete from jobs where id = any($1::bigint[]) and locked_by = $2', [ids, workerId]);
  return rowCount ?? 0;
}

/** Backoff after the nth failed attempt: 2^n seconds, at most an hour. */
const JOB_RETRY_SECONDS: Backoff = { first: 1, most: 3600 };

/**
 * Put a failed job back with backoff, or mark it dead once its attempts are spent. A keyed
 * job whose twin was enqueued meanwhile is dropped instead: the twin does the same work.
 */
export async function failJob(db: Queryable, workerId: string, job: AnyJob, error: string): Promise<'retry' | 'dead' | 'dropped' | 'gone'> {
  const dead = job.attempts >= job.maxAttempts;
  try {
    const { rowCount } = await db.query(
      `update jobs set locked_by = null, locked_until = null, last_error = $3,
         run_at = now() + make_interval(secs => $4), dead_at = case when $5 then now() end
       where id = $1 and locked_by = $2`,
      [job.id, workerId, error.slice(0, 4000), backoff(JOB_RETRY_SECONDS, job.attempts), dead],
    );
    // Not this worker's any more: released as a lost claim, or completed by a commit whose
    // answer the connection lost.
    if (rowCount === 0) return 'gone';
    return dead ? 'dead' : 'retry';
  } catch (err) {
    if ((err as { code?: string }).code !== '23505') throw err;
    await db.query('delete from jobs where id = $1 and locked_by = $2', [job.id, workerId]);
    return 'dropped';
  }
}

/**
 * Keep the leases of jobs that are still running; returns the ids whose lease this worker
 * still held. A running job missing from it was released (its worker was taken for dead,
 * or its lease ran out): its outcome will not be committed.
 */
export async function extendLeases(db: Queryable, workerId: string, ids: string[], leaseSeconds: number): Promise<string[]> {
  if (ids.length === 0) return [];
  const { rows } = await db.query<{ id: string }>(
    'update jobs set locked_until = now() + make_interval(secs => $3) where id = any($1::bigint[]) and locked_by = $2 returning id::text',
    [ids, workerId, leaseSeconds],
  );
  return rows.map((r) => r.id);
}

/**
 * Put back claimed jobs chosen by `which` so they run again, with `reason` as their last
 * error; a keyed job whose twin is already pending is dropped rather than duplicated. An
 * attempt is spent: a job that keeps killing its worker ends dead. Idle workers are woken.
 */
async function releaseClaims(db: Queryable, which: string, reason: string, params: unknown[]): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `with present as materialized (
       select application_name from pg_stat_activity
       where datname = current_database() and application_name like 'pgfleet worker %'
     ), lost as (
       select id, entity_id, key, ${reason} as reason from jobs j
       where locked_by is not null and (${which})
       for update skip locked
     ), twins as (
       delete from jobs j using lost x
       where j.id = x.id and x.key is not null and exists (
         select 1 from jobs t where t.entity_id = x.entity_id and t.key = x.key and t.locked_by is null and t.dead_at is null)
       returning j.id
     ), released as (
       update jobs j set locked_by = null, locked_until = null, last_error = x.reason,
         dead_at = case when j.attempts >= j.max_attempts then now() end
       from lost x where j.id = x.id and j.id not in (select id from twins)
       returning j.id
     ), n as (
       select (select count(*) from twins)::int + (select count(*) from released)::int as n
     )
     select n, (select count(*) from (select pg_notify('pgfleet_jobs', '') where n.n > 0) s) as woken from n`,
    params,
  );
  return rows[0]?.n ?? 0;
}

/**
 * Release the jobs of workers that stopped: whose lease ran out (a frozen or cut-off
 * worker), or whose worker has no presence session any more (a killed one: its session
 * ends with its socket, so a sweep every half second frees its jobs in about that, where
 * waiting for the lease took it. Ids without a `#` are of workers from before presence
 * sessions, during a deploy: only their leases count). Neither holds in the first
 * RESTART_GRACE_SECONDS after the control database started.
 */
export function releaseLostClaims(db: Queryable): Promise<number> {
  return releaseClaims(
    db,
    `${UP_SINCE} < now() - make_interval(secs => $1)
     and (locked_until < now()
       or (locked_by like '%#%' and not exists (select 1 from present p where p.application_name = 'pgfleet worker ' || j.locked_by)))`,
    `case when locked_until < now() then 'lease expired: its worker stopped' else 'its worker is gone: its session ended' end`,
    [RESTART_GRACE_SECONDS],
  );
}

/**
 * A worker started again releases what the last worker of its name held: that one is gone,
 * though a session of a vanished host may linger for as long as TCP keeps it. Not a job
 * whose lease its holder renewed within half a lease (`leaseSeconds`, this worker's: the
 * same setting): that is a live worker under the same name, a misconfiguration that must
 * not cost it its jobs. Also says how many live sessions of other workers bear the name.
 */
export async function releasePredecessorClaims(
  db: Queryable,
  name: string,
  workerId: string,
  leaseSeconds: number,
): Promise<{ released: number; namesakes: number }> {
  const released = await releaseClaims(
    db,
    `split_part(locked_by, '#', 1) = $1 and locked_by <> $2
     and (locked_until < now() + make_interval(secs => $3::float8 / 2)
       or not exists (select 1 from present p where p.application_name = 'pgfleet worker ' || j.locked_by))`,
    `'its worker started again'`,
    [name, workerId, leaseSeconds],
  );
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from pg_stat_activity
     where datname = current_database() and application_name like 'pgfleet worker %'
       and split_part(substr(application_name, 16), '#', 1) = $1 and application_name <> $2`,
    [name, presenceName(workerId)],
  );
  return { released, namesakes: rows[0]?.n ?? 0 };
}

/**
 * Vacuum the queue table, passing over what it cannot lock at once: every job leaves two dead
 * rows (its claim and its deletion), and claims must walk live ones (src/processes/clock.ts
 * says how often, and why).
 */
export async function vacuumJobs(db: Queryable): Promise<void> {
  await db.query('vacuum (skip_locked) jobs');
}
