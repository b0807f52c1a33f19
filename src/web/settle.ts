import { hasTag } from '../../machines/policy.ts';
import { resourceMachine } from '../../machines/resource.ts';
import type { Queryable } from '../db.ts';

/** How often the waiting requests look at their resources' machines. */
const LOOK_EVERY_MS = 10;

interface Waiter {
  id: string;
  deadline: number;
  resolve(settled: boolean): void;
  reject(err: unknown): void;
}

/**
 * Requests that wait for their resource to settle (a provision or plan change answered with
 * the config when it is ready within PGFLEET_ANSWER_WITHIN) share one look at the control
 * database per tick, whatever their number. Each used to look on its own every 10 ms: a
 * burst of 200 provisions asked for 20,000 queries a second, queued for the pool the worker
 * shares under `pgfleet start`; the control database committed 137,801 transactions during
 * such a burst, and 15,236 with one look per tick (bench:provision).
 */
export function settler(pool: Queryable) {
  const waiters = new Set<Waiter>();
  let looking = false;

  async function look(): Promise<void> {
    looking = true;
    try {
      while (waiters.size > 0) {
        const ids = [...new Set([...waiters].map((w) => w.id))];
        let states: Map<string, string>;
        try {
          const { rows } = await pool.query<{ id: string; state: string }>(
            `select entity_id::text as id, state from entity_states where machine = 'resource' and entity_id = any($1::uuid[])`,
            [ids],
          );
          states = new Map(rows.map((r) => [r.id, r.state]));
        } catch (err) {
          for (const w of waiters) w.reject(err);
          waiters.clear();
          break;
        }
        const now = Date.now();
        for (const w of waiters) {
          const state = states.get(w.id);
          const outcome = hasTag(resourceMachine, state, 'healthy')
            ? true
            : hasTag(resourceMachine, state, 'gone') || now >= w.deadline
              ? false
              : undefined;
          if (outcome === undefined) continue;
          waiters.delete(w);
          w.resolve(outcome);
        }
        if (waiters.size > 0) await new Promise((r) => setTimeout(r, LOOK_EVERY_MS));
      }
    } finally {
      looking = false;
    }
  }

  return {
    /**
     * Whether the resource's machine settles in `available` within the time: false when it is
     * deprovisioned first, or the time runs out.
     */
    settled(id: string, withinSeconds: number): Promise<boolean> {
      return new Promise<boolean>((resolve, reject) => {
        waiters.add({ id: id.toLowerCase(), deadline: Date.now() + withinSeconds * 1000, resolve, reject });
        if (!looking) void look();
      });
    },
  };
}
