import { initialTransition, transition, type AnyStateMachine, type EventObject, type StateValue } from 'xstate';
import { INCIDENT_MACHINE_VERSION, incidentMachine } from '../../machines/incident.ts';
import { RESOURCE_MACHINE_VERSION, RESOURCE_URGENT_STATES, resourceMachine } from '../../machines/resource.ts';
import { SERVER_MACHINE_VERSION, SERVER_URGENT_STATES, serverMachine } from '../../machines/server.ts';
import { isoTime, type Client, type Queryable } from '../db.ts';
import { enqueueMany, PRIORITY, type Job, type JobSpec } from '../queue/jobs.ts';

/** A job a machine asks for; the runner enqueues it with the transition. */
export interface JobEmitted {
  type: 'job';
  task: string;
  delaySeconds?: number;
}

/** The tables whose rows carry their entity's latest observation. */
export type ObservedTable = 'servers' | 'resources';

/**
 * Every kind of entity with a machine; the row in `machines` names one of these. Entities
 * that are observed keep their latest observation on a row of `observedIn`. An entity's
 * `dependents` are the entities whose machines watch it: when its state changes they are
 * observed at once, instead of at their next periodic observation. In its `urgent` states
 * (top-level names) an entity is in trouble or failing over: the jobs it asks for on the way
 * in, there, and on the way out are urgent.
 */
export const MACHINES = {
  server: {
    logic: serverMachine,
    version: SERVER_MACHINE_VERSION,
    observedIn: 'servers',
    dependents: resourcesServedBy,
    urgent: SERVER_URGENT_STATES,
  },
  resource: {
    logic: resourceMachine,
    version: RESOURCE_MACHINE_VERSION,
    observedIn: 'resources',
    dependents: undefined,
    urgent: RESOURCE_URGENT_STATES,
  },
  incident: {
    logic: incidentMachine,
    version: INCIDENT_MACHINE_VERSION,
    observedIn: undefined,
    dependents: undefined,
    urgent: [] as readonly string[],
  },
} satisfies Record<
  string,
  {
    logic: AnyStateMachine;
    version: number;
    observedIn: ObservedTable | undefined;
    dependents: ((db: Queryable, id: string) => Promise<string[]>) | undefined;
    urgent: readonly string[];
  }
>;

export type MachineName = keyof typeof MACHINES;

/** The machines whose entities observers look at, on the clock's schedule. */
export const OBSERVED_MACHINES = (Object.keys(MACHINES) as MachineName[]).filter((m) => MACHINES[m].observedIn !== undefined);

async function resourcesServedBy(db: Queryable, serverId: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>('select resource_id as id from resource_servers where server_id = $1', [serverId]);
  return rows.map((r) => r.id);
}

/** An event for any machine; each machine's own types say which it accepts. */
export type MachineEvent = EventObject & Record<string, unknown>;

/** Tasks that go to their own named queue, so a worker can be dedicated to them. */
const TASK_QUEUES: Record<string, string> = { observe: 'observe', enforce: 'observe' };

export function queueForTask(task: string): string {
  return TASK_QUEUES[task] ?? 'default';
}

/** `restarting.verifying` for nested states; the top-level name alone is the entity's state. */
export function statePath(value: StateValue): string {
  if (typeof value === 'string') return value;
  const [key, child] = Object.entries(value)[0] ?? [];
  return key === undefined ? '' : child === undefined ? key : `${key}.${statePath(child)}`;
}

export function topState(value: StateValue): string {
  return statePath(value).split('.')[0] ?? '';
}

/**
 * A job's outcome told to its entity's machine: `event` is sent in the job's commit, after
 * `also` (the job's own writes), so both happen with the job's completion or neither does.
 */
export function report(
  job: Job,
  event: MachineEvent,
  also?: (client: Client) => Promise<void>,
): { commit: (client: Client) => Promise<void> } {
  return {
    commit: async (client) => {
      await also?.(client);
      await sendEvent(client, job.entityId!, event, job.id);
    },
  };
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

interface ExecutableAction {
  type: string;
  params?: unknown;
}

/** The jobs a transition asked for: its `emit({ type: 'job' })` actions. */
export function emittedJobs(actions: ExecutableAction[]): JobEmitted[] {
  return actions
    .filter((a) => a.type === 'xstate.emit')
    .map((a) => (a.params as { event: JobEmitted }).event)
    .filter((e) => e.type === 'job');
}

function jobSpecs(entityId: string, jobs: JobEmitted[], priority: number, unlessRunning = false): JobSpec[] {
  return jobs.map((j) => ({
    task: j.task,
    entityId,
    key: j.task,
    queue: queueForTask(j.task),
    delaySeconds: j.delaySeconds,
    priority,
    unlessRunning,
  }));
}

function eventData(event: MachineEvent): Record<string, unknown> | null {
  const { type: _, ...rest } = event;
  return Object.keys(rest).length > 0 ? rest : null;
}

/**
 * Create an entity's machine with the entity itself: call inside the transaction that
 * inserts the entity's row, so nothing exists without a machine.
 */
export async function createMachine(db: Queryable, name: MachineName, entityId: string, input?: unknown): Promise<string> {
  const { version } = MACHINES[name];
  const logic: AnyStateMachine = MACHINES[name].logic;
  const [snapshot, actions] = initialTransition(logic, input);
  const state = statePath(snapshot.value);
  await db.query(`insert into machines (entity_id, machine, version, state, snapshot) values ($1, $2, $3, $4, $5)`, [
    entityId,
    name,
    version,
    topState(snapshot.value),
    JSON.stringify({ value: snapshot.value, context: snapshot.context }),
  ]);
  await db.query(`insert into transitions (entity_id, machine, from_state, to_state, event) values ($1, $2, null, $3, 'create')`, [
    entityId,
    name,
    state,
  ]);
  await enqueueMany(db, jobSpecs(entityId, emittedJobs(actions as ExecutableAction[]), PRIORITY.work));
  return state;
}

export interface Step {
  from: string;
  to: string;
  jobs: JobEmitted[];
}

/** One event a live machine took, as the runner publishes it once the step is stored. */
export interface StepTaken extends Step {
  machine: MachineName;
  entityId: string;
  /** As the machine got it, stamped with `at`. */
  event: MachineEvent;
  /** The event's time: the database's clock unless its sender said otherwise. */
  at: string;
  /** The job whose outcome the event told, if a job's. */
  jobId: string | undefined;
}

/** What an entity's observers saw, shown to its machine as an `observed` event (src/tasks.ts, the tick). */
export type ObservedEvent = {
  type: 'observed';
  at: string;
  obs: Record<string, string>;
};

/** An observation a live machine was shown, as the runner publishes it. */
export interface ObservationShown {
  machine: MachineName;
  entityId: string;
  at: string;
  obs: Record<string, string>;
}

/**
 * Who hears what the runner did: incidents today, notifications and metrics next. Each is
 * called in the transaction that stores the step, with its client: what it writes commits
 * with the step, and what it throws rolls the step back, so an incident opens with the
 * trouble that opened it or neither happens.
 */
export interface StepSubscriber {
  /** After a step that changed its machine's state. */
  changed?(db: Queryable, step: StepTaken): Promise<void>;
  /** After a machine was shown an observation of its entity, whether it moved or not. */
  observed?(db: Queryable, observation: ObservationShown): Promise<void>;
}

/**
 * This process's subscribers, set once where its processes are wired (src/subscribers.ts).
 * A registry, not a publisher object handed to every caller: events are sent from two dozen
 * places (tasks, the web's handlers, the clock, incidents themselves), and threading an
 * object through all of them would change every one of their signatures for one decision
 * made at start-up. Unset, sendEvent refuses: a process that decides without incidents is
 * one that wrote `publishTo([])`, never one that forgot a line.
 */
let subscribers: readonly StepSubscriber[] | undefined;

/** Who hears this process's steps from now on, replacing whoever did. */
export function publishTo(list: readonly StepSubscriber[]): void {
  subscribers = list;
}

/**
 * Send one event to an entity's machine: load the snapshot (locking the row), compute the
 * transition without running anything, then store the snapshot, the transition record and
 * the emitted jobs, and publish the step to this process's subscribers. Call it inside a
 * transaction: a decision, its consequences and what its subscribers make of it commit
 * together or not at all. An event without its own `at` is stamped with the database's
 * clock, the one every machine compares times by.
 */
export async function sendEvent(db: Queryable, entityId: string, unstamped: MachineEvent, jobId?: string): Promise<Step | undefined> {
  const listeners = subscribers;
  if (!listeners) throw new Error('no one hears what the runner does: wire the subscribers (src/subscribers.ts) before sending events');
  const { rows } = await db.query<{ machine: MachineName; snapshot: { value: StateValue; context: unknown }; now: string }>(
    `select machine, snapshot, ${isoTime('clock_timestamp()')} as now
     from machines where entity_id = $1 and finished_at is null for update`,
    [entityId],
  );
  const row = rows[0];
  if (!row) return undefined;
  const event: MachineEvent = { at: row.now, ...unstamped };
  const { version } = MACHINES[row.machine];
  // Each machine accepts its own snapshots and events; the row says which machine it is.
  const logic: AnyStateMachine = MACHINES[row.machine].logic;
  const current = logic.resolveState(row.snapshot as Parameters<typeof logic.resolveState>[0]);
  const [next, actions] = transition(logic, current, event);
  const from = statePath(current.value);
  const to = statePath(next.value);
  const jobs = emittedJobs(actions as ExecutableAction[]);
  const persisted = JSON.stringify({ value: next.value, context: next.context });
  if (persisted !== JSON.stringify({ value: current.value, context: current.context })) {
    await db.query(
      `update machines set snapshot = $2, state = $3, version = $4, updated_at = now(),
         finished_at = case when $5 then now() end
       where entity_id = $1`,
      [entityId, persisted, topState(next.value), version, next.status === 'done'],
    );
  }
  // A row per change of state, and per event that made the machine act again where it is
  // (a retry after a failed restart); observations that only refresh what it saw are not.
  if (from !== to || (jobs.length > 0 && event.type !== 'observed')) {
    await db.query(
      `insert into transitions (entity_id, machine, from_state, to_state, event, event_data, job_id) values ($1, $2, $3, $4, $5, $6, $7)`,
      [entityId, row.machine, from, to, event.type, eventData(event), jobId ?? null],
    );
  }
  const { urgent } = MACHINES[row.machine];
  const priority = urgent.includes(topState(current.value)) || urgent.includes(topState(next.value)) ? PRIORITY.urgent : PRIORITY.work;
  // What an observation asks for is asked again while the job runs (a tick runs beside its
  // entity's action): the running job stands for it (src/queue/jobs.ts JobSpec.unlessRunning).
  const specs = jobSpecs(entityId, jobs, priority, event.type === 'observed');
  const dependents = MACHINES[row.machine].dependents;
  if (dependents && topState(current.value) !== topState(next.value)) {
    for (const id of await dependents(db, entityId))
      specs.push({ task: 'observe', entityId: id, key: 'observe', queue: queueForTask('observe'), priority });
  }
  await enqueueMany(db, specs);
  const at = String(event.at);
  const step: StepTaken = { machine: row.machine, entityId, from, to, jobs, event, at, jobId };
  // Only a live machine is shown an observation: a finished one's last, from before it went, is news to no one.
  const observation = event.type === 'observed' ? { machine: row.machine, entityId, at, obs: (event as ObservedEvent).obs } : undefined;
  for (const listener of listeners) {
    if (from !== to) await listener.changed?.(db, step);
    if (observation) await listener.observed?.(db, observation);
  }
  return { from, to, jobs };
}
