import { Gauge, Histogram, Registry } from 'prom-client';
import type { Pool } from './db.ts';
import { jobsByQueueAndStatus } from './queue/status.ts';

/**
 * Prometheus metrics. Fleet-wide numbers are read from the control database at scrape
 * time, so every web process answers the same; job durations are measured where jobs run,
 * so a worker's own registry has them (served by `web` when it runs in the same process,
 * else on METRICS_PORT).
 */
export interface Metrics {
  registry: Registry;
  jobDuration: Histogram<'queue' | 'task' | 'outcome'>;
}

/** One registry per running pgfleet; with a pool, the fleet's gauges are read from it. */
export function createMetrics(pool: Pool | undefined): Metrics {
  const registry = new Registry();
  const jobDuration = new Histogram({
    name: 'pgfleet_job_duration_seconds',
    help: 'Time a job took, from claim to commit, by queue, task and outcome.',
    labelNames: ['queue', 'task', 'outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  if (pool) registerFleetMetrics(pool, registry);
  return { registry, jobDuration };
}

/** A series of a gauge: a column per label, and its `value`. */
type GaugeRow = { value: number; [label: string]: string | number };

/**
 * A gauge read from the control database at scrape time: `sql` (or `read`, for a table whose
 * queries live with its owner) returns one row per series, a column per label and `value`.
 * Series in `zeros` are reported as 0 when absent, so a series exists before its first event.
 */
function sqlGauge(
  pool: Pool,
  registry: Registry,
  spec: { name: string; help: string; labelNames: string[]; zeros?: Record<string, string>[] } & (
    { sql: string } | { read: (pool: Pool) => Promise<GaugeRow[]> }
  ),
): void {
  new Gauge({
    name: spec.name,
    help: spec.help,
    labelNames: spec.labelNames,
    registers: [registry],
    async collect() {
      this.reset();
      // Every column but `value` is a label: the SQL names them after the gauge's labels.
      const rows = 'sql' in spec ? (await pool.query<GaugeRow>(spec.sql)).rows : await spec.read(pool);
      for (const zero of spec.zeros ?? []) this.set(zero, 0);
      for (const { value, ...labels } of rows) this.set(labels, value);
    },
  });
}

function registerFleetMetrics(pool: Pool, registry: Registry): void {
  sqlGauge(pool, registry, {
    name: 'pgfleet_entities',
    help: 'Live entities by machine and top-level state.',
    labelNames: ['machine', 'state'],
    sql: 'select machine, state, count(*)::int as value from entity_states where finished_at is null group by machine, state',
  });
  sqlGauge(pool, registry, {
    name: 'pgfleet_incidents_open',
    help: 'Open incidents by kind and state (escalated ones have paged a human).',
    labelNames: ['kind', 'state'],
    sql: `select i.kind, m.state, count(*)::int as value from incidents i join entity_states m on m.entity_id = i.id
          where i.resolved_at is null group by i.kind, m.state`,
  });
  sqlGauge(pool, registry, {
    name: 'pgfleet_queue_jobs',
    help: 'Jobs in the queue by queue and status: ready (due), scheduled (due later), running, dead.',
    labelNames: ['queue', 'status'],
    read: jobsByQueueAndStatus,
    zeros: ['default', 'observe'].flatMap((queue) => ['ready', 'scheduled', 'running', 'dead'].map((status) => ({ queue, status }))),
  });
  sqlGauge(pool, registry, {
    name: 'pgfleet_observation_age_seconds',
    help: 'Age of the stalest latest observation among live entities, by machine.',
    labelNames: ['machine'],
    sql: `select m.machine, extract(epoch from now() - min(o.at))::float8 as value
          from entity_states m
          join (select id, last_observed_at as at from servers union all select id, last_observed_at from resources) o on o.id = m.entity_id
          where m.finished_at is null and o.at is not null group by m.machine`,
  });
  sqlGauge(pool, registry, {
    name: 'pgfleet_pages_sent',
    help: 'Pages sent to the pager since the control database began, by action (trigger, resolve).',
    labelNames: ['action'],
    sql: 'select action, count(*)::int as value from pages group by action',
    zeros: [{ action: 'trigger' }, { action: 'resolve' }],
  });
}
