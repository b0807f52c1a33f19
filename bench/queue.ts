/**
 * Queue benchmark: pgfleet's queue against graphile-worker and pg-boss (the versions
 * package.json pins) on one ephemeral Postgres, with the same no-op jobs, then a soak of our
 * queue alone.
 *
 *   npm run bench:queue
 *   BENCH_DRAIN_JOBS=2000 BENCH_SOAK_JOBS=100000 npm run bench:queue   # a quick run
 *   BENCH_ONLY=pgfleet npm run bench:queue                               # settings whose id matches
 *
 * Writes bench/results/queue.json and bench/results/queue.md, and prints the markdown.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { startEphemeralPostgres, type EphemeralPostgres } from '../src/pg/ephemeral.ts';
import { createDatabase, graphile, pgboss, pgfleet, type QueueUnderTest, type Setting } from './queue/contenders.ts';
import { explainClaim } from './queue/explain.ts';
import { drain, latency, makeJobs, medianDrain, type DrainResult, type Sink } from './queue/measure.ts';
import { markdown, type Machine, type Results, type SettingResult } from './queue/report.ts';
import { soak } from './queue/soak.ts';
import { envInt, gitCommit, hostInfo, writeResults } from './support.ts';

const params = {
  drainJobs: envInt('BENCH_DRAIN_JOBS', 20_000),
  soakJobs: envInt('BENCH_SOAK_JOBS', 1_000_000),
  // pg-boss's defaults (batchSize 1, 2 s poll, 10 workers) run ~5 jobs/s: 20k would take an
  // hour, so every drain stops after this cap and reports the rate it reached.
  drainCapSeconds: envInt('BENCH_DRAIN_CAP_S', 15),
  // Drains per setting, of which the table quotes the median: one drain on 2 shared cores
  // varies by ±25%. A capped drain is not repeated: it already says the setting cannot keep up.
  drainRepeats: envInt('BENCH_DRAIN_REPEATS', 3, 1),
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
 * graphile-worker's own default is 1 and pg-boss runs one job per worker (localConcurrency 1),
 * so their "default" rows are their defaults with 10 jobs in flight.
 * The other rows are pgfleet's best found and each peer's best documented settings, chosen
 * among by 20k-job drains on this machine (one each, ±25% between runs):
 * - pgfleet (with migration 0002's claim-order index): per-entity, concurrency 10 → ~6.8k/s,
 *   25 → ~14k/s, 50 → ~22k/s, 100 → ~35k/s, 1000 → ~57k/s: a claim costs about the same
 *   round trip whatever its limit, so larger claims win. Pool 20: no-op jobs hold no connection.
 * - graphile-worker 0.18, https://worker.graphile.org/docs/performance ("Quick stats", "Batching"):
 *   without batching, concurrency 10 → ~2.3k/s (no entity), ~580/s per-entity. Its suggested
 *   starting point (localQueue concurrency + 1, complete/fail batch delay 250 ms) → ~9.8k/s, but
 *   per-entity ~600/s: a named queue stays locked until its job's batched completion lands.
 *   The configuration its quick stats were measured with (24 jobs, pool 25, localQueue 500,
 *   delays 0) → 28–39k/s, per-entity 2.2k–7.8k/s; concurrency 10 or 50 with the same local
 *   queue did no better, and a refetchDelay of 10 ms (its perfTest/graphile.config.js) neither.
 *   Per-entity drains vary most: a named queue that unlocks sends no NOTIFY, so a local queue
 *   whose fetch found only locked queues waits out pollInterval (2 s; the starting point drains
 *   8,000 in 15 s, one per entity per poll). pollInterval 100 ms → 10.8–26.9k/s per-entity, so
 *   the tuned rows set it (https://worker.graphile.org/docs/config, `pollInterval`): a peer at
 *   its best, though its docs give no value for it.
 * - pg-boss 12, https://pgboss.io/api/workers (batchSize, burstWhenBatchFull, LISTEN/NOTIFY),
 *   /api/queues (notify, policies), /api/constructor (useListenNotify): batchSize 100 at the minimum
 *   poll (0.5 s) → ~2.1k/s, as a worker sleeps out its interval after each batch;
 *   burstWhenBatchFull (fetch again at once while batches come back full) → ~22k/s, per-entity
 *   4–6k/s; with LISTEN/NOTIFY (useListenNotify + queue notify) too, pickup fell from ~240 ms to
 *   ~5 ms (per-entity 9.9k/s, in a quieter run); batchSize 1000 → 24–28k/s, per-entity 7.9–16.5k/s.
 *   localConcurrency 25 did no better and deadlocked on the singleton queue. NOTIFY without
 *   burst at batchSize 1 drains a backlog at 10 jobs per 30 s (notifyPollingIntervalSeconds):
 *   only new jobs wake a worker.
 */
const GRAPHILE_DOCS_START = { localQueue: { size: 11 }, completeJobBatchDelay: 250, failJobBatchDelay: 250 };
const GRAPHILE_DOCS_STATS = {
  concurrentJobs: 24,
  maxPoolSize: 25,
  localQueue: { size: 500 },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
  pollInterval: 100,
};
const PGBOSS_DEFAULT = { localConcurrency: 10, batchSize: 1, pollingIntervalSeconds: 2 };
const PGBOSS_TUNED = { localConcurrency: 10, pollingIntervalSeconds: 0.5, burstWhenBatchFull: true, listenNotify: true };
const SETTINGS: Setting[] = [
  pgfleet('default', true, 10),
  pgfleet('default', false, 10),
  pgfleet('tuned: concurrency 1000', true, 1000, 20),
  pgfleet('tuned: concurrency 1000', false, 1000, 20),
  graphile('default (concurrency 10)', true, { concurrentJobs: 10 }),
  graphile('default (concurrency 10)', false, { concurrentJobs: 10 }),
  graphile("docs' batching starting point", true, { concurrentJobs: 10, ...GRAPHILE_DOCS_START }),
  graphile("docs' batching starting point", false, { concurrentJobs: 10, ...GRAPHILE_DOCS_START }),
  graphile("tuned: docs' quick-stats config, poll 100 ms", true, GRAPHILE_DOCS_STATS),
  graphile("tuned: docs' quick-stats config, poll 100 ms", false, GRAPHILE_DOCS_STATS),
  pgboss('default (10 workers)', true, PGBOSS_DEFAULT),
  pgboss('default (10 workers)', false, PGBOSS_DEFAULT),
  pgboss('tuned: batchSize 100, burst, NOTIFY', true, { ...PGBOSS_TUNED, batchSize: 100 }),
  pgboss('tuned: batchSize 100, burst, NOTIFY', false, { ...PGBOSS_TUNED, batchSize: 100 }),
  pgboss('tuned: batchSize 1000, burst, NOTIFY', true, { ...PGBOSS_TUNED, batchSize: 1000 }),
  pgboss('tuned: batchSize 1000, burst, NOTIFY', false, { ...PGBOSS_TUNED, batchSize: 1000 }),
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
  'Per-entity serialization: graphile-worker runs one named queue (queueName) per entity; ' +
    "pg-boss a queue of policy 'singleton' with the entity as singletonKey (one active job per key, unlimited queued).",
  'graphile-worker batching (0.17+): localQueue.size jobs are claimed per fetch and handed out without a round trip; ' +
    'completeJobBatchDelay / failJobBatchDelay ms let completions share one statement (0 still batches what is ready). ' +
    "A named queue stays locked until its job's completion is written, so a 250 ms delay holds each entity that long.",
  'pg-boss: a worker sleeps its polling interval after each fetch unless burstWhenBatchFull sees a full batch; ' +
    'with useListenNotify and a notify queue, a new job wakes the workers, and polling drops to notifyPollingIntervalSeconds (30 s). ' +
    'Library errors counted are the errors pg-boss emits (e.g. a fetch that deadlocked) plus unhandled rejections.',
  'pg-boss keeps completed jobs in its job table (deleted after 7 days by default); pgfleet and graphile-worker delete them.',
  'Latency phases start from truncated tables, with the workers running.',
  `jobs/s is the median of ${params.drainRepeats} drains (BENCH_DRAIN_REPEATS), the range in parentheses; ` +
    'one pickup-latency phase per setting. On 2 shared cores one drain varies by ±25%.',
];

/** What npm installed, which is what ran: the table must not name a version from memory. */
function peerVersions(): Record<string, string> {
  const version = (name: string) =>
    (JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')) as { version: string }).version;
  return { 'graphile-worker': version('graphile-worker'), 'pg-boss': version('pg-boss') };
}

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
 * A library promise that fails with nobody awaiting it would end the process as an unhandled
 * rejection (pg-boss 10 did not await complete(), which deadlocked on singleton queues). Count
 * them per setting instead.
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
    const sink: Sink = { onJob: () => undefined };
    const drains: DrainResult[] = [];
    for (let i = 0; i < params.drainRepeats && !drains.some((d) => d.capped); i++) {
      // Every drain starts the workers on a full queue, as the first one does.
      if (i > 0) await q.stopWorkers();
      await q.reset();
      drains.push(await drain(q, sink, makeJobs(params.drainJobs, s.perEntity), params.drainCapSeconds * 1000));
    }
    const drained = medianDrain(drains);
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
  const results: Results = {
    machine,
    versions: peerVersions(),
    parameters: params,
    notes: NOTES,
    settings: [],
    soak: undefined,
    claimPlans: [],
  };
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
