import { Logger as GraphileLogger, run, runMigrations, type Runner } from 'graphile-worker';
import pg from 'pg';
import { PgBoss } from 'pg-boss';
import { pino } from 'pino';
import { createPool, type Pool } from '../../src/db.ts';
import { enqueueMany } from '../../src/queue/jobs.ts';
import { Worker } from '../../src/queue/worker.ts';
import { Clock } from '../../src/processes/clock.ts';
import { migrate } from '../../src/migrate.ts';
import { loadConfig } from '../../src/config.ts';

/** A no-op job: `t` is the wall-clock ms at which it was enqueued, for pickup latency. */
export interface BenchJob {
  entityId: string | null;
  t: number;
}

/** pgfleet's queue measured with one task of its own: `t`, the time the job was made. */
export type BenchTasks = { noop: { entityId: string | null; payload: { t: number } } };

/** What the measurements need from a queue, whatever its library. */
export interface QueueUnderTest {
  /** Enqueue through a producer pool that the workers do not share. */
  enqueue(jobs: BenchJob[]): Promise<void>;
  startWorkers(onJob: (t: number) => void): Promise<void>;
  stopWorkers(): Promise<void>;
  /** Jobs not yet completed, as the database sees them. */
  remaining(): Promise<number>;
  /** Empty the queue tables so the next setting starts from the same state. */
  reset(): Promise<void>;
  /** Refresh planner statistics after a pre-enqueue: autovacuum would, given a minute. */
  analyze(): Promise<void>;
  close(): Promise<void>;
  /** Errors the library reported (pg-boss swallows failed fetches and emits them). */
  errors: number;
}

export interface Setting {
  contender: 'pgfleet' | 'graphile-worker' | 'pg-boss';
  setting: string;
  perEntity: boolean;
  /** Human-readable knobs, for the results table. */
  knobs: string;
  open(url: string): Promise<QueueUnderTest>;
}

/** Producer pools are small: the latency phase sends one statement per 10 ms tick. */
const PRODUCER_POOL = 4;
/** Larger enqueues go in slices, so a 20k pre-enqueue never builds one 20k-row statement per library. */
const ENQUEUE_SLICE = 10_000;

async function sliced(jobs: BenchJob[], fn: (slice: BenchJob[]) => Promise<void>): Promise<void> {
  for (let i = 0; i < jobs.length; i += ENQUEUE_SLICE) await fn(jobs.slice(i, i + ENQUEUE_SLICE));
}

async function count(pool: Pool, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(sql, params);
  return rows[0]?.n ?? 0;
}

// ---------------------------------------------------------------- pgfleet

/** The app's defaults as deployed: what `loadConfig` gives an empty environment (src/config.ts). */
export const PGFLEET_DEFAULTS = loadConfig({});

export function pgfleet(setting: string, perEntity: boolean, concurrency: number, poolSize = concurrency + 5): Setting {
  const { jobLease, observeInterval, observationRetentionDays } = PGFLEET_DEFAULTS;
  return {
    contender: 'pgfleet',
    setting,
    perEntity,
    // Pool concurrency + 5 is src/processes/app.ts's; the 1 s idle poll is the Worker's own default.
    knobs:
      `1 Worker + 1 Clock (as deployed), concurrency ${concurrency}, pool ${poolSize}, ` +
      `lease ${jobLease} s (PGFLEET_JOB_LEASE default), pollMs 1000 (default)`,
    async open(url) {
      const pool = createPool(url, poolSize);
      const producer = createPool(url, PRODUCER_POOL);
      await migrate(pool);
      let worker: Worker<BenchTasks> | undefined;
      let clock: Clock | undefined;
      return {
        errors: 0,
        enqueue: (jobs) =>
          sliced(jobs, (slice) =>
            enqueueMany<BenchTasks>(
              producer,
              slice.map((j) => ({ task: 'noop', entityId: j.entityId, payload: { t: j.t } })),
            ),
          ),
        async startWorkers(onJob) {
          worker = new Worker<BenchTasks>(pool, {
            queues: undefined,
            concurrency,
            leaseSeconds: jobLease,
            handlers: { noop: async (job) => onJob(job.payload.t) },
            log: pino({ level: 'silent' }),
          });
          await worker.start();
          // The clock is part of the queue as deployed: it vacuums the jobs table.
          clock = new Clock(producer, { observeInterval, observationRetentionDays, log: pino({ level: 'silent' }) });
          await clock.start();
        },
        async stopWorkers() {
          await worker?.stop();
          await clock?.stop();
          worker = undefined;
          clock = undefined;
        },
        // The benchmark's own jobs: the clock enqueues periodic ones (prune_archives) that this
        // worker has no handler for, and one left dead kept every per-entity drain "capped".
        remaining: () => count(producer, `select count(*)::int as n from jobs where task = 'noop'`),
        reset: async () => void (await producer.query('truncate jobs')),
        analyze: async () => void (await producer.query('analyze jobs')),
        async close() {
          await pool.end();
          await producer.end();
        },
      };
    },
  };
}

// ---------------------------------------------------------------- graphile-worker

/** graphile-worker's per-key serialization: one named queue (job_queues row) per entity. */
const graphileQueue = (entityId: string | null) => (entityId ? `e:${entityId}` : null);

/**
 * The knobs of graphile-worker 0.17+, as its `preset.worker` spells them
 * (https://worker.graphile.org/docs/config). Unset batching knobs keep its defaults: no local
 * queue, one round trip per complete and per fail.
 */
export type GraphileKnobs = Pick<
  GraphileConfig.WorkerOptions,
  'maxPoolSize' | 'localQueue' | 'completeJobBatchDelay' | 'failJobBatchDelay' | 'pollInterval'
> & {
  concurrentJobs: number;
};

export function graphile(setting: string, perEntity: boolean, knobs: GraphileKnobs): Setting {
  // Its docs advise 10 or concurrentJobs + 2, whichever is larger.
  const worker = { ...knobs, maxPoolSize: knobs.maxPoolSize ?? Math.max(10, knobs.concurrentJobs + 2) };
  const local = worker.localQueue;
  const batchDelay = (ms: number | undefined) => (ms === undefined ? '-1 (default: off)' : `${ms}`);
  return {
    contender: 'graphile-worker',
    setting,
    perEntity,
    knobs:
      `run(), concurrentJobs ${worker.concurrentJobs}, maxPoolSize ${worker.maxPoolSize}, localQueue ` +
      (local
        ? `{ size ${local.size}${local.refetchDelay ? `, refetchDelay ${local.refetchDelay.durationMs} ms` : ''} }`
        : 'off (default)') +
      `, completeJobBatchDelay ${batchDelay(worker.completeJobBatchDelay)}, failJobBatchDelay ${batchDelay(worker.failJobBatchDelay)}` +
      `, pollInterval ${worker.pollInterval === undefined ? '2000 (default, LISTEN wakes it)' : worker.pollInterval}` +
      (perEntity ? ', queueName per entity' : ''),
    async open(url) {
      const logger = new GraphileLogger(() => () => {});
      await runMigrations({ connectionString: url, logger });
      const producer = createPool(url, PRODUCER_POOL);
      let runner: Runner | undefined;
      return {
        errors: 0,
        // add_jobs is graphile-worker's own bulk insert (what addJobs calls).
        enqueue: (jobs) =>
          sliced(jobs, async (slice) => {
            await producer.query(
              `select count(*) from graphile_worker.add_jobs(array(
                 select row('noop', p, q, null, null, null, null, null)::graphile_worker.job_spec
                 from unnest($1::json[], $2::text[]) as u(p, q)))`,
              [slice.map((j) => JSON.stringify({ t: j.t })), slice.map((j) => graphileQueue(j.entityId))],
            );
          }),
        async startWorkers(onJob) {
          runner = await run({
            connectionString: url,
            noHandleSignals: true,
            logger,
            parsedCronItems: [],
            taskList: { noop: async (payload) => onJob((payload as { t: number }).t) },
            preset: { worker },
          });
        },
        async stopWorkers() {
          await runner?.stop();
          runner = undefined;
        },
        remaining: () => count(producer, 'select count(*)::int as n from graphile_worker._private_jobs'),
        reset: async () => void (await producer.query('truncate graphile_worker._private_jobs, graphile_worker._private_job_queues')),
        analyze: async () => void (await producer.query('analyze graphile_worker._private_jobs, graphile_worker._private_job_queues')),
        close: () => producer.end(),
      };
    },
  };
}

// ---------------------------------------------------------------- pg-boss

/** The knobs of pg-boss 12's work() and queues (https://pgboss.io/api/workers, https://pgboss.io/api/queues). */
export interface PgBossKnobs {
  /** Workers one work() call spawns in this process, each polling on its own. */
  localConcurrency: number;
  batchSize: number;
  pollingIntervalSeconds: number;
  /** Fetch again at once while fetches come back full, instead of sleeping out the interval. */
  burstWhenBatchFull?: boolean;
  /** `useListenNotify` on the instance and `notify` on the queue: a new job wakes the workers. */
  listenNotify?: boolean;
}

/**
 * pg-boss serializes per key with a queue of policy 'singleton' (one *active* job per
 * singletonKey, unlimited queued; docs/api/queues.md). Since 12 its fetch skips keys whose
 * active slot is taken and keeps one job per key in a batch (plans.js fetchNextJob), where 10
 * failed the whole batch on the unique index.
 */
export function pgboss(setting: string, perEntity: boolean, knobs: PgBossKnobs): Setting {
  const queue = perEntity ? 'noop_singleton' : 'noop';
  const notify = knobs.listenNotify ?? false;
  // The LISTEN connection is one more on top of a connection per worker and two to spare.
  const max = knobs.localConcurrency + 2 + (notify ? 1 : 0);
  return {
    contender: 'pg-boss',
    setting,
    perEntity,
    knobs:
      `work() with localConcurrency ${knobs.localConcurrency}, batchSize ${knobs.batchSize}, ` +
      `pollingIntervalSeconds ${knobs.pollingIntervalSeconds}${knobs.burstWhenBatchFull ? ', burstWhenBatchFull' : ''}, ` +
      `${notify ? 'useListenNotify + queue notify' : 'no LISTEN/NOTIFY (default)'}, pool ${max}` +
      `${perEntity ? ", queue policy 'singleton' + singletonKey" : ''}`,
    async open(url) {
      const boss = new PgBoss({ connectionString: url, max, useListenNotify: notify });
      const producer = createPool(url, PRODUCER_POOL);
      const db = { executeSql: (text: string, values: unknown[]) => producer.query(text, values) };
      const qut: QueueUnderTest = {
        errors: 0,
        enqueue: (jobs) =>
          sliced(jobs, async (slice) => {
            await boss.insert(
              queue,
              slice.map((j) => ({ data: { t: j.t }, singletonKey: j.entityId ?? undefined })),
              { db },
            );
          }),
        async startWorkers(onJob) {
          await boss.work<{ t: number }>(
            queue,
            {
              localConcurrency: knobs.localConcurrency,
              batchSize: knobs.batchSize,
              pollingIntervalSeconds: knobs.pollingIntervalSeconds,
              burstWhenBatchFull: knobs.burstWhenBatchFull ?? false,
            },
            async (jobs) => {
              for (const job of jobs) onJob(job.data.t);
            },
          );
        },
        // Waits for the workers' loops to end (pg-boss 10's offWork did not), so the next drain can work() again.
        stopWorkers: () => boss.offWork(queue, { wait: true }),
        // State order is created < retry < active < completed: everything before completed is pending.
        remaining: () => count(producer, `select count(*)::int as n from pgboss.job where name = $1 and state < 'completed'`, [queue]),
        reset: async () => void (await producer.query('truncate pgboss.job')),
        analyze: async () => void (await producer.query('analyze pgboss.job')),
        async close() {
          await boss.stop({ graceful: true, timeout: 5000 });
          await producer.end();
        },
      };
      boss.on('error', () => void qut.errors++);
      await boss.start();
      await boss.createQueue(queue, { policy: perEntity ? 'singleton' : 'standard', notify });
      // createQueue leaves an existing queue as it was: the queue outlives a setting, and the last one's notify must not stick.
      await boss.updateQueue(queue, { notify });
      return qut;
    },
  };
}

/** A plain client for creating the per-contender databases. */
export async function createDatabase(adminUrl: string, name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  return adminUrl.replace(/\/postgres$/, `/${name}`);
}
