import { schedule, type ScheduledTask } from 'node-cron';
import type { Pool, Queryable } from '../db.ts';
import type { Logger } from '../log.ts';
import { vacuumJobs } from '../queue/claim.ts';
import { enqueueForLiveEntities, enqueueRaising, enqueueUnlessQueued, PRIORITY } from '../queue/jobs.ts';
import { retireEmptySharedServers } from '../resources/placement.ts';
import { PRUNE_ARCHIVES_EVERY_SECONDS } from '../backups/retention.ts';
import { sweepExpiredSessions } from '../web/sessions.ts';
import { ENFORCE_EVERY_SECONDS, enqueueEnforcement } from '../resources/limits.ts';
import { OBSERVED_MACHINES } from '../runner/machines.ts';
import { queueForTask } from '../runner/runner.ts';
import { enqueueRenewals } from '../servers/certificates.ts';

export interface ClockOptions {
  observeInterval: number;
  observationRetentionDays: number;
  /** Servers whose certificates expire within this many days get a new one (and servers without TLS get it); unset: none. */
  tlsRenewDays?: number;
  log: Logger;
}

/**
 * Compare-and-set on the period's row: true for exactly one clock per period, however
 * many clock processes run.
 */
export async function claimPeriod(db: Queryable, name: string, seconds: number): Promise<boolean> {
  const { rowCount } = await db.query(
    `insert into clock_runs (name, last_run_at) values ($1, clock_timestamp())
     on conflict (name) do update set last_run_at = clock_timestamp()
     where clock_runs.last_run_at <= clock_timestamp() - make_interval(secs => $2)`,
    [name, seconds - 0.05],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * Jobs fall out (a killed worker, a bug, a deploy, an operator's delete), so the clock puts
 * back the observation and the tick of every live entity that has none pending. The unique
 * pending key makes this idempotent: two clocks add nothing twice.
 */
export function enqueueMissing(db: Queryable): Promise<number> {
  return enqueueForLiveEntities(
    db,
    OBSERVED_MACHINES,
    (['observe', 'tick'] as const).map((task) => ({ task, queue: queueForTask(task) })),
  );
}

/**
 * The servers a failover depends on (the primary and standby of a database that has a
 * standby) are observed every second whatever PGFLEET_OBSERVE_INTERVAL says: a hang is
 * judged by their probes, and a crash with no traffic to reveal it by the next one. For
 * the same reason they rank above the routine observations of every other server (and
 * raise a routine one of theirs that is pending). So are databases whose standby stalled:
 * one running without a synchronous copy is made synchronous again as soon as it has
 * caught up, and a strict one's commits flow again as soon as the standby answers.
 */
export const REPLICATED_OBSERVE_EVERY_SECONDS = 1;

export async function enqueueReplicatedObservations(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ id: string }>(
    `select rs.server_id as id
     from resource_servers rs join entity_states m on m.entity_id = rs.server_id
     where m.finished_at is null and rs.role in ('primary', 'standby')
       and exists (select 1 from resource_servers s where s.resource_id = rs.resource_id and s.role = 'standby')
     union all
     select entity_id from entity_states
     where machine = 'resource' and finished_at is null and state in ('unsynchronized', 'stalled')`,
  );
  return enqueueRaising(
    db,
    'observe',
    queueForTask('observe'),
    rows.map((r) => r.id),
    PRIORITY.work,
  );
}

/** How often empty shared servers beyond the region's spare are retired. */
export const RETIRE_EVERY_SECONDS = 10;

/**
 * Every job leaves two dead rows (its claim and its deletion). Left to autovacuum, which
 * looks once a minute by default, a million-job soak at 5k jobs/s piled up 600k dead rows
 * and claims slowed to 67% of their starting rate (bench/results/queue.md); vacuuming the
 * queue table every 10 s keeps claims walking live rows.
 */
export const VACUUM_JOBS_EVERY_SECONDS = 10;

export async function pruneObservations(db: Queryable, keepDays: number): Promise<void> {
  await db.query('select pgfleet_observation_partitions($1)', [keepDays]);
}

export class Clock {
  private task: ScheduledTask | undefined;
  private busy = false;

  constructor(
    private readonly pool: Pool,
    private readonly opts: ClockOptions,
  ) {}

  async start(): Promise<void> {
    await pruneObservations(this.pool, this.opts.observationRetentionDays);
    this.task = schedule('* * * * * *', () => this.second(), { noOverlap: true });
  }

  /** Every second, do whatever period has come round. */
  async second(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      if (await claimPeriod(this.pool, 'enqueue-missing', this.opts.observeInterval)) {
        const n = await enqueueMissing(this.pool);
        if (n > 0) this.opts.log.debug({ enqueued: n }, 'enqueued observations and ticks');
      }
      // As often as observations come: the query reads one key of each live server's row.
      if (this.opts.tlsRenewDays !== undefined && (await claimPeriod(this.pool, 'renew-certificates', this.opts.observeInterval))) {
        const n = await enqueueRenewals(this.pool, this.opts.tlsRenewDays);
        if (n > 0) this.opts.log.info({ enqueued: n }, 'asked for certificate renewals');
      }
      if (await claimPeriod(this.pool, 'observe-replicated', REPLICATED_OBSERVE_EVERY_SECONDS)) {
        await enqueueReplicatedObservations(this.pool);
      }
      if (await claimPeriod(this.pool, 'enforce-limits', ENFORCE_EVERY_SECONDS)) {
        await enqueueEnforcement(this.pool, queueForTask('enforce'));
      }
      if (await claimPeriod(this.pool, 'retire-shared-servers', RETIRE_EVERY_SECONDS)) {
        const retired = await retireEmptySharedServers(this.pool);
        if (retired.length > 0) this.opts.log.info({ retired }, 'retired empty shared servers beyond the spare');
      }
      if (await claimPeriod(this.pool, 'prune-archives', PRUNE_ARCHIVES_EVERY_SECONDS)) {
        await enqueueUnlessQueued(this.pool, 'prune_archives', 'default', [{}]);
      }
      if (await claimPeriod(this.pool, 'vacuum-jobs', VACUUM_JOBS_EVERY_SECONDS)) {
        await vacuumJobs(this.pool);
      }
      if (await claimPeriod(this.pool, 'prune-observations', 3600)) {
        await pruneObservations(this.pool, this.opts.observationRetentionDays);
        await sweepExpiredSessions(this.pool);
      }
    } catch (err) {
      this.opts.log.error({ err }, 'clock tick failed');
    } finally {
      this.busy = false;
    }
  }

  async stop(): Promise<void> {
    await this.task?.stop();
    while (this.busy) await new Promise((r) => setTimeout(r, 20));
  }
}
