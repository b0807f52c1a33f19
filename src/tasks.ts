import type { IncidentTask } from '../machines/incident.ts';
import type { ResourceTask } from '../machines/resource.ts';
import type { ServerTask } from '../machines/server.ts';
import type { SyncProgress } from './replication/standbys.ts';

/**
 * Every task pgfleet runs, declared once: its name, what its jobs carry, and whose machine
 * hears its outcome. The queue is typed by it (src/queue/jobs.ts: `Job<T>`, `JobSpec<T>`,
 * `enqueue`), as graphile-worker's `GraphileWorker.Tasks` types its `addJob` and task list;
 * a worker's handler table must name every task here (src/queue/worker.ts `TaskHandlers`),
 * so a task a machine emits, or one enqueued by name, cannot be left without a handler.
 *
 * Only types: importing one costs nothing at run time, and the queue imports this file.
 */

/** The payload of a job that carries none: `{}` in the jobs table. */
export type NoPayload = Record<string, never>;

/**
 * A task that runs on an entity: its jobs carry the entity's id and run in its queue, one at
 * a time. `machine` is the machine of the entities it runs on, which hears what it reports
 * (src/runner/runner.ts `report`); a task for more than one kind of entity reports nothing.
 */
type OnEntity<Machine extends string, P = NoPayload> = { entityId: string; payload: P; machine: Machine };

/** A task that runs alone: no entity, so it waits behind no entity's queue. */
type Alone<P> = { entityId: null; payload: P };

/** Entity tasks whose jobs carry a payload; every other carries none. */
type EntityPayloads = {
  /** How far the step got, when it ended before a standby confirmed and asked for itself again. */
  synchronize: { sync?: SyncProgress };
};

type WithPayload<T extends string, Machine extends string> = {
  [K in T]: OnEntity<Machine, K extends keyof EntityPayloads ? EntityPayloads[K] : NoPayload>;
};

/**
 * Every task: the machines' own (their `ServerTask`, `ResourceTask` and `IncidentTask`, which
 * the runner enqueues as they emit them), then those enqueued by name. `observe` is emitted by
 * both the server and the resource machine, and is declared once, for both.
 */
export type Tasks = WithPayload<Exclude<ServerTask, 'observe'>, 'server'> &
  WithPayload<Exclude<ResourceTask, 'observe'>, 'resource'> &
  WithPayload<IncidentTask, 'incident'> & {
    /** Observers look at the entity and record what they saw (src/runner/observe.ts). */
    observe: OnEntity<'server' | 'resource'>;
    /** The entity's machine is shown its latest observation. */
    tick: OnEntity<'server' | 'resource'>;
    /** A server's TLS brought to what it should be (src/servers/certificates.ts). */
    renew_certificate: OnEntity<'server'>;
    /** A base backup of `server` labelled `label` (src/backups/tasks.ts). */
    backup: Alone<{ server: string; label: string }>;
    /** One look at a shared server's tenants against their plans (src/resources/limits.ts). */
    enforce: Alone<{ server: string }>;
    /** Deliver what is undelivered of a resource's notices. */
    notify_resource: Alone<{ resource: string }>;
    /** Archives of servers deleted past the retention go (src/backups/retention.ts). */
    prune_archives: Alone<NoPayload>;
  };

export type TaskName = keyof Tasks;

/** The tasks that run on entities of `Machine` alone, whose outcome its machine hears. */
export type TaskOf<Machine extends string> = { [T in TaskName]: Tasks[T] extends { machine: Machine } ? T : never }[TaskName];
