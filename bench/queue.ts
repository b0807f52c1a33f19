/**
 * Queue benchmark: pgfleet's queue against graphile-worker 0.16 and pg-boss 10 on one
 * ephemeral Postgres, with the same no-op jobs, then a soak of our queue alone.
 *
 *   npm run bench:queue
 *   BENCH_DRAIN_JOBS=2000 BENCH_SOAK_JOBS=100000 npm run bench:queue   # a quick run
 *   BENCH_ONLY=pgfleet npm run bench:queue                               # settings whose id matches
 *
 * Writes bench/results/queue.json and bench/results/queue.md, and prints the markdown.
 */
import pg from 'pg';
import { startEphemeralPostgres, type EphemeralPostgres } from '../src/pg/ephemeral.ts';
import { createDatabase, graphile, pgboss, pgfleet, type QueueUnderTest, type Setting } from './queue/contenders.ts';
import { explainClaim } from './queue/explain.ts';
import { drain, latency, makeJobs, type Sink } from './queue/measure.ts';
import { markdown, type Machine, type Results, type SettingResult } from './queue/report.ts';
import { soak } from './queue/soak.ts';
import { envInt, gitCommit, hostInfo, writeResults } from './support.ts';

const params = {
  drainJobs: envInt('BENCH_DRAIN_JOBS', 20_000),
  soakJobs: envInt('BENCH_SOAK_JOBS', 1_000_000),
  // pg-boss's defaults (batchSize 1, 2 s poll, 10 loops) run ~5 jobs/s: 20k would take an
  // hour, so every drain stops after this cap and reports the rate it reached.
  drainCapSeconds: envInt('BENCH_DRAIN_CAP_S', 15),
  latencyRate: envInt('BENCH_LATENCY_RATE', 500),
  latencySeconds: envInt('BENCH_LATENCY_SECONDS', 4),
  // Jobs not picked up this long after the last enqueue count as lower bounds.
  latencyWaitSeconds: envInt('BENCH_LATENCY_WAIT_S', 3),
  // The soak runs the app's default Worker (concurrency 10, ~7k jobs/s here: a million in
  // ~2.5 min); BENCH_SOAK_CONCURRENCY=1000 soaks the tuned setting.
  soakConcurrency: envInt('BENCH_SOAK_CONCURRENCY', 10),
  soakCapSeconds: envInt('BENCH_SOAK_CAP_S', 240),
};

/**
 * Concurrency 10 everywhere by default: pgfleet's default (WORKER_CONCURRENCY, src/config.ts).
 * graphile-worker's own default is 1 and pg-boss 10 runs one job per work() loop, so their
 * "default" rows are their defaults with 10 jobs in flight (10 loops for pg-boss).
 * "tuned" rows are the best found with 20k-job drains on this machine:
 * - pgfleet (with migration 0002's claim-order index): per-entity, concurrency 10 → ~6.8k/s,
 *   25 → ~14k/s, 50 → ~22k/s, 100 → ~35k/s, 1000 → ~57k/s: a claim costs about the same
 *   round trip whatever its limit, so larger claims win. Pool 20: no-op jobs hold no connection.
 * - graphile-worker: concurrency 10 → ~2.6k/s, 25 → ~3.6k/s, 50 → ~3.1k/s (no entity).
 * - pg-boss: the brief's batchSize 100 at the minimum poll (0.5 s) → ~2.1k/s; batchSize 1000
 *   → ~26k/s (a loop sleeps out its 0.5 s after each batch, so the batch size is the rate).
 */
const SETTINGS: Setting[] = [
  pgfleet('default', true, 10),
  pgfleet('default', false, 10),
  pgfleet('tuned: concurrency 1000', true, 1000, 20),
  pgfleet('tuned: concurrency 1000', false, 1000, 20),
  graphile('default (concurrency 10)', true, 10),
  graphile('default (concurrency 10)', false, 10),
  graphile('tuned: concurrency 25', true, 25),
  graphile('tuned: concurrency 25', false, 25),
  pgboss('default (10 loops)', true, { workers: 10, batchSize: 1, pollingIntervalSeconds: 2 }),
  pgboss('default (10 loops)', false, { workers: 10, batchSize: 1, pollingIntervalSeconds: 2 }),
  pgboss('tuned: batchSize 100, poll 0.5 s', true, { workers: 10, batchSize: 100, pollingIntervalSeconds: 0.5 }),
  pgboss('tuned: batchSize 100, poll 0.5 s', false, { workers: 10, batchSize: 100, pollingIntervalSeconds: 0.5 }),
  pgboss('tuned: batchSize 1000, poll 0.5 s', true, { workers: 10, batchSize: 1000, pollingIntervalSeconds: 0.5 }),
  pgboss('tuned: batchSize 1000, poll 0.5 s', false, { workers: 10, batchSize: 1000, pollingIntervalSeconds: 0.5 }),
];

const NOTES = [
  'No-op jobs: the handler only records its start time. ' +
    'Each contender has its own database on one Postgres 15 (fsync on, synchronous_commit on), started for this run.',
  'Drain: jobs pre-enqueued (not timed) and ANALYZEd, ' +
    'then the clock runs from starting the workers until the database holds no pending job. ' +
    'Per-entity: 1,000 entity ids, job i on entity i mod 1000 (20 jobs each at 20k).',
  `Drains stop after ${params.drainCapSeconds} s (BENCH_DRAIN_CAP_S); a capped row reports the rate reached by then.`,
  'Pickup latency: handler start − enqueue time (wall clock in the payload), ' +
    `${params.latencyRate} jobs/s for ${params.latencySeconds} s in one statement per 10 ms, to running, idle workers. ` +
    `"≥" marks settings that left jobs unstarted ${params.latencyWaitSeconds} s after the last enqueue (counted with their age then).`,
  'graphile-worker 0.16.6 has no getJobBatchSize / completeJobBatchDelay (0.17+): ' +
    'its only throughput knobs are concurrency and pool size. Per-entity there = one queueName per entity.',
  "pg-boss 10 serializes per key with a queue of policy 'singleton' + singletonKey (one active job per key). " +
    'A fetch whose batch holds a job of a busy key fails on a unique index; ' +
    'pg-boss swallows that silently (manager.js fetch) and the loop sleeps its polling interval, so the whole batch waits. ' +
    "Library errors counted are emitted errors plus unhandled rejections of pg-boss's unawaited complete() (e.g. deadlocks). " +
    'pg-boss has no LISTEN/NOTIFY: pickup waits for a poll, and a loop sleeps the rest of its interval even after a full batch.',
  'pg-boss keeps completed jobs in its job table (archived after 12 h by default); pgfleet and graphile-worker delete them.',
  'Latency phases start from truncated tables, with the workers running.',
  'One measurement per setting per run, on 2 shared cores: expect ±15% noise between runs.',
];

async function machineInfo(url: string): Promise<Machine> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const version = (await client.query<{ v: string }>('select version() as v')).rows[0]?.v ?? '?';
    const settings: Record<string, string> = {};
    for (const name of ['shared_buffers', 'max_connections', 'fsync', 'synchronous_commit', 'autovacuum_naptime']) {
      settings[name] = (await client.query<{ v: string }>(`select current_setting($1) as v`, [name])).rows[0]?.v ?? '?';
    }
    return {
      ...hostInfo(),
      postgres: version.split(' on ')[0] ?? version,
      postgresSettings: settings,
      commit: gitCommit(),
    };
  } finally {
    await client.end();
  }
}

/**
 * pg-boss 10 calls complete() without awaiting it (manager.js, watch → onFetch): when that
 * query fails (we saw "deadlock detected" on singleton queues) the rejection is unhandled
 * and would kill the process. Count them per setting instead; the jobs stay active.
 */
const unhandled = { count: 0, messages: new Set<string>() };
process.on('unhandledRejection', (err) => {
  unhandled.count++;
  unhandled.messages.add(err instanceof Error ? err.message : String(err));
});

async function runSetting(s: Setting, url: string): Promise<SettingResult> {
  const base = { contender: s.contender, setting: s.setting, perEntity: s.perEntity, knobs: s.knobs };
  let q: QueueUnderTest | undefined;
  unhandled.count = 0;
  unhandled.messages.clear();
  const errors = () => (q?.errors ?? 0) + unhandled.count;
  try {
    q = await s.open(url);
    await q.reset();
    const sink: Sink = { onJob: () => undefined };
    const drained = await drain(q, sink, makeJobs(params.drainJobs, s.perEntity), params.drainCapSeconds * 1000);
    // Every latency phase starts from empty tables, with the workers running: a capped drain
    // leaves a backlog that would swamp it, and the same start keeps the settings comparable.
    await q.reset();
    const picked = await latency(q, sink, {
      rate: params.latencyRate,
      seconds: params.latencySeconds,
      perEntity: s.perEntity,
      waitMs: params.latencyWaitSeconds * 1000,
    });
    return { ...base, drain: drained, latency: picked, libraryErrors: errors(), unhandledRejections: [...unhandled.messages] };
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err);
    const nan = NaN;
    return {
      ...base,
      error,
      libraryErrors: errors(),
      unhandledRejections: [...unhandled.messages],
      drain: { jobs: params.drainJobs, completed: 0, seconds: nan, jobsPerSecond: nan, capped: true },
      latency: { enqueued: 0, pickedUp: 0, rate: nan, medianMs: nan, p99Ms: nan, lowerBound: true },
    };
  } finally {
    if (q) {
      await q.stopWorkers().catch(() => undefined);
      await q.reset().catch(() => undefined);
      await q.close().catch(() => undefined);
    }
  }
}

async function main(server: EphemeralPostgres): Promise<void> {
  const machine = await machineInfo(server.url);
  const urls = {
    pgfleet: await createDatabase(server.url, 'bench_pgfleet'),
    'graphile-worker': await createDatabase(server.url, 'bench_graphile'),
    'pg-boss': await createDatabase(server.url, 'bench_pgboss'),
  };
  const only = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY, 'i') : undefined;
  const results: Results = { machine, parameters: params, notes: NOTES, settings: [], soak: undefined, claimPlans: [] };
  for (const s of SETTINGS) {
    const id = `${s.contender} ${s.setting} ${s.perEntity ? 'entity' : 'no-entity'}`;
    if (only && !only.test(id)) continue;
    const r = await runSetting(s, urls[s.contender]);
    results.settings.push(r);
    console.error(
      `${id}: ${
        r.error ??
        `${Math.round(r.drain.jobsPerSecond)} jobs/s${r.drain.capped ? ' (capped)' : ''}, ` +
          `pickup median ${r.latency.medianMs.toFixed(1)} ms, p99 ${r.latency.p99Ms.toFixed(1)} ms`
      }`,
    );
  }
  if (params.soakJobs > 0 && (!only || only.test('pgfleet soak'))) {
    console.error(`soak: ${params.soakJobs} jobs through pgfleet…`);
    results.soak = await soak(urls.pgfleet, params.soakJobs, params.soakConcurrency, params.soakCapSeconds * 1000).catch(
      (err: unknown) => ({
        error: err instanceof Error ? err.message : String(err),
      }),
    );
  }
  if (!only || only.test('pgfleet explain')) {
    results.claimPlans = await explainClaim(urls.pgfleet, params.drainJobs).catch((err: unknown) => {
      console.error(`explain failed: ${err instanceof Error ? err.message : String(err)}`);
      return [];
    });
  }
  await writeResults('queue', results, markdown(results));
}

const server = await startEphemeralPostgres();
let stopping: Promise<void> | undefined;
const stopServer = () => (stopping ??= server.stop());
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void stopServer().finally(() => process.exit(130)));
}
// A throw from a library's timer would otherwise end the process with Postgres still running.
process.on('uncaughtException', (err) => {
  console.error('bench: uncaught exception', err);
  void stopServer().finally(() => process.exit(1));
});
// Every phase has its own cap; this is the backstop should a library hang on stop.
const watchdog = setTimeout(() => {
  console.error('bench: 25 minutes passed, giving up');
  void stopServer().finally(() => process.exit(2));
}, 25 * 60_000);
try {
  await main(server);
} finally {
  clearTimeout(watchdog);
  await stopServer();
}
// Libraries may leave timers behind (pg-boss, graphile-worker): the run is over.
process.exit(process.exitCode ?? 0);
