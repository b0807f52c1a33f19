import { statesTagged } from '../../machines/policy.ts';
import { serverMachine } from '../../machines/server.ts';
import { transaction, type Pool, type Queryable } from '../db.ts';
import { PLANS, SHARED_SERVER_TENANTS, type Plan } from '../plans.ts';
import type { Sealer } from '../sealer.ts';
import { sendEvent } from '../runner/runner.ts';
import { insertFollower, insertServer, requestBackup } from '../servers/rows.ts';
import { PLATFORM_LOGIN_SLOTS } from '../pg/tenant.ts';

/**
 * Connections a shared server keeps for the platform itself (observer, limits, health
 * checks, a move's pg_dump, a provision) beyond Postgres' 3 superuser-reserved slots. The
 * rest is its tenants' budget: a shared server takes a tenant only while the plans'
 * connection limits of all its tenants fit in it, so no tenant holding its whole limit can
 * take a slot another was promised. (Before, 50 tenants of 20 shared 100 slots: five that
 * held their limit locked every other tenant of the server out.)
 */
export const SHARED_RESERVED_CONNECTIONS = 10 + 3;
/** `max_connections` of servers made before shared servers said theirs: Postgres' default. */
const DEFAULT_MAX_CONNECTIONS = 100;

export interface PlacementOptions {
  sealer: Sealer;
  /** The provider new servers are made on. */
  provider: string;
  /** `max_connections` of a new shared server (PGFLEET_SHARED_MAX_CONNECTIONS). */
  sharedMaxConnections: number;
}

/** What placement reads of a resource. */
export interface Placed {
  id: string;
  awsRegion: string;
  plan: Plan;
  /** The resource this one follows: its copy gets a server of its own. */
  follows: string | null;
}

/** Each plan's share of a server's connections: its customer's limit and the platform's login check. */
const planLimits = () => [PLANS.map((p) => p.name), PLANS.map((p) => p.connectionLimit + PLATFORM_LOGIN_SLOTS)];

/**
 * Put the resource on a server of its plan's kind, in the caller's transaction: for a new
 * resource as its `primary`, for a plan change as the `target` it moves to. Shared plans
 * take the least-loaded shared server of the region with room (tenants and connections),
 * preferring one that is up; dedicated plans get a server of their own. Safe to repeat: a
 * resource that already has a server in that role keeps it.
 */
export async function placeResource(db: Queryable, opts: PlacementOptions, resource: Placed, role: 'primary' | 'target'): Promise<string> {
  const awsRegion = resource.awsRegion;
  const { rows: linked } = await db.query<{ server_id: string }>(
    'select server_id from resource_servers where resource_id = $1 and role = $2',
    [resource.id, role],
  );
  if (linked[0]) return linked[0].server_id;
  let serverId: string;
  if (resource.follows) {
    const { rows } = await db.query<{ id: string }>(
      `select server_id as id from resource_servers where resource_id = $1 and role = 'primary'`,
      [resource.follows],
    );
    // A fresh base backup of the leader to start from, replaying as little WAL as can be.
    const follower = rows[0] && (await insertFollower(db, rows[0].id, await requestBackup(db, rows[0].id)));
    if (!follower) throw new Error(`the resource ${resource.follows} it follows has no available primary server`);
    serverId = follower;
  } else if (resource.plan.kind === 'dedicated') {
    serverId = await insertServer(db, opts.sealer, opts.provider, { tenancy: 'dedicated', region: awsRegion });
  } else {
    const shared = { tenancy: 'shared' as const, region: awsRegion, maxConnections: opts.sharedMaxConnections };
    // One placement per region at a time, so two never open two new shared servers at once.
    await lockRegion(db, awsRegion);
    const room = await sharedServersWithRoom(db, awsRegion, resource.plan, resource.id);
    // Lock the chosen server's machine: an operator's delete of it waits, then sees the tenant.
    const chosen =
      room[0] &&
      (
        await db.query(`select 1 from entity_states where entity_id = $1 and state <> 'deleting' and finished_at is null for share`, [
          room[0].id,
        ])
      ).rowCount === 1
        ? room[0]
        : undefined;
    serverId = chosen?.id ?? (await insertServer(db, opts.sealer, opts.provider, shared));
    // Keep a server with room in the region, so the next shared resource need not wait for one.
    const smallest = Math.min(...PLANS.filter((p) => p.kind === 'shared').map((p) => p.connectionLimit)) + PLATFORM_LOGIN_SLOTS;
    const left =
      (chosen?.connections ?? opts.sharedMaxConnections - SHARED_RESERVED_CONNECTIONS) -
      resource.plan.connectionLimit -
      PLATFORM_LOGIN_SLOTS;
    const full = (chosen?.tenants ?? 0) + 1 >= SHARED_SERVER_TENANTS || left < smallest;
    if (room.length <= 1 && full) await insertServer(db, opts.sealer, opts.provider, shared);
  }
  await linkServer(db, resource.id, serverId, role);
  return serverId;
}

function lockRegion(db: Queryable, awsRegion: string) {
  return db.query('select pg_advisory_xact_lock(hashtext($1))', [`pgfleet-place-shared:${awsRegion}`]);
}

/** Live shared servers of the region that `plan` fits on, with the connections they have left; never one the resource is on already. */
async function sharedServersWithRoom(
  db: Queryable,
  awsRegion: string,
  plan: Plan,
  resourceId: string,
): Promise<{ id: string; tenants: number; connections: number }[]> {
  const [names, limits] = planLimits();
  const { rows } = await db.query<{ id: string; tenants: number; connections: number }>(
    `select s.id, count(rs.resource_id)::int as tenants,
       (coalesce((s.attrs->'max_connections')::int, $3) - $4 - coalesce(sum(p.lim), 0))::int as connections
     from servers s join entity_states m on m.entity_id = s.id
     left join resource_servers rs on rs.server_id = s.id
     left join resources r on r.id = rs.resource_id
     left join unnest($5::text[], $6::int[]) as p(plan, lim) on p.plan = r.plan
     where s.tenancy = 'shared' and s.region = $1 and m.finished_at is null and m.state not in ('deleting', 'failed')
       and not exists (select 1 from resource_servers x where x.server_id = s.id and x.resource_id = $8)
     group by s.id, m.state
     having count(rs.resource_id) < $2 and coalesce((s.attrs->'max_connections')::int, $3) - $4 - coalesce(sum(p.lim), 0) >= $7
     order by (m.state = any($9::text[])) desc, count(rs.resource_id), s.created_at`,
    [
      awsRegion,
      SHARED_SERVER_TENANTS,
      DEFAULT_MAX_CONNECTIONS,
      SHARED_RESERVED_CONNECTIONS,
      names,
      limits,
      plan.connectionLimit + PLATFORM_LOGIN_SLOTS,
      resourceId,
      statesTagged(serverMachine, 'healthy'),
    ],
  );
  return rows;
}

/**
 * Whether the resource's shared server has connections for `plan` besides its other
 * tenants', in the caller's transaction: a resize that does not fit is a move instead.
 */
export async function roomToResize(db: Queryable, resourceId: string, plan: Plan): Promise<boolean> {
  const { rows: on } = await db.query<{ region: string }>(
    `select s.region from resource_servers rs join servers s on s.id = rs.server_id
     where rs.resource_id = $1 and rs.role = 'primary' and s.tenancy = 'shared'`,
    [resourceId],
  );
  if (!on[0]) return true;
  // Placements in the region wait, so a tenant placed meanwhile cannot take the same slots.
  await lockRegion(db, on[0].region);
  const [names, limits] = planLimits();
  const { rows } = await db.query<{ left: number | null }>(
    `select (coalesce((s.attrs->'max_connections')::int, $2) - $3 - coalesce((
        select sum(p.lim) from resource_servers o join resources r on r.id = o.resource_id
        join unnest($4::text[], $5::int[]) as p(plan, lim) on p.plan = r.plan
        where o.server_id = s.id and o.resource_id <> $1), 0))::int as left
     from resource_servers rs join servers s on s.id = rs.server_id
     where rs.resource_id = $1 and rs.role = 'primary' and s.tenancy = 'shared'`,
    [resourceId, DEFAULT_MAX_CONNECTIONS, SHARED_RESERVED_CONNECTIONS, names, limits],
  );
  return (rows[0]?.left ?? 0) >= plan.connectionLimit + PLATFORM_LOGIN_SLOTS;
}

export async function linkServer(
  db: Queryable,
  resourceId: string,
  serverId: string,
  role: 'primary' | 'standby' | 'target' | 'former',
): Promise<void> {
  await db.query('insert into resource_servers (resource_id, server_id, role) values ($1, $2, $3)', [resourceId, serverId, role]);
}

/**
 * Empty shared servers of a region beyond one spare go: deprovisioning empties shared
 * servers, and they used to run for ever. Placement and this take the same region lock, and
 * the machine row is locked before the links are counted, so a tenant placed meanwhile is
 * either seen (and the server kept) or waits and finds the server deleting. The oldest empty
 * one stays as the region's spare. Returns the servers asked to go.
 */
export async function retireEmptySharedServers(pool: Pool): Promise<string[]> {
  const { rows: regions } = await pool.query<{ region: string }>(`select distinct region from servers where tenancy = 'shared'`);
  const retired: string[] = [];
  for (const { region } of regions) {
    retired.push(
      ...(await transaction(pool, async (client) => {
        await lockRegion(client, region);
        const { rows } = await client.query<{ id: string }>(
          `select s.id from servers s join entity_states m on m.entity_id = s.id
           where s.tenancy = 'shared' and s.region = $1 and m.finished_at is null and m.state = any($2::text[])
             and not exists (select 1 from resource_servers rs where rs.server_id = s.id)
           order by s.created_at
           for update of m`,
          [region, statesTagged(serverMachine, 'healthy')],
        );
        const extra = rows.slice(1).map((r) => r.id);
        for (const id of extra) await sendEvent<'server'>(client, id, { type: 'delete' });
        return extra;
      })),
    );
  }
  return retired;
}
