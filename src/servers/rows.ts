import { randomBytes } from 'node:crypto';
import { statesTagged } from '../../machines/policy.ts';
import { RESOURCE_FAILOVER_STATES } from '../../machines/resource.ts';
import { serverMachine } from '../../machines/server.ts';
import { transaction, type Pool, type Queryable } from '../db.ts';
import type { SuperuserTarget } from '../pg/superuser.ts';
import { resourcesServedBy } from '../resources/servedBy.ts';
import type { ServerRecord } from '../providers/provider.ts';
import { createMachine, sendEvent } from '../runner/runner.ts';
import { enqueue } from '../queue/jobs.ts';
import type { Sealer } from '../sealer.ts';
import { backupLabel } from '../wal/backup.ts';

export interface ServerView {
  id: string;
  provider: string;
  state: string;
  host: string | null;
  port: number | null;
  createdAt: Date;
  observedAt: Date | null;
  observation: Record<string, string>;
}

const VIEW_SQL = `
  select s.id, s.provider, m.state, s.host, s.port, s.created_at as "createdAt",
    s.last_observed_at as "observedAt", hstore_to_json(s.last_observation) as observation
  from servers s join entity_states m on m.entity_id = s.id`;

export interface ServerPlacement {
  /** `shared` servers hold tenants of shared plans; a `dedicated` one serves one resource. */
  tenancy: 'shared' | 'dedicated';
  /** The AWS region name the server lives in. */
  region: string;
  /** Its `max_connections`, when not Postgres' default. */
  maxConnections?: number;
}

/** Insert the row and its machine in the caller's transaction: nothing exists without a machine. */
export async function insertServer(db: Queryable, sealer: Sealer, provider: string, placement: ServerPlacement): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    `insert into servers (provider, superuser_password_sealed, tenancy, region, attrs)
     values ($1, $2, $3, $4, case when $5::int is null then ''::hstore else hstore('max_connections', $5::text) end) returning id`,
    [provider, sealer.seal(randomBytes(32).toString('base64url')), placement.tenancy, placement.region, placement.maxConnections ?? null],
  );
  const id = rows[0]!.id;
  await createMachine(db, 'server', id);
  return id;
}

/**
 * A follower of a live server: a copy of it (so the same superuser password, sealed as it
 * is) that restores the leader's latest backup and streams from it.
 */
export async function createFollower(pool: Pool, leaderId: string): Promise<ServerView | undefined> {
  return transaction(pool, async (client) => {
    const id = await insertFollower(client, leaderId);
    return id ? (await getServer(client, id))! : undefined;
  });
}

/**
 * Ask a worker for a base backup of the server, in the caller's transaction; the label
 * names the backup, so a server built from it can wait for that one and no older. Five
 * attempts span 30 s of backoff: with three (6 s), a new primary killed and restarted during
 * a rejoin's backup left a dead job; a server waiting for it has it retried once its
 * leader is back (src/servers/tasks.ts).
 */
export async function requestBackup(db: Queryable, serverId: string): Promise<string> {
  const label = backupLabel();
  await enqueue(db, { task: 'backup', payload: { server: serverId, label }, maxAttempts: 5 });
  return label;
}

/**
 * The follower's row and machine, in the caller's transaction; undefined without an
 * available leader. `backup` names the backup of the leader it starts from; without one it
 * takes the leader's latest.
 */
export async function insertFollower(db: Queryable, leaderId: string, backup?: string): Promise<string | undefined> {
  const { rows } = await db.query<{ provider: string; sealed: string; region: string }>(
    `select s.provider, s.superuser_password_sealed as sealed, s.region from servers s join entity_states m on m.entity_id = s.id
     where s.id = $1 and m.finished_at is null and m.state = any($2::text[])`,
    [leaderId, statesTagged(serverMachine, 'healthy')],
  );
  const leader = rows[0];
  if (!leader) return undefined;
  const inserted = await db.query<{ id: string }>(
    `insert into servers (provider, superuser_password_sealed, tenancy, region) values ($1, $2, 'dedicated', $3) returning id`,
    [leader.provider, leader.sealed, leader.region],
  );
  const id = inserted.rows[0]!.id;
  await followLeader(db, id, leaderId, backup);
  await createMachine(db, 'server', id);
  return id;
}

/**
 * From now on the server follows `leaderId`: it streams from there, and a rebuild starts
 * from the backup `backup` of it (a leader's older backups may be of a timeline it left), or
 * from its latest when no backup is named.
 */
export async function followLeader(db: Queryable, id: string, leaderId: string, backup?: string): Promise<void> {
  await db.query(`update servers set attrs = attrs || hstore(array['follows', 'backup_label'], array[$2, $3]) where id = $1`, [
    id,
    leaderId,
    backup ?? null,
  ]);
}

/** Live servers that stream from `leaderId`: its followers. */
export async function followersOf(db: Queryable, leaderId: string): Promise<{ id: string; host: string | null; port: number | null }[]> {
  const { rows } = await db.query<{ id: string; host: string | null; port: number | null }>(
    `select s.id, s.host, s.port from servers s join entity_states m on m.entity_id = s.id
     where s.attrs->'follows' = $1 and m.finished_at is null and not (m.state = any($2::text[]))`,
    [leaderId, statesTagged(serverMachine, 'gone')],
  );
  return rows;
}

export async function createServer(pool: Pool, sealer: Sealer, provider: string): Promise<ServerView> {
  return transaction(pool, async (client) => {
    const id = await insertServer(client, sealer, provider, { tenancy: 'dedicated', region: 'us-east-1' });
    return (await getServer(client, id))!;
  });
}

export async function listServers(db: Queryable): Promise<ServerView[]> {
  const { rows } = await db.query<ServerView>(`${VIEW_SQL} where m.finished_at is null order by s.created_at`);
  return rows;
}

export async function getServer(db: Queryable, id: string): Promise<ServerView | undefined> {
  const { rows } = await db.query<ServerView>(`${VIEW_SQL} where s.id = $1`, [id]);
  return rows[0];
}

/**
 * Ask the server's machine to delete it: `missing` when there is no such live server,
 * `serving` (with the resources) when customer databases still live on it, which only their
 * own deprovisioning or a move may take away.
 */
export async function requestServerDeletion(
  pool: Pool,
  id: string,
): Promise<{ outcome: 'deleting' | 'missing' } | { outcome: 'serving'; resources: string[] }> {
  return transaction(pool, async (client) => {
    await client.query('select 1 from entity_states where entity_id = $1 for update', [id]);
    const resources = await resourcesServedBy(client, id);
    if (resources.length > 0) return { outcome: 'serving', resources };
    return { outcome: (await sendEvent<'server'>(client, id, { type: 'delete' })) === undefined ? 'missing' : 'deleting' };
  });
}

export async function loadServerRecord(db: Queryable, sealer: Sealer, id: string): Promise<ServerRecord | undefined> {
  const { rows } = await db.query<
    Omit<ServerRecord, 'leader'> & { sealed: string; leader_host: string | null; leader_port: number | null }
  >(
    `select s.id, s.provider, s.host, s.port, s.superuser_password_sealed as sealed, hstore_to_json(s.attrs) as attrs,
       l.host as leader_host, l.port as leader_port
     from servers s left join servers l on l.id::text = s.attrs->'follows'
     where s.id = $1`,
    [id],
  );
  const row = rows[0];
  if (!row) return undefined;
  const { sealed, leader_host: leaderHost, leader_port: leaderPort, ...server } = row;
  const leader = leaderHost !== null && leaderPort !== null ? { host: leaderHost, port: leaderPort } : undefined;
  return { ...server, superuserPassword: sealer.open(sealed), ...(leader ? { leader } : {}) };
}

export async function placeServer(db: Queryable, id: string, host: string, port: number, attrs: Record<string, string>): Promise<void> {
  await db.query(
    `update servers set host = $2, port = $3,
       attrs = attrs || coalesce((select hstore(array_agg(key), array_agg(value)) from jsonb_each_text($4::jsonb)), '')
     where id = $1`,
    [id, host, port, JSON.stringify(attrs)],
  );
}

/** Where a placed server listens; a server not placed yet has no address to use. */
export function serverAddress(server: { host: string | null; port: number | null; id: string }): { host: string; port: number } {
  if (server.host === null || server.port === null) throw new Error(`server ${server.id} has no address yet`);
  return { host: server.host, port: server.port };
}

export function superuserTarget(server: { host: string | null; port: number | null; id: string }, password: string): SuperuserTarget {
  return { ...serverAddress(server), password };
}

/**
 * Whether the server is the primary of a resource with an available standby that a failover
 * promotes: one whose resource fails over in its state (a standby that had rejoined and was
 * not yet synchronous had counted, and a primary lost then was neither restarted nor failed
 * over), and not while the resource runs without a synchronous copy, when the standby may
 * lack commits the primary acknowledged.
 */
export async function standbyTakesOver(db: Queryable, serverId: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `select 1 from resource_servers p
     join entity_states r on r.entity_id = p.resource_id and r.state = any($2::text[])
       and r.context->>'unsynchronizedSince' is null
     join resource_servers s on s.resource_id = p.resource_id and s.role = 'standby'
     join entity_states m on m.entity_id = s.server_id and m.state = any($3::text[])
     where p.server_id = $1 and p.role = 'primary'`,
    [serverId, RESOURCE_FAILOVER_STATES, statesTagged(serverMachine, 'healthy')],
  );
  return (rowCount ?? 0) > 0;
}
