-- The control database: servers, their machines, observations, the queue and the
-- transition log. Entities keep an attrs hstore for fields still being explored.
create extension if not exists hstore;

create table servers (
  id uuid primary key default gen_random_uuid(),
  provider text not null,
  host text,
  port integer,
  superuser_password text not null,
  attrs hstore not null default '',
  -- The latest observation, merged from every observer, for machines and pages to read fast.
  last_observation hstore not null default '',
  last_observed_at timestamptz,
  created_at timestamptz not null default now()
);

-- One XState snapshot per entity, with the version of the machine that wrote it.
create table machines (
  entity_id uuid primary key,
  machine text not null,
  version integer not null,
  state text not null,
  snapshot jsonb not null,
  updated_at timestamptz not null default now(),
  -- Set when the machine reaches a final state; the clock leaves finished entities alone.
  finished_at timestamptz
);
create index machines_live on machines (machine) where finished_at is null;

-- Every transition is a row: incident timelines are drawn from here.
create table transitions (
  id bigint generated always as identity primary key,
  entity_id uuid not null,
  machine text not null,
  from_state text,
  to_state text not null,
  event text not null,
  event_data jsonb,
  job_id bigint,
  at timestamptz not null default now()
);
create index transitions_entity on transitions (entity_id, id desc);

-- Observations are kept for a few days only, in daily partitions that are dropped whole
-- (dropping a partition is cheaper than DELETE and leaves no bloat).
create table observations (
  entity_id uuid not null,
  observed_at timestamptz not null default now(),
  source text not null,
  attrs hstore not null
) partition by range (observed_at);
create index observations_entity on observations (entity_id, observed_at desc);

create function pgfleet_observation_partitions(keep_days integer) returns void
language plpgsql as $$
declare
  d date;
  part text;
  oldest text := 'observations_' || to_char((now() at time zone 'UTC')::date - keep_days, 'YYYYMMDD');
begin
  perform pg_advisory_xact_lock(hashtext('pgfleet_observation_partitions'));
  for d in select generate_series((now() at time zone 'UTC')::date - keep_days, (now() at time zone 'UTC')::date + 2, '1 day')::date loop
    part := 'observations_' || to_char(d, 'YYYYMMDD');
    if to_regclass(part) is null then
      execute format('create table %I partition of observations for values from (%L) to (%L)',
        part, d::timestamp at time zone 'UTC', (d + 1)::timestamp at time zone 'UTC');
    end if;
  end loop;
  for part in
    select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'observations'::regclass and c.relname < oldest
  loop
    execute format('drop table %I', part);
  end loop;
end $$;
select pgfleet_observation_partitions(2);

-- The queue. See src/queue/jobs.ts for the queries and why they are shaped as they are.
create table jobs (
  id bigint generated always as identity primary key,
  queue text not null default 'default',
  -- The entity whose queue this job is in; at most one job per entity runs at a time.
  entity_id uuid,
  task text not null,
  payload jsonb not null default '{}',
  -- Jobs with a key are unique per entity while pending: enqueueing one twice is a no-op.
  key text,
  run_at timestamptz not null default now(),
  attempts integer not null default 0,
  max_attempts integer not null default 10,
  locked_by text,
  locked_until timestamptz,
  last_error text,
  dead_at timestamptz,
  created_at timestamptz not null default now()
) with (
  -- A queue table churns: vacuum it after a thousand dead rows, not after 20% of the table.
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_cost_delay = 0,
  fillfactor = 80
);
-- The invariant that keeps a machine from racing itself lives in the schema.
create unique index jobs_one_running_per_entity on jobs (entity_id) where locked_by is not null;
create unique index jobs_pending_key on jobs (entity_id, key) where locked_by is null and dead_at is null;
create index jobs_ready on jobs (queue, run_at, id) where locked_by is null and dead_at is null;
create index jobs_entity_pending on jobs (entity_id, run_at, id) where locked_by is null and dead_at is null;
create index jobs_leases on jobs (locked_until) where locked_by is not null;
create index jobs_dead on jobs (dead_at) where dead_at is not null;

create function pgfleet_jobs_notify() returns trigger language plpgsql as $$
begin
  perform pg_notify('pgfleet_jobs', '');
  return null;
end $$;
create trigger jobs_notify after insert on jobs for each statement execute function pgfleet_jobs_notify();

-- Periodic work happens once per period however many clocks run: a compare-and-set here.
create table clock_runs (
  name text primary key,
  last_run_at timestamptz not null
);
