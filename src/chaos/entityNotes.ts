import type { Queryable } from '../db.ts';
import { jobsOf } from '../queue/status.ts';
import { MACHINES, type MachineName } from '../runner/machines.ts';

/** The keys of a latest observation that say why a machine did or did not move: a server's probe, a resource's servers. */
const TELLING_KEYS = ['reachable', 'failed_probes', 'alive', 'error', 'primary.state', 'standby.state'];

/**
 * What pgfleet was doing about an entity that did not get where it should have in time (a
 * frozen primary never fenced, a failover that never began), as the control database has
 * it: its machine's state and since when, its latest observation, and every job queued or
 * running for it, each with when it was due and, running, who holds it until when. Notes for whoever reads why;
 * reading them must not fail the run, so a failure to read is a note too.
 */
export async function entityNotes(db: Queryable, entityId: string, name: string): Promise<string[]> {
  try {
    const { rows } = await db.query<{ machine: string; state: string; updated: string }>(
      'select machine, state, updated_at::text as updated from entity_states where entity_id = $1',
      [entityId],
    );
    const m = rows[0];
    if (!m) return [`${name}: no machine`];
    const table = MACHINES[m.machine as MachineName]?.observedIn;
    const observation = table
      ? (
          await db.query<{ at: string | null; obs: Record<string, string> | null }>(
            `select last_observed_at::text as at, hstore_to_json(last_observation) as obs from ${table} where id = $1`,
            [entityId],
          )
        ).rows[0]
      : undefined;
    const told = TELLING_KEYS.filter((k) => observation?.obs?.[k] !== undefined).map((k) => `${k} ${observation!.obs![k]}`);
    const jobs = (await jobsOf(db, entityId)).map(
      (j) =>
        `${j.task} (${j.lane}, priority ${j.priority}, attempt ${j.attempts}, ` +
        `due ${j.runAt}${j.lockedBy !== null ? `, held by ${j.lockedBy} until ${j.lockedUntil}` : ''})`,
    );
    return [
      `${name}: its machine ${m.state} since ${m.updated}` +
        (table ? `; last observed ${observation?.at ?? 'never'}${told.length ? ` (${told.join(', ')})` : ''}` : ''),
      `${name}: its jobs: ${jobs.join('; ') || 'none'}`,
    ];
  } catch (err) {
    return [`${name}: reading the control database failed: ${(err as Error).message}`];
  }
}
