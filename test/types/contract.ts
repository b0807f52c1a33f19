/**
 * Type-level tests of the contract between machines, jobs and tasks (issue 12). Nothing here
 * runs: `tsc --noEmit` checks this file, and each `@ts-expect-error` fails that check as soon
 * as the line under it compiles, so a loosened type shows up here as an error.
 */
import type { IncidentTask } from '../../machines/incident.ts';
import { parseServerObservation } from '../../machines/observations.ts';
import type { ResourceTask } from '../../machines/resource.ts';
import type { ServerEvent, ServerTask } from '../../machines/server.ts';
import type { Queryable } from '../../src/db.ts';
import { enqueue, enqueueAgain, type Job } from '../../src/queue/jobs.ts';
import type { JobHandler, TaskHandlers } from '../../src/queue/worker.ts';
import { report, sendEvent, type EmittedTask } from '../../src/runner/runner.ts';
import type { TaskName } from '../../src/tasks.ts';

type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;

/** What the registry's machines emit is read from their types, not restated. */
export const emittedAreTheMachinesTasks: Equal<EmittedTask, ServerTask | ResourceTask | IncidentTask> = true;
export const everyEmittedTaskIsATask: EmittedTask extends TaskName ? true : false = true;

declare const everyHandler: TaskHandlers;
const { synchronize: _synchronize, ...withoutSynchronize } = everyHandler;
// @ts-expect-error a table without `synchronize`, which the resource machine emits, is no worker's table
export const missingAnEmittedTask: TaskHandlers = withoutSynchronize;
const { notify_resource: _notify, ...withoutNotify } = everyHandler;
// @ts-expect-error nor is one without `notify_resource`, which is enqueued by name (src/notifications.ts)
export const missingATaskEnqueuedByName: TaskHandlers = withoutNotify;

/** A handler is given its own task's jobs: the payload it carries, and the entity it runs on. */
export const backup: JobHandler<'backup'> = async (job) => {
  const label: string = job.payload.label;
  // @ts-expect-error a backup runs on no entity
  const entity: string = job.entityId;
  void [label, entity];
};
export const synchronize: JobHandler<'synchronize'> = async (job) => {
  const entity: string = job.entityId;
  const deadline: string | undefined = job.payload.sync?.deadline;
  // @ts-expect-error synchronize carries no label
  void [entity, deadline, job.payload.label];
};

export async function enqueueing(db: Queryable, job: Job<'synchronize'>): Promise<void> {
  // @ts-expect-error a misspelt task is no task
  await enqueue(db, { task: 'synchronise', entityId: job.entityId });
  // @ts-expect-error a task that runs on an entity names it
  await enqueue(db, { task: 'synchronize' });
  // @ts-expect-error a backup's payload says what to back up
  await enqueue(db, { task: 'backup' });
  await enqueue(db, { task: 'backup', payload: { server: job.entityId, label: 'l' } });
  // @ts-expect-error a job asked again carries its own task's payload
  await enqueueAgain(db, job, 1, { server: 's' });
}

/** An event is typed by the machine it goes to: a job's by its task's machine, a sent one by the machine named. */
export function events(db: Queryable, place: Job<'place'>, deadline: Job<'deadline'>, observe: Job<'observe'>): void {
  report(place, { type: 'placed' });
  report(place, { type: 'step.failed', error: 'e' });
  // @ts-expect-error a misspelt event is no event
  report(place, { type: 'plaaced' });
  // @ts-expect-error a failed step says why
  report(place, { type: 'step.failed' });
  // @ts-expect-error `placed` is the resource machine's: the incident machine takes no such event
  report(deadline, { type: 'placed' });
  // @ts-expect-error an observation is of a server or a resource: no one machine hears its job
  report(observe, { type: 'placed' });
  void sendEvent<'server'>(db, place.entityId, { type: 'fence' });
  // @ts-expect-error a server takes no `switchover`
  void sendEvent<'server'>(db, place.entityId, { type: 'switchover' });
  // @ts-expect-error whatever the machine, a misspelt event is no event
  void sendEvent(db, place.entityId, { type: 'fense' });
}

/** A machine is shown its observation typed, parsed once by the tick: never the hstore's strings. */
export const typedObservation: ServerEvent = { type: 'observed', at: '', obs: parseServerObservation({ reachable: 'true' }) };
// @ts-expect-error the strings the observers recorded are the parser's to read, not the machine's
export const rawObservation: ServerEvent = { type: 'observed', at: '', obs: { reachable: 'true' } };
