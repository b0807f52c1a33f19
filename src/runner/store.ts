import type { StateValue } from 'xstate';
import { isoTime, type Queryable } from '../db.ts';
import type { MachineName } from './machines.ts';

/**
 * Every statement on the runner's own tables: `machines`, one snapshot per entity, and
 * `transitions`, every step an entity's machine took. The runner alone writes them; the
 * rest of pgfleet reads an entity's state from the view `entity_states`
 * (migrations/0014_entity_states.sql) and its steps from here.
 */

export interface TransitionView {
  from: string | null;
  to: string;
  event: string;
  at: Date;
}

/** A new entity's machine in its first state, in the caller's transaction. */
export async function insertMachine(
  db: Queryable,
  entityId: string,
  machine: MachineName,
  version: number,
  state: string,
  snapshot: string,
): Promise<void> {
  await db.query(`insert into machines (entity_id, machine, version, state, snapshot) values ($1, $2, $3, $4, $5)`, [
    entityId,
    machine,
    version,
    state,
    snapshot,
  ]);
}

/**
 * The live machine of an entity with its row locked until the caller's transaction ends, so
 * that no other event is taken meanwhile; `now` is the database's clock. Undefined when the
 * entity has no machine, or its machine has finished.
 */
export async function lockLiveMachine(
  db: Queryable,
  entityId: string,
): Promise<{ machine: MachineName; snapshot: { value: StateValue; context: unknown }; now: string } | undefined> {
  const { rows } = await db.query<{ machine: MachineName; snapshot: { value: StateValue; context: unknown }; now: string }>(
    `select machine, snapshot, ${isoTime('clock_timestamp()')} as now
     from machines where entity_id = $1 and finished_at is null for update`,
    [entityId],
  );
  return rows[0];
}

/** A machine's new snapshot, its top-level state, and its end when it reached a final state. */
export async function storeSnapshot(
  db: Queryable,
  entityId: string,
  snapshot: string,
  state: string,
  version: number,
  finished: boolean,
): Promise<void> {
  await db.query(
    `update machines set snapshot = $2, state = $3, version = $4, updated_at = now(),
       finished_at = case when $5 then now() end
     where entity_id = $1`,
    [entityId, snapshot, state, version, finished],
  );
}

/** A step on the transition log: `from` is null for the machine's creation. */
export async function insertTransition(
  db: Queryable,
  step: {
    entityId: string;
    machine: MachineName;
    from: string | null;
    to: string;
    event: string;
    data?: Record<string, unknown> | null;
    jobId?: string | null;
  },
): Promise<void> {
  await db.query(
    `insert into transitions (entity_id, machine, from_state, to_state, event, event_data, job_id) values ($1, $2, $3, $4, $5, $6, $7)`,
    [step.entityId, step.machine, step.from, step.to, step.event, step.data ?? null, step.jobId ?? null],
  );
}

/** Which machine an entity has; undefined when it has none. */
export async function machineOf(db: Queryable, id: string): Promise<MachineName | undefined> {
  const { rows } = await db.query<{ machine: MachineName }>('select machine from machines where entity_id = $1', [id]);
  return rows[0]?.machine;
}

/** The top-level state an entity's machine is in now (`machines.state`). */
export async function machineState(db: Queryable, id: string): Promise<string | undefined> {
  const { rows } = await db.query<{ state: string }>('select state from machines where entity_id = $1', [id]);
  return rows[0]?.state;
}

export async function listTransitions(db: Queryable, entityId: string, limit = 100): Promise<TransitionView[]> {
  const { rows } = await db.query<TransitionView>(
    `select from_state as "from", to_state as "to", event, at from transitions
     where entity_id = $1 order by id desc limit $2`,
    [entityId, limit],
  );
  return rows;
}

/** A step as the transition log has it, with the event's data and the job whose outcome it told. */
export interface LoggedTransition {
  at: Date;
  machine: string;
  from: string | null;
  to: string;
  event: string;
  data: Record<string, unknown> | null;
  job: string | null;
}

/**
 * Every step of `entityId`, and the steps of `alongside.entityId` taken between `from` and
 * `until` (now, while null), in the order they were taken: an incident's own steps and its
 * entity's while it was open. Times are passed as text, to the microsecond: a step taken in
 * the transaction that opened the incident carries the very same time.
 */
export async function transitionLog(
  db: Queryable,
  entityId: string,
  alongside: { entityId: string; from: string | null; until: string | null },
): Promise<LoggedTransition[]> {
  const { rows } = await db.query<LoggedTransition>(
    `select at, machine, from_state as "from", to_state as "to", event, event_data as data, job_id::text as job from transitions
     where (entity_id = $1 or (entity_id = $2 and at between $3::timestamptz and coalesce($4::timestamptz, now()))) order by id`,
    [entityId, alongside.entityId, alongside.from, alongside.until],
  );
  return rows;
}
