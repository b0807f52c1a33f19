-- Each entity's queue has two lanes. An observation (and the tick that shows it to the
-- machine) changes nothing in the world, so it must not wait behind a stuck action of its
-- entity: a `promote` held by a dead worker kept a server from being observed for two
-- minutes (issue 11). One job runs at a time per entity in each lane: observations of one
-- entity still run one by one (`observe` counts the failed probes of the last one), and a
-- machine's actions never race each other. The machine itself is never raced: every event
-- is sent with its row locked. The task decides the lane, here and only here, so that every
-- way a job is inserted agrees (`enforce` has no entity, and runs with observations).
alter table jobs add column lane text not null
  generated always as (case when task in ('observe', 'tick', 'enforce') then 'observe' else 'act' end) stored;

drop index jobs_one_running_per_entity;
create unique index jobs_one_running_per_entity on jobs (entity_id, lane) where locked_by is not null;

-- The head of an entity's queue is the head of its lane: each check is one range of this index.
drop index jobs_entity_pending;
create index jobs_entity_pending on jobs (entity_id, lane, priority, run_at, id) where locked_by is null and dead_at is null;

