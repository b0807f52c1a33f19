import type { AnyStateMachine } from 'xstate';
import { INCIDENT_MACHINE_VERSION, incidentMachine } from '../../machines/incident.ts';
import {
  parseResourceObservation,
  parseServerObservation,
  type ParsedObservation,
  type RawObservation,
} from '../../machines/observations.ts';
import { RESOURCE_MACHINE_VERSION, resourceMachine } from '../../machines/resource.ts';
import { SERVER_MACHINE_VERSION, serverMachine } from '../../machines/server.ts';
import type { Queryable } from '../db.ts';
import { resourcesServedBy } from '../resources/servedBy.ts';
import type { ObservedTable } from './observations.ts';

/**
 * Every kind of entity with a machine; the row in `machines` names one of these. Entities
 * that are observed keep their latest observation on a row of `observedIn`, and the tick
 * shows it to their machine as `parseObservation` reads it (machines/observations.ts). An entity's
 * `dependents` are the entities whose machines watch it: when its state changes they are
 * observed at once, instead of at their next periodic observation. Which of its states are
 * urgent, the machine says with a tag on them (machines/policy.ts).
 */
export const MACHINES = {
  server: {
    logic: serverMachine,
    version: SERVER_MACHINE_VERSION,
    observedIn: 'servers',
    parseObservation: parseServerObservation,
    dependents: resourcesServedBy,
  },
  resource: {
    logic: resourceMachine,
    version: RESOURCE_MACHINE_VERSION,
    observedIn: 'resources',
    parseObservation: parseResourceObservation,
    dependents: undefined,
  },
  incident: {
    logic: incidentMachine,
    version: INCIDENT_MACHINE_VERSION,
    observedIn: undefined,
    parseObservation: undefined,
    dependents: undefined,
  },
} satisfies Record<
  string,
  {
    logic: AnyStateMachine;
    version: number;
    observedIn: ObservedTable | undefined;
    parseObservation: ((raw: RawObservation) => ParsedObservation) | undefined;
    dependents: ((db: Queryable, id: string) => Promise<string[]>) | undefined;
  }
>;

export type MachineName = keyof typeof MACHINES;

/** The machines whose entities observers look at, on the clock's schedule. */
export const OBSERVED_MACHINES = (Object.keys(MACHINES) as MachineName[]).filter((m) => MACHINES[m].observedIn !== undefined);
