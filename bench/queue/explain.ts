import type { Queryable } from '../../src/db.ts';
import { createPool } from '../../src/db.ts';
import { loadConfig } from '../../src/config.ts';
import { migrate } from '../../src/migrate.ts';
import { claimJobs } from '../../src/queue/claim.ts';
import { enqueueMany, PRIORITY } from '../../src/queue/jobs.ts';
import { makeJobs } from './measure.ts';

/** Jobs that only need to be there, to be claimed by the plans explained. */
type ExplainTasks = { noop: { entityId: string | null; payload: Record<string, never> } };

export interface ClaimPlan {
  perEntity: boolean;
  /** What the table held and which claim ran, beyond per-entity and the count. */
  variant: string;
  jobsInTable: number;
  limit: number;
  executionMs: number;
  plan: string;
}

/**
 * The cases explained: all jobs of one priority, per-entity on and off; then one job in 100
 * urgent among routine ones, claimed as a worker with room does (urgent first, then run
 * order) and as one whose routine slots are full (urgent only).
 */
const CASES = [
  { perEntity: true, variant: 'one priority', urgentEvery: 0, minPriority: undefined },
  { perEntity: false, variant: 'one priority', urgentEvery: 0, minPriority: undefined },
  { perEntity: true, variant: '1 in 100 urgent, any priority claimed', urgentEvery: 100, minPriority: undefined },
  { perEntity: true, variant: '1 in 100 urgent, only urgent claimed', urgentEvery: 100, minPriority: PRIORITY.urgent },
];

/**
 * EXPLAIN ANALYZE of our claim query on a full table, for each of CASES. The query text
 * is the one in src/queue/claim.ts: claimJobs runs it through a Queryable that prefixes
 * EXPLAIN, inside a transaction that is rolled back, so nothing is claimed and nothing here
 * copies the SQL (it stays right when the lead changes the query).
 */
export async function explainClaim(url: string, jobs: number, limit = 10): Promise<ClaimPlan[]> {
  const pool = createPool(url, 2);
  const plans: ClaimPlan[] = [];
  try {
    await migrate(pool);
    for (const { perEntity, variant, urgentEvery, minPriority } of CASES) {
      await pool.query('truncate jobs');
      const all = makeJobs(jobs, perEntity);
      for (let i = 0; i < all.length; i += 10_000) {
        await enqueueMany<ExplainTasks>(
          pool,
          all.slice(i, i + 10_000).map((j, k) => ({
            task: 'noop',
            entityId: j.entityId,
            ...(urgentEvery > 0 ? { priority: (i + k) % urgentEvery === urgentEvery - 1 ? PRIORITY.urgent : PRIORITY.routine } : {}),
          })),
        );
      }
      await pool.query('analyze jobs');
      const client = await pool.connect();
      try {
        await client.query('begin');
        const explaining: Queryable = {
          query: ((text: string, values?: unknown[]) =>
            client.query(`explain (analyze, buffers, settings) ${text}`, values)) as Queryable['query'],
        };
        // The rows are plan lines, not jobs: claimJobs returns whatever the query returned.
        const rows = (await claimJobs(explaining, {
          workerId: 'explain',
          queues: undefined,
          limit,
          // The lease the app claims with by default (PGFLEET_JOB_LEASE): it only sets locked_until here.
          leaseSeconds: loadConfig({}).jobLease,
          minPriority,
        })) as unknown as {
          'QUERY PLAN': string;
        }[];
        const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
        const executionMs = Number(/Execution Time: ([\d.]+) ms/.exec(plan)?.[1] ?? NaN);
        plans.push({ perEntity, variant, jobsInTable: jobs, limit, executionMs, plan });
      } finally {
        await client.query('rollback').catch(() => undefined);
        client.release();
      }
    }
    await pool.query('truncate jobs');
  } finally {
    await pool.end();
  }
  return plans;
}
