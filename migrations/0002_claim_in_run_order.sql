-- Workers that take every queue (the default) claim in (run_at, id) order. jobs_ready led
-- with queue, so such a claim sorted every due job: with 20,000 pending that was a sort
-- per claim and 273 jobs/s at concurrency 10 (bench/results/queue.md, first run). An index
-- in claim order lets the claim stop after its limit; a dedicated worker filters by queue
-- while it walks the same index.
drop index jobs_ready;
create index jobs_ready on jobs (run_at, id) where locked_by is null and dead_at is null;
