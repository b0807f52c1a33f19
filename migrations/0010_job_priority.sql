-- Failover work must not queue behind the routine observation of other servers. Every job
-- gets a priority (src/queue/jobs.ts PRIORITY): 0 for the clock's periodic work, 1 for
-- what a machine asks for, 2 for an entity in trouble or mid-failover. Existing rows take
-- 0, and so do the clock's bulk inserts, which name no priority.
alter table jobs add column priority smallint not null default 0;

-- Claims go by priority, then run order, and stop at their limit: the index walks in that
-- order. A claim for urgent jobs only (a worker whose other slots are full) is a range scan
-- of the first column.
drop index jobs_ready;
create index jobs_ready on jobs (priority desc, run_at, id) where locked_by is null and dead_at is null;

-- A job is claimable at the head of its entity's queue: no due job of the entity ranks
-- higher, and none of its rank is earlier. Each is one range of this index; the head
-- check as a single row comparison of (-priority, run_at, id) could not use it and read
-- every pending job of the entity, 20 of them per claimed job in bench:queue (6,707 →
-- 4,169 jobs/s drained).
drop index jobs_entity_pending;
create index jobs_entity_pending on jobs (entity_id, priority, run_at, id) where locked_by is null and dead_at is null;
