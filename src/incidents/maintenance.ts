import { isoTime, transaction, type Pool } from '../db.ts';
import { incidentSettings, stuckAfter } from './policy.ts';
import { openIncident } from './rows.ts';

/**
 * Schedule maintenance of a server: an incident that tells every customer on it now and
 * restarts the server at `at`, from a delayed job that survives restarts of pgfleet.
 */
export async function scheduleMaintenance(pool: Pool, serverId: string, at: Date): Promise<string | undefined> {
  return transaction(pool, async (client) => {
    const { rows } = await client.query<{ state: string; now: string; starts_in: number }>(
      `select state, ${isoTime('clock_timestamp()')} as now, extract(epoch from $2::timestamptz - clock_timestamp())::float8 as starts_in
       from entity_states where entity_id = $1 and machine = 'server' and finished_at is null for update`,
      [serverId, at],
    );
    const server = rows[0];
    if (!server) return undefined;
    return openIncident(
      client,
      serverId,
      'maintenance',
      'planned maintenance',
      {
        entityState: server.state,
        since: server.now,
        stuckAfter: stuckAfter('server', 'maintaining', incidentSettings().stuckAfter),
        startsIn: Math.ceil(server.starts_in),
      },
      at.toISOString(),
    );
  });
}
