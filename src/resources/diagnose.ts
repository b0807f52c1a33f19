import { asSuperuser, type SuperuserTarget } from '../pg/superuser.ts';

/** One check of `pgfleet diagnose`, as `heroku pg:diagnose` reports them. */
export interface Check {
  name: string;
  status: 'green' | 'yellow' | 'red';
  detail: string;
  rows?: Record<string, unknown>[];
}

export interface Thresholds {
  /** Seconds before a running query, a transaction, or an idle transaction is yellow; red at five times. */
  longSeconds: number;
  /** Blocks read before a hit rate means anything. */
  minReads: number;
}

export const DEFAULT_THRESHOLDS: Thresholds = { longSeconds: 60, minReads: 1000 };

/** A diagnosis must answer even when the database is in trouble: no query waits longer. */
const QUERY_TIMEOUT_MS = 15_000;

const grade = (value: number, yellow: number, red: number): Check['status'] =>
  value >= red ? 'red' : value >= yellow ? 'yellow' : 'green';

/**
 * The checks, run as the server's superuser inside the customer's database: it sees every
 * session of that database, the tenant's own only through its own eyes.
 */
export async function diagnose(
  target: SuperuserTarget,
  database: string,
  connectionLimit: number,
  t: Thresholds = DEFAULT_THRESHOLDS,
): Promise<Check[]> {
  return asSuperuser(
    target,
    database,
    async (c) => {
      const q = async <R extends Record<string, unknown>>(sql: string, params: unknown[] = []) => (await c.query<R>(sql, params)).rows;
      const mine = `datname = current_database() and pid <> pg_backend_pid()
        and backend_type = 'client backend' and application_name not like 'pgfleet%'`;
      const checks: Check[] = [];

      const [{ n }] = (await q<{ n: number }>(`select count(*)::int as n from pg_stat_activity where ${mine}`)) as [{ n: number }];
      checks.push({
        name: 'connection count',
        status: grade(n / connectionLimit, 0.5, 0.8),
        detail: `${n} of ${connectionLimit} connections in use`,
      });

      const long = async (name: string, where: string, since: string) => {
        const rows = await q(
          `select pid, usename as user, state, round(extract(epoch from now() - ${since}))::int as seconds, left(query, 200) as query
         from pg_stat_activity where ${mine} and ${where} and now() - ${since} > make_interval(secs => $1) order by seconds desc limit 10`,
          [t.longSeconds],
        );
        const worst = Math.max(0, ...rows.map((r) => Number(r.seconds)));
        checks.push({
          name,
          status: grade(worst, t.longSeconds, t.longSeconds * 5),
          detail: rows.length ? `${rows.length}, the longest ${worst} s` : 'none',
          rows,
        });
      };
      await long('long running queries', `state = 'active'`, 'query_start');
      await long('long transactions', 'xact_start is not null', 'xact_start');
      await long('idle in transaction', `state like 'idle in transaction%'`, 'state_change');

      const blocking = await q(
        `select blocked.pid as blocked_pid, left(blocked.query, 200) as blocked_query,
           blocker.pid as blocking_pid, left(blocker.query, 200) as blocking_query,
         round(extract(epoch from now() - blocked.query_start))::int as waited_seconds
       from pg_stat_activity blocked join lateral unnest(pg_blocking_pids(blocked.pid)) b(pid) on true
       join pg_stat_activity blocker on blocker.pid = b.pid where blocked.datname = current_database()`,
      );
      checks.push({
        name: 'blocking queries',
        status: blocking.length ? 'red' : 'green',
        detail: blocking.length ? `${blocking.length} queries waiting on others` : 'none',
        rows: blocking,
      });

      const unused = await q(
        `select schemaname || '.' || relname as table, indexrelname as index, pg_size_pretty(pg_relation_size(indexrelid)) as size
       from pg_stat_user_indexes s join pg_index i using (indexrelid)
       where idx_scan = 0 and not i.indisunique and pg_relation_size(indexrelid) > 1024 * 1024
       order by pg_relation_size(indexrelid) desc limit 10`,
      );
      checks.push({
        name: 'unused indexes',
        status: unused.length ? 'yellow' : 'green',
        detail: unused.length ? `${unused.length} never used, over 1 MB each` : 'none',
        rows: unused,
      });

      const bloat = await q(
        `select schemaname || '.' || relname as table, n_dead_tup as dead, n_live_tup as live,
         round(n_dead_tup::numeric / greatest(n_live_tup + n_dead_tup, 1), 2)::float8 as ratio
       from pg_stat_user_tables where n_dead_tup > 10000 order by ratio desc limit 10`,
      );
      const worstBloat = Math.max(0, ...bloat.map((r) => Number(r.ratio)));
      checks.push({
        name: 'bloat',
        status: grade(worstBloat, 0.2, 0.5),
        detail: bloat.length ? `dead rows up to ${Math.round(worstBloat * 100)}% of a table` : 'none',
        rows: bloat,
      });

      const [hits] = (await q<{ table_hit: number | null; index_hit: number | null; reads: number }>(
        `select sum(heap_blks_hit)::float8 / nullif(sum(heap_blks_hit + heap_blks_read), 0) as table_hit,
         sum(idx_blks_hit)::float8 / nullif(sum(idx_blks_hit + idx_blks_read), 0) as index_hit,
         coalesce(sum(heap_blks_hit + heap_blks_read + coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0)), 0)::float8 as reads
       from pg_statio_user_tables`,
      )) as [{ table_hit: number | null; index_hit: number | null; reads: number }];
      const rate = Math.min(hits.table_hit ?? 1, hits.index_hit ?? 1);
      checks.push({
        name: 'hit rate',
        status: hits.reads < t.minReads ? 'green' : rate < 0.95 ? 'red' : rate < 0.99 ? 'yellow' : 'green',
        detail:
          hits.reads < t.minReads
            ? 'too few reads to judge'
            : `tables ${((hits.table_hit ?? 1) * 100).toFixed(1)}%, indexes ${((hits.index_hit ?? 1) * 100).toFixed(1)}%`,
      });

      const [{ age }] = (await q<{ age: number }>(
        'select age(datfrozenxid)::int as age from pg_database where datname = current_database()',
      )) as [{ age: number }];
      checks.push({
        name: 'xid wraparound',
        status: grade(age, 1_000_000_000, 1_500_000_000),
        detail: `oldest unfrozen transaction is ${age.toLocaleString('en')} transactions old`,
      });
      return checks;
    },
    QUERY_TIMEOUT_MS,
  );
}

/** What `pgfleet info` shows of a database, like `heroku pg:info`. */
export async function databaseInfo(target: SuperuserTarget, database: string): Promise<Record<string, string | number>> {
  return asSuperuser(
    target,
    database,
    async (c) => {
      const { rows } = await c.query<{ version: string; size: string; tables: number; connections: number }>(
        `select current_setting('server_version') as version, pg_size_pretty(pg_database_size(current_database())) as size,
         (select count(*)::int from pg_stat_user_tables) as tables,
         (select count(*)::int from pg_stat_activity where datname = current_database() and backend_type = 'client backend'
            and pid <> pg_backend_pid() and application_name not like 'pgfleet%') as connections`,
      );
      return rows[0]!;
    },
    QUERY_TIMEOUT_MS,
  );
}
