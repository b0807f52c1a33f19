import type { AnyStateMachine } from 'xstate';
import { describe, expect, it } from 'vitest';
import { MACHINES, type MachineName } from '../../src/runner/machines.ts';
import { useTaskBench } from '../support/tasks.ts';

/** An action as a state node holds it: a name, a named one with its params, or an inline action creator. */
type NodeAction = string | { type: string; params?: { task?: unknown } } | ((...args: unknown[]) => unknown);

interface StateNodeLike {
  entry: NodeAction[];
  exit: NodeAction[];
  transitions: Map<string, { actions: NodeAction[] }[]>;
  always?: { actions: NodeAction[] }[];
  states: Record<string, StateNodeLike>;
}

/** An action creator that emits: what it emits is read from the task names written in its source. */
type Emitter = { type: string; event?: unknown; collect?: unknown };
const EMITTING = ['xstate.emit', 'xstate.enqueueActions'];
const literalTasks = (action: Emitter) => [...String(action.event ?? action.collect).matchAll(/task:\s*["'](\w+)["']/g)].map((m) => m[1]!);

/**
 * Every task a machine can ask for: the `task` params of the actions on its state nodes
 * (entries, exits, transitions, `always`), and the tasks its emitting actions name in their
 * own code (a retry with backoff, a delivery on arrival). An emitting action that does
 * neither, one that would compute its task, is listed in `unread`: this walk cannot see what
 * it asks for.
 */
function tasksOf(machine: AnyStateMachine): { tasks: Set<string>; unread: string[] } {
  const tasks = new Set<string>();
  const fromParams = new Set<string>();
  const unread: string[] = [];
  const read = (action: NodeAction) => {
    if (typeof action === 'function') {
      const emitter = action as unknown as Emitter;
      if (!EMITTING.includes(emitter.type)) return;
      const named = literalTasks(emitter);
      if (named.length === 0) unread.push(`an inline ${emitter.type}`);
      named.forEach((t) => tasks.add(t));
    } else if (typeof action === 'object' && typeof action.params?.task === 'string') {
      tasks.add(action.params.task);
      fromParams.add(action.type);
    }
  };
  const walk = (node: StateNodeLike) => {
    [...node.entry, ...node.exit].forEach(read);
    for (const transitions of node.transitions.values()) for (const t of transitions) t.actions.forEach(read);
    for (const t of node.always ?? []) t.actions.forEach(read);
    Object.values(node.states).forEach(walk);
  };
  walk(machine.root as unknown as StateNodeLike);
  for (const [name, action] of Object.entries(machine.implementations.actions as unknown as Record<string, Emitter>)) {
    if (!EMITTING.includes(action.type)) continue;
    const named = literalTasks(action);
    named.forEach((t) => tasks.add(t));
    if (named.length === 0 && !fromParams.has(name)) unread.push(name);
  }
  return { tasks, unread };
}

describe('the worker and the machines', () => {
  const bench = useTaskBench();

  it.each(Object.keys(MACHINES) as MachineName[])('has a handler for every task the %s machine can ask for', (name) => {
    const { tasks, unread } = tasksOf(MACHINES[name].logic);
    expect(unread).toEqual([]);
    expect(tasks.size).toBeGreaterThan(0);
    const missing = [...tasks].filter((task) => !(task in bench.tasks));
    expect(missing).toEqual([]);
  });

  it('finds the tasks a machine names in its own actions, not only on its states', () => {
    // `page` and `notify` are on the incident machine's states; `deadline`, `unpage` and
    // `changeover` only in the actions that compute their delay or whether they are due.
    expect(tasksOf(MACHINES.incident.logic).tasks).toEqual(new Set(['page', 'unpage', 'notify', 'deadline', 'changeover']));
  });
});
