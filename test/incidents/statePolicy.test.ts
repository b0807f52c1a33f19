import { afterEach, describe, expect, it } from 'vitest';
import type { AnyStateNode } from 'xstate';
import { STATE_TAGS } from '../../machines/policy.ts';
import { configureIncidents, healthOf, incidentSettings, stuckAfter, troubleReason } from '../../src/incidents/policy.ts';
import { MACHINES, type MachineName } from '../../src/runner/machines.ts';

/** Every path an entity can be stored in: `statePath` of a snapshot always reaches a leaf. */
/** Every state node of a machine, nested ones included. */
function allStates(node: AnyStateNode): AnyStateNode[] {
  return Object.values(node.states).flatMap((child) => [child, ...allStates(child)]);
}

function leafPaths(node: AnyStateNode, prefix = ''): string[] {
  const children = Object.values(node.states);
  if (children.length === 0) return [prefix];
  return children.flatMap((child) => leafPaths(child, prefix ? `${prefix}.${child.key}` : child.key));
}

/**
 * What each state means for paging, as it was when the tables lived in src/incidents/policy.ts:
 * health, seconds before a human is paged, and (for trouble) the text an operator reads.
 * PGFLEET_SYNC_PAGE_AFTER is 45 here, so the states it governs stand apart from the 60 s ones.
 */
const PINNED: Record<MachineName, Record<string, [string, number] | [string, number, string]>> = {
  server: {
    provisioning: ['neutral', 0],
    initializing: ['neutral', 0],
    'starting.running': ['neutral', 0],
    'starting.verifying': ['neutral', 0],
    available: ['healthy', 0],
    unreachable: ['unhealthy', 60, 'server unreachable'],
    'restarting.running': ['unhealthy', 180, 'server restarting'],
    'restarting.verifying': ['unhealthy', 180, 'server restarting'],
    'maintaining.running': ['neutral', 600],
    'maintaining.verifying': ['neutral', 600],
    'failed.waiting': ['unhealthy', 60, 'restart failing'],
    'failed.verifying': ['unhealthy', 60, 'restart failing'],
    fencing: ['gone', 0],
    fenced: ['gone', 0],
    rejoining: ['neutral', 0],
    deleting: ['gone', 0],
    deleted: ['gone', 0],
  },
  resource: {
    'creating.placing.trying': ['neutral', 0],
    'creating.placing.failed': ['unhealthy', 300, 'creating.placing failing'],
    'creating.waiting': ['neutral', 0],
    'creating.tenant.trying': ['neutral', 0],
    'creating.tenant.failed': ['unhealthy', 300, 'creating.tenant failing'],
    'creating.standby.trying': ['neutral', 0],
    'creating.standby.failed': ['unhealthy', 300, 'creating.standby failing'],
    'creating.syncing': ['neutral', 0],
    'creating.synchronous.trying': ['neutral', 0],
    'creating.synchronous.failed': ['unhealthy', 300, 'creating.synchronous failing'],
    available: ['healthy', 0],
    'unsynchronized.desynchronizing.trying': ['unhealthy', 45, 'running without a synchronous copy'],
    'unsynchronized.desynchronizing.failed': ['unhealthy', 300, 'running without a synchronous copy'],
    'unsynchronized.waiting': ['unhealthy', 45, 'running without a synchronous copy'],
    'unsynchronized.resynchronizing': ['unhealthy', 45, 'running without a synchronous copy'],
    stalled: ['unhealthy', 10, 'synchronous standby stalled: commits wait'],
    'replacing.releasing.trying': ['unhealthy', 600, 'standby lost: replacing it'],
    'replacing.releasing.failed': ['unhealthy', 300, 'standby lost: replacing it'],
    'replacing.standby.trying': ['unhealthy', 600, 'standby lost: replacing it'],
    'replacing.standby.failed': ['unhealthy', 300, 'standby lost: replacing it'],
    'replacing.syncing': ['unhealthy', 600, 'standby lost: replacing it'],
    'replacing.synchronous.trying': ['unhealthy', 600, 'standby lost: replacing it'],
    'replacing.synchronous.failed': ['unhealthy', 300, 'standby lost: replacing it'],
    'failover.fencing.trying': ['unhealthy', 60, 'primary lost: failing over to the standby'],
    'failover.fencing.failed': ['unhealthy', 300, 'primary lost: failing over to the standby'],
    'failover.waiting': ['unhealthy', 60, 'primary lost: failing over to the standby'],
    'failover.promoting.trying': ['unhealthy', 60, 'primary lost: failing over to the standby'],
    'failover.promoting.failed': ['unhealthy', 300, 'primary lost: failing over to the standby'],
    'rejoining.placing.trying': ['unhealthy', 600, 'restoring the standby after a failover'],
    'rejoining.placing.failed': ['unhealthy', 300, 'restoring the standby after a failover'],
    'rejoining.syncing': ['unhealthy', 600, 'restoring the standby after a failover'],
    'rejoining.synchronous.trying': ['unhealthy', 600, 'restoring the standby after a failover'],
    'rejoining.synchronous.failed': ['unhealthy', 300, 'restoring the standby after a failover'],
    'adding.standby.trying': ['neutral', 0],
    'adding.standby.failed': ['unhealthy', 300, 'adding.standby failing'],
    'adding.syncing': ['neutral', 0],
    'adding.synchronous.trying': ['neutral', 0],
    'adding.synchronous.failed': ['unhealthy', 300, 'adding.synchronous failing'],
    'dropping.trying': ['neutral', 0],
    'dropping.failed': ['unhealthy', 300, 'dropping failing'],
    'rotating.trying': ['neutral', 0],
    'rotating.failed': ['unhealthy', 300, 'rotating failing'],
    'syncing.trying': ['neutral', 0],
    'syncing.failed': ['unhealthy', 300, 'syncing failing'],
    'resizing.trying': ['neutral', 0],
    'resizing.failed': ['unhealthy', 300, 'resizing failing'],
    'changing.placing.trying': ['neutral', 0],
    'changing.placing.failed': ['unhealthy', 300, 'changing.placing failing'],
    'changing.waiting': ['neutral', 0],
    'changing.copying.trying': ['neutral', 0],
    'changing.copying.failed': ['unhealthy', 300, 'changing.copying failing'],
    'changing.activating.trying': ['neutral', 0],
    'changing.activating.failed': ['unhealthy', 300, 'changing.activating failing'],
    'changing.cleaning.trying': ['neutral', 0],
    'changing.cleaning.failed': ['unhealthy', 300, 'changing.cleaning failing'],
    'deprovisioning.trying': ['gone', 0],
    'deprovisioning.failed': ['unhealthy', 300, 'deprovisioning failing'],
    deleted: ['gone', 0],
  },
  incident: {
    opening: ['neutral', 0],
    open: ['neutral', 0],
    escalated: ['neutral', 0],
    scheduled: ['neutral', 0],
    changing: ['neutral', 0],
    resolved: ['neutral', 0],
  },
};

/**
 * The same for a compound state named alone, as `entity_states` keeps an entity's state (its
 * top-level name) and an escalation reads it; compared with the old tables when they moved.
 */
const PINNED_TOP: [MachineName, string, [string, number] | [string, number, string]][] = [
  ['server', 'starting', ['neutral', 0]],
  ['server', 'restarting', ['unhealthy', 180, 'server restarting']],
  ['server', 'maintaining', ['neutral', 600]],
  ['server', 'failed', ['unhealthy', 60, 'restart failing']],
  ['resource', 'creating', ['neutral', 0]],
  ['resource', 'unsynchronized', ['unhealthy', 45, 'running without a synchronous copy']],
  ['resource', 'replacing', ['unhealthy', 600, 'standby lost: replacing it']],
  ['resource', 'failover', ['unhealthy', 60, 'primary lost: failing over to the standby']],
  ['resource', 'rejoining', ['unhealthy', 600, 'restoring the standby after a failover']],
  ['resource', 'adding', ['neutral', 0]],
  ['resource', 'dropping', ['neutral', 0]],
  ['resource', 'rotating', ['neutral', 0]],
  ['resource', 'syncing', ['neutral', 0]],
  ['resource', 'resizing', ['neutral', 0]],
  ['resource', 'changing', ['neutral', 0]],
  ['resource', 'deprovisioning', ['gone', 0]],
];

function policyOf(machine: MachineName, path: string) {
  const health = healthOf(machine, path);
  const limit = stuckAfter(machine, path, incidentSettings().stuckAfter);
  return health === 'unhealthy' ? [health, limit, troubleReason(machine, path)] : [health, limit];
}

const configured = incidentSettings();
afterEach(() => configureIncidents(configured));

describe("each machine state's paging policy", () => {
  it.each(Object.keys(MACHINES) as MachineName[])('is the pinned one for every %s state', (machine) => {
    configureIncidents({ ...configured, stuckAfter: undefined, syncPageAfter: 45 });
    const table = Object.fromEntries(leafPaths(MACHINES[machine].logic.root).map((path) => [path, policyOf(machine, path)]));
    expect(table).toEqual(PINNED[machine]);
  });

  it('is the pinned one for a compound state named alone', () => {
    configureIncidents({ ...configured, stuckAfter: undefined, syncPageAfter: 45 });
    expect(PINNED_TOP.map(([machine, path]) => [machine, path, policyOf(machine, path)])).toEqual(PINNED_TOP);
  });

  it('declares only known tags and paging meta on states, so a misspelt one cannot pass as neutral', () => {
    for (const { logic } of Object.values(MACHINES)) {
      for (const state of allStates(logic.root)) {
        expect(STATE_TAGS).toEqual(expect.arrayContaining(state.tags));
        expect(['pageAfter', 'trouble']).toEqual(expect.arrayContaining(Object.keys(state.meta ?? {})));
      }
    }
  });

  it('marks urgent the states whose jobs outrank routine work, as the lists beside the machines did', () => {
    const urgent = (machine: MachineName) =>
      Object.values(MACHINES[machine].logic.root.states)
        .filter((state) => state.tags.includes('urgent'))
        .map((state) => state.key);
    expect(urgent('server')).toEqual(['unreachable', 'restarting', 'failed', 'fencing', 'rejoining']);
    expect(urgent('resource')).toEqual(['unsynchronized', 'stalled', 'replacing', 'failover', 'rejoining']);
    expect(urgent('incident')).toEqual([]);
  });

  it('gives every state the PGFLEET_STUCK_AFTER override, the synchronous-copy one included', () => {
    for (const machine of Object.keys(MACHINES) as MachineName[]) {
      for (const path of leafPaths(MACHINES[machine].logic.root)) expect(stuckAfter(machine, path, 7)).toBe(7);
    }
  });

  it('counts a state the machine does not have (an entity without one) as neutral, with no deadline', () => {
    expect([healthOf('server', ''), stuckAfter('server', '', undefined)]).toEqual(['neutral', 0]);
    expect([healthOf('resource', 'vanished.step'), stuckAfter('resource', 'vanished.step', undefined)]).toEqual(['neutral', 0]);
  });
});
