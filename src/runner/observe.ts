import { enqueue, PRIORITY, type Job } from '../queue/jobs.ts';
import type { JobContext, TaskHandlers } from '../queue/worker.ts';
import { MACHINES } from './machines.ts';
import { latestObservation, recordObservation } from './observations.ts';
import { queueForTask, sendEvent, type MachineEvent } from './runner.ts';
import { machineOf } from './store.ts';

/** What an entity's observers saw, by source: `{ postgres: { reachable: 'true', … }, tls: { … } }`. */
export type Sources = Record<string, Record<string, string>>;

/** One look at an entity, and how soon what it saw must be acted on. */
export interface Observation {
  sources: Sources;
  /** It found the entity down: its machine sees it before routine work. */
  urgent: boolean;
  /** It concerns the entities that watch this one (their machine's `dependents`): they are observed now, urgently. */
  dependentsNow: boolean;
}

/** What `observe` runs for one kind of entity: its observers, on the job's entity. */
export type Observer = (job: Job<'observe'>, ctx: JobContext) => Promise<Observation>;

/**
 * `observe` and `tick` exist for every kind of entity that is observed: observers only
 * record what they see, and the tick that follows shows it to the entity's machine.
 */
export function observationTasks(observers: Record<'server' | 'resource', Observer>): Pick<TaskHandlers, 'observe' | 'tick'> {
  return {
    async observe(job, ctx) {
      const machine = await machineOf(ctx.pool, job.entityId);
      if (machine !== 'server' && machine !== 'resource') throw new Error(`entity ${job.entityId} is not one that is observed`);
      const { sources, urgent, dependentsNow } = await observers[machine](job, ctx);
      // The tick shows the machine what was seen: as urgent as the observation, and urgent
      // when a routine one found the entity down (the first failed probe of a hang).
      const priority = urgent ? PRIORITY.urgent : Math.max(job.priority, PRIORITY.work);
      const { observedIn, dependents } = MACHINES[machine];
      return {
        commit: async (client) => {
          await recordObservation(client, job.entityId, sources, observedIn);
          await enqueue(client, { task: 'tick', entityId: job.entityId, key: 'tick', queue: queueForTask('tick'), priority });
          const watching = dependentsNow && dependents ? await dependents(client, job.entityId) : [];
          for (const id of watching)
            await enqueue(client, {
              task: 'observe',
              entityId: id,
              key: 'observe',
              queue: queueForTask('observe'),
              priority: PRIORITY.urgent,
            });
        },
      };
    },
    async tick(job) {
      return {
        commit: async (client) => {
          const machine = await machineOf(client, job.entityId);
          const { observedIn, parseObservation } = machine ? MACHINES[machine] : {};
          const latest = observedIn && (await latestObservation(client, job.entityId, observedIn));
          if (!latest || !parseObservation) return;
          // Parsed once, here, by the machine's own parser: its guards read typed fields.
          const event = { type: 'observed', at: latest.at, obs: parseObservation(latest.obs) } as MachineEvent;
          await sendEvent(client, job.entityId, event, job.id);
        },
      };
    },
  };
}
