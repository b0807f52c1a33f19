import type { Queryable } from '../../src/db.ts';
import { createPool } from '../../src/db.ts';
import { migrate } from '../../src/migrate.ts';
import { claimJobs, enqueueMany } from '../../src/queue/jobs.ts';
import { makeJobs } from './measure.ts';

export interface ClaimPlan {
  perEntity: boolean;
  jobsInTable: number;
  limit: number;
  executionMs: number;
  plan: string;
}

/**
 * EXPLAIN ANALYZE of our claim query on a full table, per-entity on and off. The query text
 * is the one in src/queue/jobs.ts: claimJobs runs it through a Queryable that prefixes
 * EXPLAIN, inside a transaction that is rolled back, so nothing is claimed and nothing here
 * copies the SQL (it stays right when the lead changes the query).
 */
export async function explainClaim(url: string, jobs: number, limit = 10): Promise<ClaimPlan[]> {
  const pool = createPool(url, 2);
  const plans: ClaimPlan[] = [];
  try {
    await migrate(pool);
    for (const perEntity of [true, false]) {
      await pool.query('truncate jobs');
      const all = makeJobs(jobs, perEntity);
      for (let i = 0; i < all.length; i += 10_000) {
        await enqueueMany(pool, all.slice(i, i + 10_000).map((j) => ({ task: 'noop', entityId: j.entityId })));
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
        const rows = (await claimJobs(explaining, { workerId: 'explain', queues: undefined, limit, leaseSeconds: 120 })) as unknown as {
          'QUERY PLAN': string;
        }[];
        const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
        const executionMs = Number(/Execution Time: ([\d.]+) ms/.exec(plan)?.[1] ?? NaN);
        plans.push({ perEntity, jobsInTable: jobs, limit, executionMs, plan });
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
