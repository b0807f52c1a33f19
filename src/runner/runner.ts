import { initialTransition, transition, type AnyStateMachine, type EmittedFrom, type EventFromLogic, type StateValue } from 'xstate';
import type { JobEmitted } from '../../machines/jobs.ts';
import type { Client, Queryable } from '../db.ts';
import { enqueueMany, PRIORITY, type EntityJobSpec, type Job } from '../queue/jobs.ts';
import type { TaskName, Tasks, TaskOf } from '../tasks.ts';
import { MACHINES, type MachineName } from './machines.ts';
import { insertMachine, insertTransition, lockLiveMachine, storeSnapshot } from './store.ts';

/** The events machine `M` of the registry takes: its logic's own event type. */
export type EventOf<M extends MachineName> = EventFromLogic<(typeof MACHINES)[M]['logic']>;

/** An event for one of the machines; which it is, is the machine's row's to say. */
export type MachineEvent = EventOf<MachineName>;

/** An event as its sender writes it: without `at`, sendEvent stamps it with the database's clock. */
export type Unstamped<E> = E extends { at: string } ? Omit<E, 'at'> & { at?: string } : E;

/** The tasks whose outcome one machine hears: a task of more than one kind of entity (observe, tick) reports nothing. */
type ReportingTask = { [M in MachineName]: TaskOf<M> }[MachineName];

/** The machine a task's job reports to (src/tasks.ts). */
type MachineOfTask<T extends ReportingTask> = Tasks[T] extends { machine: infer M extends MachineName } ? M : never;

/** Tasks that go to their own named queue, so a worker can be dedicated to them. */
const TASK_QUEUES: Partial<Record<TaskName, string>> = { observe: 'observe', enforce: 'observe' };

export function queueForTask(task: TaskName): string {
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
export function report<T extends ReportingTask>(
  job: Job<T>,
  event: NoInfer<Unstamped<EventOf<MachineOfTask<T>>>>,
  also?: (client: Client) => Promise<void>,
): { commit: (client: Client) => Promise<void> } {
  return {
    commit: async (client) => {
      await also?.(client);
      await sendEvent<MachineName>(client, job.entityId, event, job.id);
    },
  };
}

interface ExecutableAction {
  type: string;
  params?: unknown;
}

/**
 * The tasks the registry's machines emit as jobs (their `emitted` types): each must be an
 * entity task of src/tasks.ts, or the specs below do not compile.
 */
export type EmittedTask = EmittedFrom<(typeof MACHINES)[MachineName]['logic']>['task'];

/** The jobs a transition asked for: its `emit({ type: 'job' })` actions. */
export function emittedJobs(actions: ExecutableAction[]): JobEmitted<EmittedTask>[] {
  return actions
    .filter((a) => a.type === 'xstate.emit')
    .map((a) => (a.params as { event: JobEmitted<EmittedTask> }).event)
    .filter((e) => e.type === 'job');
}

function jobSpecs(entityId: string, jobs: JobEmitted<EmittedTask>[], priority: number, unlessRunning = false): EntityJobSpec[] {
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

/**
 * What a transition keeps of its event. An observation is kept as its observers recorded it
 * (`obs.raw`, the map of strings): the form transitions have always stored, which incident
 * timelines read (src/incidents/views.ts).
 */
function eventData(event: MachineEvent): Record<string, unknown> | null {
  const { type: _, ...rest } = event;
  const data = event.type === 'observed' ? { ...rest, obs: event.obs.raw } : rest;
  return Object.keys(data).length > 0 ? data : null;
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
  await insertMachine(
    db,
    entityId,
    name,
    version,
    topState(snapshot.value),
    JSON.stringify({ value: snapshot.value, context: snapshot.context }),
  );
  await insertTransition(db, { entityId, machine: name, from: null, to: state, event: 'create' });
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
 * This process's subscribers, set once where its processes are wired (src/processes/subscribers.ts).
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
export async function sendEvent<M extends MachineName = MachineName>(
  db: Queryable,
  entityId: string,
  unstamped: NoInfer<Unstamped<EventOf<M>>>,
  jobId?: string,
): Promise<Step | undefined> {
  const listeners = subscribers;
  if (!listeners)
    throw new Error('no one hears what the runner does: wire the subscribers (src/processes/subscribers.ts) before sending events');
  const row = await lockLiveMachine(db, entityId);
  if (!row) return undefined;
  // The row says which machine takes it; its sender said which it meant (sendEvent<M>), or any.
  const event = { at: row.now, ...unstamped } as MachineEvent;
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
    await storeSnapshot(db, entityId, persisted, topState(next.value), version, next.status === 'done');
  }
  // A row per change of state, and per event that made the machine act again where it is
  // (a retry after a failed restart); observations that only refresh what it saw are not.
  if (from !== to || (jobs.length > 0 && event.type !== 'observed')) {
    await insertTransition(db, { entityId, machine: row.machine, from, to, event: event.type, data: eventData(event), jobId });
  }
  const priority = current.hasTag('urgent') || next.hasTag('urgent') ? PRIORITY.urgent : PRIORITY.work;
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
  const observation = event.type === 'observed' ? { machine: row.machine, entityId, at, obs: event.obs.raw } : undefined;
  for (const listener of listeners) {
    if (from !== to) await listener.changed?.(db, step);
    if (observation) await listener.observed?.(db, observation);
  }
  return { from, to, jobs };
}
