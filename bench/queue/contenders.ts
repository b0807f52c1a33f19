import { Logger as GraphileLogger, run, runMigrations, type Runner } from 'graphile-worker';
import pg from 'pg';
import PgBoss from 'pg-boss';
import { pino } from 'pino';
import { createPool, type Pool } from '../../src/db.ts';
import { enqueueMany } from '../../src/queue/jobs.ts';
import { Worker } from '../../src/queue/worker.ts';
import { Clock } from '../../src/clock.ts';
import { migrate } from '../../src/migrate.ts';
import { loadConfig } from '../../src/config.ts';

/** A no-op job: `t` is the wall-clock ms at which it was enqueued, for pickup latency. */
export interface BenchJob {
  entityId: string | null;
  t: number;
}

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
    // Pool concurrency + 5 is src/app.ts's; the 1 s idle poll is the Worker's own default.
    knobs:
      `1 Worker + 1 Clock (as deployed), concurrency ${concurrency}, pool ${poolSize}, ` +
      `lease ${jobLease} s (PGFLEET_JOB_LEASE default), pollMs 1000 (default)`,
    async open(url) {
      const pool = createPool(url, poolSize);
      const producer = createPool(url, PRODUCER_POOL);
      await migrate(pool);
      let worker: Worker | undefined;
      let clock: Clock | undefined;
      return {
        errors: 0,
        enqueue: (jobs) =>
          sliced(jobs, (slice) =>
            enqueueMany(
              producer,
              slice.map((j) => ({ task: 'noop', entityId: j.entityId, payload: { t: j.t } })),
            ),
          ),
        async startWorkers(onJob) {
          worker = new Worker(pool, {
            queues: undefined,
            concurrency,
            leaseSeconds: jobLease,
            handlers: { noop: async (job) => onJob(job.payload.t as number) },
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

export function graphile(setting: string, perEntity: boolean, concurrency: number): Setting {
  return {
    contender: 'graphile-worker',
    setting,
    perEntity,
    // 0.16.6 has no local queue or batched completion (getJobBatchSize / completeJobBatchDelay
    // arrived in 0.17): `concurrency` and the pool size are the only throughput knobs.
    knobs: `run(), concurrency ${concurrency}, maxPoolSize ${Math.max(10, concurrency + 2)}, pollInterval 2000 (default, LISTEN wakes it)`,
    async open(url) {
      const logger = new GraphileLogger(() => () => {});
      await runMigrations({ connectionString: url, logger });
      const producer = createPool(url, PRODUCER_POOL);
      let runner: Runner | undefined;
      return {
        errors: 0,
        // add_jobs is graphile-worker's own bulk insert (what addJob calls, for many specs).
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
            concurrency,
            maxPoolSize: Math.max(10, concurrency + 2),
            noHandleSignals: true,
            logger,
            parsedCronItems: [],
            taskList: { noop: async (payload) => onJob((payload as { t: number }).t) },
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

/**
 * pg-boss 10 can serialize per key: a queue with policy 'singleton' allows one *active* job
 * per singletonKey (unique index job_i2), unlimited queued. A fetch that would activate a
 * second job of a busy key fails on that index; pg-boss swallows the error and the worker
 * waits out its polling interval. 'stately' would instead drop the 2nd queued job of a key.
 */
export function pgboss(
  setting: string,
  perEntity: boolean,
  opts: { workers: number; batchSize: number; pollingIntervalSeconds: number },
): Setting {
  const queue = perEntity ? 'noop_singleton' : 'noop';
  return {
    contender: 'pg-boss',
    setting,
    perEntity,
    knobs:
      `${opts.workers} × work(), batchSize ${opts.batchSize}, pollingIntervalSeconds ${opts.pollingIntervalSeconds}, ` +
      `pool ${opts.workers + 2}${perEntity ? ", queue policy 'singleton' + singletonKey" : ''}`,
    async open(url) {
      const boss = new PgBoss({ connectionString: url, max: opts.workers + 2 });
      const producer = createPool(url, PRODUCER_POOL);
      const db = { executeSql: (text: string, values: unknown[]) => producer.query(text, values) };
      const qut: QueueUnderTest = {
        errors: 0,
        enqueue: (jobs) =>
          sliced(jobs, (slice) =>
            boss.insert(
              slice.map((j) => ({ name: queue, data: { t: j.t }, singletonKey: j.entityId ?? undefined })),
              { db },
            ),
          ),
        async startWorkers(onJob) {
          for (let i = 0; i < opts.workers; i++) {
            await boss.work<{ t: number }>(
              queue,
              { batchSize: opts.batchSize, pollingIntervalSeconds: opts.pollingIntervalSeconds },
              async (jobs) => {
                for (const job of jobs) onJob(job.data.t);
              },
            );
          }
        },
        // offWork() returns before its loops end; stop() waits for them (and closes boss's pool).
        stopWorkers: () => boss.stop({ graceful: true, wait: true, timeout: 5000 }),
        // State order is created < retry < active < completed: everything before completed is pending.
        remaining: () => count(producer, `select count(*)::int as n from pgboss.job where name = $1 and state < 'completed'`, [queue]),
        reset: async () => void (await producer.query('truncate pgboss.job, pgboss.archive')),
        analyze: async () => void (await producer.query('analyze pgboss.job')),
        async close() {
          await boss.stop({ graceful: true, wait: true, timeout: 5000 });
          await producer.end();
        },
      };
      boss.on('error', () => void qut.errors++);
      await boss.start();
      await boss.createQueue(queue, { name: queue, policy: perEntity ? 'singleton' : 'standard' });
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
