import type { AnyStateMachine, AnyStateNode } from 'xstate';

/**
 * What a state means for paging is declared on the state itself, in its machine file, the
 * way Ubicloud registers a deadline at the step that owns it: health as a tag, the deadline
 * and the operator's text as `meta`. A reader finds an entity's whole life, including when
 * it pages, in its one file; src/incidents/policy.ts reads these and the machines read none.
 */

/**
 * Where the entity should be (`healthy`), in trouble (`unhealthy`: an incident opens), or on
 * its way out (`gone`). A state with none of them is on its way somewhere: neutral. When a
 * state and a substate disagree, trouble outranks going away (a step failing for good while
 * a database is deprovisioned is trouble).
 */
export type HealthTag = 'healthy' | 'unhealthy' | 'gone';

/**
 * Every tag a state may carry: its health, and `urgent` where the entity is in trouble, or
 * fails over, or is taken over: what its machine asks for on the way in, there, and on the
 * way out (re-probes, restarts, the fence, the promotion) outranks routine work in the queue.
 */
export type StateTag = HealthTag | 'urgent';

export const STATE_TAGS: readonly StateTag[] = ['healthy', 'unhealthy', 'gone', 'urgent'];

/** Settings a deadline may name instead of a number, read from the configuration at each use. */
export type PageAfterSetting = 'syncPageAfter';

/** A state's paging policy, on its `meta` (`meta: { pageAfter: 60, trouble: '…' } satisfies StateMeta`). */
export interface StateMeta {
  /**
   * Seconds an entity may stay in the state before a human is paged, or the setting that
   * says. The innermost state that declares one decides. PGFLEET_STUCK_AFTER overrides all.
   */
  pageAfter?: number | PageAfterSetting;
  /**
   * What an operator reads first: the trouble in words. The outermost state that declares
   * one names it; `{step}` stands for the path of the state it is declared under.
   */
  trouble?: string;
}

/**
 * The state nodes an entity stored in `path` (`restarting.running`) is in, outermost first.
 * Stored paths are strings, and may name a state an older version of the machine had: the
 * nodes end at the first name the machine lacks, where `resolveState` would throw.
 */
export function statesAlong(machine: AnyStateMachine, path: string): AnyStateNode[] {
  const nodes: AnyStateNode[] = [];
  let node: AnyStateNode = machine.root;
  for (const key of path.split('.')) {
    const child = node.states[key];
    if (child === undefined) break;
    nodes.push(child);
    node = child;
  }
  return nodes;
}

/**
 * Whether an entity stored in `path` is in a state with the tag: `snapshot.hasTag` for the
 * state as the control database keeps it. Code outside the machines asks this (is it
 * healthy, is it gone) instead of naming the states. An entity with no state has no tags.
 */
export function hasTag(machine: AnyStateMachine, path: string | null | undefined, tag: HealthTag): boolean {
  return statesAlong(machine, path ?? '').some((node) => node.tags.includes(tag));
}

/**
 * The top-level states with the tag, by name: what `entity_states` keeps of an entity's
 * state, for SQL to ask the tags (`m.state = any($1::text[])`) instead of naming states.
 */
export function statesTagged(machine: AnyStateMachine, tag: HealthTag): string[] {
  return Object.values(machine.root.states)
    .filter((node) => node.tags.includes(tag))
    .map((node) => node.key);
}
