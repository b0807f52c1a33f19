import { isoTime, type Queryable } from '../db.ts';
import type { MachineName } from '../runner/machines.ts';
import { incidentSettings, stuckAfter } from './policy.ts';
import { openIncident } from './rows.ts';

/** How long before a provider retires a host its server is moved off it. */
export const RETIREMENT_LEAD_SECONDS = 3600;

/**
 * A provider's notice that it will retire a server's host (`retirement_at` in the provider's
 * observation, as EC2 announces instance retirements) opens a scheduled incident: customers
 * hear now, and the changeover runs an hour before the provider would pull the host.
 */
export async function checkProviderNotices(
  db: Queryable,
  machine: MachineName,
  serverId: string,
  obs: Record<string, string>,
): Promise<void> {
  if (machine !== 'server' || !obs.retirement_at) return;
  const { rows } = await db.query<{ state: string; now: string; starts_in: number; exists: boolean }>(
    `select m.state, ${isoTime('clock_timestamp()')} as now,
       extract(epoch from $2::timestamptz - clock_timestamp())::float8 - $3 as starts_in,
       exists (select 1 from incidents where entity_id = $1 and kind = 'retirement' and resolved_at is null) as exists
     from entity_states m where m.entity_id = $1`,
    [serverId, obs.retirement_at, RETIREMENT_LEAD_SECONDS],
  );
  const server = rows[0];
  if (!server || server.exists) return;
  await openIncident(
    db,
    serverId,
    'retirement',
    'provider retires the host',
    {
      entityState: server.state,
      since: server.now,
      stuckAfter: stuckAfter('server', 'maintaining', incidentSettings().stuckAfter),
      startsIn: Math.max(0, Math.ceil(server.starts_in)),
    },
    new Date(Date.parse(obs.retirement_at) - RETIREMENT_LEAD_SECONDS * 1000).toISOString(),
  );
}
