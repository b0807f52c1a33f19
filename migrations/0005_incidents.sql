-- Incidents: trouble on an entity while automation works on it, or a change scheduled for
-- later. Each has its own machine; this row is what lists and pages read.
create table incidents (
  id uuid primary key default gen_random_uuid(),
  entity_id uuid not null,
  -- `trouble` opens by itself; `maintenance` and `retirement` are scheduled for later.
  kind text not null check (kind in ('trouble', 'maintenance', 'retirement')),
  reason text not null,
  scheduled_for timestamptz,
  opened_at timestamptz not null default now(),
  resolved_at timestamptz
);
-- Related trouble on one entity joins the open incident instead of opening another.
create unique index incidents_one_open_trouble on incidents (entity_id) where kind = 'trouble' and resolved_at is null;
create index incidents_recent on incidents (opened_at desc);
create index incidents_entity on incidents (entity_id, opened_at desc);

-- Jobs run for an entity with an open incident, with result and duration: the timeline's
-- "what automation did".
create table job_runs (
  id bigint generated always as identity primary key,
  entity_id uuid not null,
  job_id bigint not null,
  task text not null,
  attempt integer not null,
  outcome text not null,
  error text,
  duration_ms integer not null,
  finished_at timestamptz not null default now()
);
create index job_runs_entity on job_runs (entity_id, finished_at);

-- Pages sent to the pager webhook (PagerDuty Events v2 shape), one trigger and one resolve
-- per incident at most.
create table pages (
  id bigint generated always as identity primary key,
  incident_id uuid not null references incidents (id),
  action text not null check (action in ('trigger', 'resolve')),
  payload jsonb not null,
  sent_at timestamptz not null default now(),
  unique (incident_id, action)
);

-- Customer notifications: an outbox, delivered to the resource's webhook with retries and
-- shown on its SSO page.
create table notifications (
  id bigint generated always as identity primary key,
  resource_id uuid not null references resources (id),
  incident_id uuid not null references incidents (id),
  phase text not null,
  subject text not null,
  body text not null,
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  attempts integer not null default 0,
  last_error text,
  unique (incident_id, resource_id, phase)
);
create index notifications_resource on notifications (resource_id, created_at desc);
create index notifications_undelivered on notifications (incident_id) where delivered_at is null;

alter table resources add column notify_url text;
