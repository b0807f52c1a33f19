-- An entity's machine as the rest of pgfleet reads it. `machines` and `transitions` are the
-- runner's tables: every statement on them is in src/runner/store.ts, so their shape can
-- change in one place. Resources, servers, placement, incidents, the router, health checks,
-- metrics, the clock and the web read an entity's state from this view instead. A row
-- locked through it (FOR UPDATE, FOR SHARE) is the machine's row: a caller that must hold
-- off the entity's next step locks it here. A machine changes only by an event sent to it.
create view entity_states as
  select entity_id, machine, state, snapshot->'context' as context, updated_at, finished_at
  from machines;
