import type pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { loadConfig, type Addon } from '../../src/config.ts';
import { transaction, type Pool } from '../../src/db.ts';
import { createLogger } from '../../src/log.ts';
import { findPgBinaries, type PgBinaries } from '../../src/pg/binaries.ts';
import { asSuperuser } from '../../src/pg/superuser.ts';
import { workerTasks } from '../../src/processes/tasks.ts';
import { wireSubscribers } from '../../src/processes/subscribers.ts';
import { stopLocalClusters, type LocalProvider } from '../../src/providers/local.ts';
import { makeProviders } from '../../src/providers/registry.ts';
import { enqueue, PRIORITY, type Job } from '../../src/queue/jobs.ts';
import type { JobHandler } from '../../src/queue/worker.ts';
import { queueForTask, sendEvent, statePath, type EventOf, type Unstamped } from '../../src/runner/runner.ts';
import type { MachineName } from '../../src/runner/machines.ts';
import { loadServerRecord } from '../../src/servers/rows.ts';
import type { ResourceTaskOptions } from '../../src/resources/tasks.ts';
import { openArchive, type ArchiveTarget } from '../../src/store/open.ts';
import type { ObjectStore } from '../../src/store/store.ts';
import { certificateAuthority } from '../../src/tls/authority.ts';
import { createTestDatabase } from './db.ts';
import { testProviderContext } from './providers.ts';
import { TEST_SEALER } from './system.ts';

/**
 * One task at a time, as a worker runs it, on a real control database and real servers of
 * the local provider: what test/tasks/ drives machines with. Every test builds its jobs and
 * calls handlers through `runTask` alone, so a change to the job or handler contract is one
 * edit here.
 */
export interface TaskBench {
  pool: Pool;
  /** The worker's table, as src/processes/app.ts builds it. */
  tasks: Record<string, JobHandler>;
  local: LocalProvider;
  store: ObjectStore;
  /** The deployment's CA certificate, which tenants check their servers' certificates with. */
  ca: string;
}

const config = loadConfig({ LOG_LEVEL: 'silent' });
const log = createLogger('silent');

/** The add-on settings tasks run with; `platformUrl` is where deliveries go (a FakePlatform's). */
function addon(platformUrl: string): Addon {
  return {
    ...config.addon,
    password: 'addon-password',
    ssoSalt: 'addon-salt',
    clientSecret: 's',
    platformApiUrl: platformUrl,
    platformIdUrl: platformUrl,
  };
}

/**
 * What server and resource tasks run with in a test: the test sealer, the local provider, the
 * deployment's CA from `pool`, WAL archived to `archive`, and deliveries to `platformUrl`.
 */
export async function testTaskOptions(
  pool: Pool,
  archive: ArchiveTarget,
  binaries: PgBinaries = findPgBinaries(config.pgBin),
  platformUrl = 'http://127.0.0.1:9',
): Promise<ResourceTaskOptions> {
  return {
    sealer: TEST_SEALER,
    provider: 'local',
    sharedMaxConnections: config.sharedMaxConnections,
    addon: addon(platformUrl),
    configPrefix: 'DATABASE',
    binaries,
    archive,
    probe: config.probe,
    tls: { authority: await certificateAuthority(pool, TEST_SEALER), ...config.tls },
  };
}

/**
 * A control database, a PGFLEET_HOME with the local provider (and pgbouncer when `pooler`),
 * an archive in it, and the worker's tasks, for a test file (deliveries to `platformUrl`,
 * pages to `pagerUrl`, both read once the file's earlier hooks have run); every server the file's tasks
 * started is stopped after it. Read the fields inside tests and hooks.
 */
export function useTaskBench(opts: { pooler?: boolean; platformUrl?: () => string; pagerUrl?: () => string } = {}): TaskBench {
  const bench = {} as TaskBench;
  let cleanup: (() => Promise<void>) | undefined;
  wireSubscribers(config.paging);
  beforeAll(async () => {
    const db = await createTestDatabase();
    const context = await testProviderContext({ pooler: opts.pooler });
    cleanup = async () => {
      await stopLocalClusters(context.home, context.cluster);
      await context.remove();
      await db.drop();
    };
    const providers = makeProviders(context);
    const archive = { storeUrl: `file://${context.home}/archive` };
    const options = await testTaskOptions(db.pool, archive, context.bin, opts.platformUrl?.());
    Object.assign(bench, {
      pool: db.pool,
      local: providers.local as LocalProvider,
      store: openArchive(archive),
      ca: options.tls.authority.certificate,
      tasks: workerTasks(providers, {
        ...options,
        paging: { ...config.paging, webhookUrl: opts.pagerUrl?.() },
        consoleUrl: undefined,
        archiveRetentionSeconds: 1,
      }),
    });
  });
  afterAll(async () => {
    await cleanup?.();
  });
  return bench;
}

/** Which pending job to run: the entity's job of the task, or an entity-less one whose payload holds `payload`. */
export type JobWanted = { entity: string } | { payload: Record<string, unknown> };

/**
 * Run the pending job of `task` that a machine (or a task's commit) asked for, as a worker
 * does: its handler, then its job deleted and its outcome committed in one transaction.
 * Delays are not waited out. Fails when no such job is pending: the entity's machine did
 * not ask for it.
 */
export async function runTask(bench: TaskBench, task: string, wanted: JobWanted): Promise<void> {
  const entity = 'entity' in wanted ? wanted.entity : null;
  const payload = 'payload' in wanted ? wanted.payload : {};
  const { rows } = await bench.pool.query<Job>(
    `select id::text, queue, entity_id as "entityId", task, payload, key, priority, attempts + 1 as attempts,
       max_attempts as "maxAttempts"
     from jobs where task = $1 and entity_id is not distinct from $2 and payload @> $3 and dead_at is null and locked_by is null
     order by id limit 1`,
    [task, entity, JSON.stringify(payload)],
  );
  const job = rows[0];
  if (!job) throw new Error(`no pending ${task} job for ${JSON.stringify(wanted)}: the machine did not ask for it`);
  const handler = bench.tasks[task];
  if (!handler) throw new Error(`the worker has no handler for ${task}`);
  const outcome = await handler(job, { pool: bench.pool, log });
  await transaction(bench.pool, async (client) => {
    await client.query('delete from jobs where id = $1', [job.id]);
    await outcome?.commit(client);
  });
}

/** Whether a job of `task` is pending for the entity: what its machine asks for. */
export async function asked(bench: TaskBench, task: string, entity: string): Promise<boolean> {
  const { rowCount } = await bench.pool.query('select 1 from jobs where task = $1 and entity_id = $2 and dead_at is null', [task, entity]);
  return (rowCount ?? 0) > 0;
}

/** Send the entity's machine an event, as the web or another task does, to bring it to the state under test. */
export async function tell<M extends MachineName>(bench: TaskBench, entity: string, event: Unstamped<EventOf<M>>): Promise<void> {
  await transaction(bench.pool, (client) => sendEvent<M>(client, entity, event));
}

/** The entity's machine's state, nested states included (`restarting.verifying`). */
export async function stateOf(bench: TaskBench, entity: string): Promise<string> {
  const { rows } = await bench.pool.query<{ snapshot: { value: Parameters<typeof statePath>[0] } }>(
    'select snapshot from machines where entity_id = $1',
    [entity],
  );
  return statePath(rows[0]!.snapshot.value);
}

export interface TransitionRow {
  event: string;
  from: string | null;
  to: string;
  data: Record<string, unknown> | null;
  /** Whether a job's outcome told it. */
  byJob: boolean;
}

/**
 * The entity's last transition row (of `event`, when given: a commit that tells other
 * machines too may have their subscribers' steps land on this one after it).
 */
export async function lastTransition(bench: TaskBench, entity: string, event?: string): Promise<TransitionRow> {
  const { rows } = await bench.pool.query<TransitionRow>(
    `select event, from_state as "from", to_state as "to", event_data as data, job_id is not null as "byJob"
     from transitions where entity_id = $1 and ($2::text is null or event = $2) order by id desc limit 1`,
    [entity, event ?? null],
  );
  return rows[0]!;
}

/** Drop every pending job: a test that sets a machine up by hand runs only the task it means to. */
export async function dropJobs(bench: TaskBench): Promise<void> {
  await bench.pool.query('delete from jobs');
}

/**
 * The clock asks for an observation of the entity (a no-op when its machine asked for one
 * already), the observers look (the real `observe` task), and the tick shows the machine
 * what they saw.
 */
export async function observeNow(bench: TaskBench, entity: string): Promise<void> {
  await enqueue(bench.pool, {
    task: 'observe',
    entityId: entity,
    key: 'observe',
    queue: queueForTask('observe'),
    priority: PRIORITY.routine,
  });
  await runTask(bench, 'observe', { entity });
  await runTask(bench, 'tick', { entity });
}

/** A placed server's new Postgres brought up by its own tasks, until its machine is `available`. */
export async function serverUp(bench: TaskBench, server: string): Promise<void> {
  for (const task of ['provision', 'initialize', 'start']) await runTask(bench, task, { entity: server });
  await observeNow(bench, server);
  const state = await stateOf(bench, server);
  if (state !== 'available') throw new Error(`server ${server} came up ${state}, not available`);
}

/** SQL on a server as its superuser, in `database`. */
export async function serverQuery<R extends pg.QueryResultRow = Record<string, unknown>>(
  bench: TaskBench,
  server: string,
  sql: string,
  database = 'postgres',
): Promise<R[]> {
  const record = await loadServerRecord(bench.pool, TEST_SEALER, server);
  return asSuperuser(
    { host: record!.host!, port: record!.port!, password: record!.superuserPassword },
    database,
    async (client) => (await client.query<R>(sql)).rows,
  );
}
