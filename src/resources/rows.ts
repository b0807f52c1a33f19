import { transaction, type Pool, type Queryable } from '../db.ts';
import { findPlan, type Plan } from '../plans.ts';
import { tenantNames, tenantPassword, type Tenant } from '../pg/tenant.ts';
import { roomToResize } from './placement.ts';
import { createMachine, sendEvent, type EventOf, type Step, type Unstamped } from '../runner/runner.ts';
import type { Sealer } from '../sealer.ts';
import { ensureRoute, routeOf, type Route } from './routes.ts';

/** What a platform sent to provision a resource, checked. */
export interface ProvisionRequest {
  id: string;
  plan: Plan;
  /** As the platform named it, and the AWS region it stands for. */
  region: string;
  awsRegion: string;
  name: string | null;
  herokuId: string | null;
  callbackUrl: string | null;
  options: Record<string, unknown>;
  oauthGrant: Record<string, unknown> | null;
  /** The resource this one follows: a read-only copy of it on a server of its own. */
  follows: string | null;
}

export interface ResourceRecord {
  id: string;
  plan: Plan;
  region: string;
  awsRegion: string;
  callbackUrl: string | null;
  oauthGrant: { code?: string } | null;
  oauthTokens: { access_token: string; refresh_token?: string } | null;
  tenant: Tenant;
  follows: string | null;
  route: Route | undefined;
}

export type ServerRole = 'primary' | 'standby' | 'target' | 'former';

/** A server that serves a resource, as its resource sees it. */
export interface ResourceServer {
  id: string;
  role: ServerRole;
  tenancy: 'shared' | 'dedicated';
  state: string;
  finished: boolean;
  host: string | null;
  port: number | null;
  /** Whether the provider last saw the server's process alive ('true'/'false'), if it looked. */
  alive: string | null;
  /** Where the server's connection pooler listens; null for a server without one. */
  poolPort: number | null;
}

/**
 * Insert the resource with its machine, or find the one an earlier request with the same
 * uuid made: the platform delivers at least once. `created` says which.
 */
export async function createResource(pool: Pool, sealer: Sealer, req: ProvisionRequest): Promise<{ created: boolean; plan: string }> {
  return transaction(pool, async (client) => {
    // A follower is the same database: the same names and password, copied sealed.
    const leader = req.follows
      ? (
          await client.query<{ database: string; role: string; sealed: string }>(
            'select database_name as database, role_name as role, password_sealed as sealed from resources where id = $1',
            [req.follows],
          )
        ).rows[0]
      : undefined;
    const names = leader ?? tenantNames();
    const { rows } = await client.query<{ id: string }>(
      `insert into resources (id, plan, region, aws_region, name, heroku_id, callback_url, options, database_name, role_name,
         password_sealed, oauth_grant_sealed, follows)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
       on conflict (id) do nothing returning id`,
      [
        req.id,
        req.plan.name,
        req.region,
        req.awsRegion,
        req.name,
        req.herokuId,
        req.callbackUrl,
        JSON.stringify(req.options),
        names.database,
        names.role,
        leader?.sealed ?? sealer.seal(tenantPassword()),
        req.oauthGrant ? sealer.seal(JSON.stringify(req.oauthGrant)) : null,
        req.follows,
      ],
    );
    if (rows.length === 0) {
      const existing = await client.query<{ plan: string }>('select plan from resources where id = $1', [req.id]);
      return { created: false, plan: existing.rows[0]!.plan };
    }
    if (req.plan.standbys > 0) await ensureRoute(client, req.id);
    await createMachine(client, 'resource', req.id);
    // A dedicated server takes seconds: the platform is answered at once and handed the config later.
    if (req.plan.kind === 'dedicated') await sendEvent<'resource'>(client, req.id, { type: 'deferred' });
    return { created: true, plan: req.plan.name };
  });
}

export async function loadResourceRecord(db: Queryable, sealer: Sealer, id: string): Promise<ResourceRecord | undefined> {
  const { rows } = await db.query<{
    id: string;
    plan: string;
    region: string;
    aws_region: string;
    callback_url: string | null;
    database_name: string;
    role_name: string;
    password_sealed: string;
    oauth_grant_sealed: string | null;
    oauth_tokens_sealed: string | null;
    follows: string | null;
    attrs: Record<string, string>;
  }>('select *, hstore_to_json(attrs) as attrs from resources where id = $1', [id]);
  const row = rows[0];
  if (!row) return undefined;
  const plan = findPlan(row.plan);
  if (!plan) throw new Error(`resource ${id} is on plan "${row.plan}", which the catalog no longer has`);
  const open = (sealed: string | null) => (sealed ? JSON.parse(sealer.open(sealed)) : null);
  return {
    id: row.id,
    plan,
    region: row.region,
    awsRegion: row.aws_region,
    callbackUrl: row.callback_url,
    oauthGrant: open(row.oauth_grant_sealed),
    oauthTokens: open(row.oauth_tokens_sealed),
    follows: row.follows,
    route: routeOf(row.attrs),
    tenant: {
      database: row.database_name,
      role: row.role_name,
      password: sealer.open(row.password_sealed),
      connectionLimit: plan.connectionLimit,
      statementTimeoutMs: plan.statementTimeoutMs,
      sizeLimitBytes: plan.sizeLimitBytes,
      memoryLimitBytes: plan.memoryLimitBytes,
    },
  };
}

export async function storeOauthTokens(db: Queryable, sealer: Sealer, id: string, tokens: unknown): Promise<void> {
  await db.query('update resources set oauth_tokens_sealed = $2 where id = $1', [id, sealer.seal(JSON.stringify(tokens))]);
}

export async function resourceServers(db: Queryable, id: string): Promise<ResourceServer[]> {
  const { rows } = await db.query<ResourceServer>(
    `select s.id, rs.role, s.tenancy, m.state, m.finished_at is not null as finished, s.host, s.port, s.last_observation->'alive' as alive,
       (s.attrs->'pool_port')::int as "poolPort"
     from resource_servers rs join servers s on s.id = rs.server_id join entity_states m on m.entity_id = s.id
     where rs.resource_id = $1 order by rs.created_at`,
    [id],
  );
  return rows;
}

/**
 * After a move or a failover: the successor (the move's target, the promoted standby)
 * becomes the primary, and the old primary is kept as `former` until it is dealt with. Call
 * it in the transaction that records the step. Two statements, demotion first: the unique
 * index allows one primary per resource and is checked row by row, so a swap in one UPDATE
 * failed or not with the rows' physical order. Without a successor (the swap is done
 * already) nothing changes, so a repeated step keeps its primary.
 */
export async function takeOver(db: Queryable, id: string, successor: 'target' | 'standby'): Promise<void> {
  const { rows } = await db.query<{ server_id: string }>(
    'select server_id from resource_servers where resource_id = $1 and role = $2 order by created_at limit 1 for update',
    [id, successor],
  );
  const next = rows[0]?.server_id;
  if (!next) return;
  await db.query(`update resource_servers set role = 'former' where resource_id = $1 and role = 'primary'`, [id]);
  await db.query(`update resource_servers set role = 'primary' where resource_id = $1 and server_id = $2`, [id, next]);
}

/** A server of the resource takes another role: a former primary that rejoined as a standby. */
export async function relinkServer(db: Queryable, resourceId: string, serverId: string, role: ServerRole): Promise<void> {
  await db.query('update resource_servers set role = $3 where resource_id = $1 and server_id = $2', [resourceId, serverId, role]);
}

export async function unlinkServer(db: Queryable, resourceId: string, serverId: string): Promise<void> {
  await db.query('delete from resource_servers where resource_id = $1 and server_id = $2', [resourceId, serverId]);
}

/** The top-level state of the resource's machine, for callers waiting on it. */
export async function resourceState(db: Queryable, id: string): Promise<string | undefined> {
  const { rows } = await db.query<{ state: string }>(`select state from entity_states where entity_id = $1 and machine = 'resource'`, [id]);
  return rows[0]?.state;
}

/** Change the plan column and tell the machine, in one transaction. */
export async function changePlan(
  pool: Pool,
  id: string,
  plan: Plan,
  change: { move: boolean; standby?: 'add' | 'drop' },
): Promise<Step | undefined> {
  return transaction(pool, async (client) => {
    // A bigger shared plan that its server has no connections left for moves to one that has.
    if (!change.move && plan.kind === 'shared' && !(await roomToResize(client, id, plan))) change = { ...change, move: true };
    await client.query('update resources set plan = $2 where id = $1', [id, plan.name]);
    if (change.standby === 'add') await ensureRoute(client, id);
    return sendEvent<'resource'>(client, id, { type: 'change_plan', plan: plan.name, ...change });
  });
}

export async function tellResource(pool: Pool, id: string, event: Unstamped<EventOf<'resource'>>): Promise<Step | undefined> {
  return transaction(pool, (client) => sendEvent<'resource'>(client, id, event));
}
