import { Gauge, Histogram, Registry } from 'prom-client';
import type { Pool } from './db.ts';

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

function registerFleetMetrics(pool: Pool, registry: Registry): void {
  new Gauge({
    name: 'pgfleet_entities',
    help: 'Live entities by machine and top-level state.',
    labelNames: ['machine', 'state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const { rows } = await pool.query<{ machine: string; state: string; n: number }>(
        'select machine, state, count(*)::int as n from machines where finished_at is null group by machine, state',
      );
      for (const r of rows) this.set({ machine: r.machine, state: r.state }, r.n);
    },
  });
  new Gauge({
    name: 'pgfleet_incidents_open',
    help: 'Open incidents by kind and state (escalated ones have paged a human).',
    labelNames: ['kind', 'state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const { rows } = await pool.query<{ kind: string; state: string; n: number }>(
        `select i.kind, m.state, count(*)::int as n from incidents i join machines m on m.entity_id = i.id
         where i.resolved_at is null group by i.kind, m.state`,
      );
      for (const r of rows) this.set({ kind: r.kind, state: r.state }, r.n);
    },
  });
  new Gauge({
    name: 'pgfleet_queue_jobs',
    help: 'Jobs in the queue by queue and status: ready (due), scheduled (due later), running, dead.',
    labelNames: ['queue', 'status'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const { rows } = await pool.query<{ queue: string; status: string; n: number }>(
        `select queue, case when dead_at is not null then 'dead' when locked_by is not null then 'running'
           when run_at <= now() then 'ready' else 'scheduled' end as status, count(*)::int as n
         from jobs group by 1, 2`,
      );
      for (const q of ['default', 'observe']) for (const s of ['ready', 'scheduled', 'running', 'dead']) this.set({ queue: q, status: s }, 0);
      for (const r of rows) this.set({ queue: r.queue, status: r.status }, r.n);
    },
  });
  new Gauge({
    name: 'pgfleet_observation_age_seconds',
    help: 'Age of the stalest latest observation among live entities, by machine.',
    labelNames: ['machine'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const { rows } = await pool.query<{ machine: string; age: number }>(
        `select m.machine, extract(epoch from now() - min(o.at))::float8 as age
         from machines m join (select id, last_observed_at as at from servers union all select id, last_observed_at from resources) o on o.id = m.entity_id
         where m.finished_at is null and o.at is not null group by m.machine`,
      );
      for (const r of rows) this.set({ machine: r.machine }, r.age);
    },
  });
  new Gauge({
    name: 'pgfleet_pages_sent',
    help: 'Pages sent to the pager since the control database began, by action (trigger, resolve).',
    labelNames: ['action'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const { rows } = await pool.query<{ action: string; n: number }>('select action, count(*)::int as n from pages group by action');
      this.set({ action: 'trigger' }, 0);
      this.set({ action: 'resolve' }, 0);
      for (const r of rows) this.set({ action: r.action }, r.n);
    },
  });
}
