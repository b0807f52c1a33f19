/**
 * What the failover benchmark sees of the resource it measures: whether it is whole, and the
 * transitions its machines made since a fault.
 */
import type { Config } from '../../src/config.ts';
import { asSuperuser } from '../../src/pg/superuser.ts';
import type { Running } from '../../src/processes/app.ts';
import { loadServerRecord } from '../../src/servers/rows.ts';
import { entityNotes } from '../../src/chaos/entityNotes.ts';
import { query } from '../../src/chaos/writer.ts';
import type { Milestone } from '../provision/report.ts';
import { call, OPERATOR_TOKEN } from '../support.ts';

/** A server of the resource as the operator API shows it. */
export interface Shown {
  id: string;
  role: string;
  state: string;
  port: number | null;
}

/** The pgfleet the bench runs, and the resource it measures with the URL its writer uses. */
export interface Context {
  running: Running;
  config: Config;
  resourceId: string;
  url: string;
}

/**
 * Whether the resource is whole: available, its primary and standby both available, the
 * standby synchronous on the primary, and the URL reaching the primary. The pair when it
 * is, else what is missing.
 */
export async function whole(ctx: Context): Promise<{ primary: Shown; standby: Shown } | string> {
  const res = await call(ctx.running.url!, 'GET', `/api/resources/${ctx.resourceId}`, `Bearer ${OPERATOR_TOKEN}`);
  const shown = res.json as { state: string; servers: Shown[] };
  const roles = shown.servers.map((s) => `${s.role} ${s.id.slice(0, 8)} ${s.state}`).join(', ');
  const primary = shown.servers.find((s) => s.role === 'primary');
  const standby = shown.servers.find((s) => s.role === 'standby');
  if (shown.state !== 'available' || primary?.state !== 'available' || standby?.state !== 'available')
    return `resource ${shown.state}; ${roles}`;
  const server = await loadServerRecord(ctx.running.pool, ctx.running.sealer, primary.id);
  if (!server?.host || !server.port) return `the primary ${primary.id} has no address`;
  const sync = await asSuperuser(
    { host: server.host, port: server.port, password: server.superuserPassword },
    'postgres',
    async (client) =>
      (await client.query<{ name: string }>(`select application_name as name from pg_stat_replication where sync_state = 'sync'`)).rows.map(
        (r) => r.name,
      ),
    2000,
  );
  if (!sync.includes(standby.id.replace(/-/g, '_')))
    return `the standby ${standby.id.slice(0, 8)} is not synchronous (sync: ${sync.join(', ') || 'none'})`;
  const [at] = await query<{ port: number; recovery: boolean }>(
    ctx.url,
    'select inet_server_port() as port, pg_is_in_recovery() as recovery',
  );
  if (at?.port !== primary.port || at.recovery)
    return `the URL reaches port ${at?.port} (recovery ${at?.recovery}), not the primary's ${primary.port}`;
  return { primary, standby };
}

/**
 * Transitions of the resource and of its two servers since the fault, in ms after it, each
 * server named by the role it had before the fault.
 */
export async function transitionsSince(ctx: Context, names: Map<string, string>, faultAt: number): Promise<Milestone[]> {
  const { rows } = await ctx.running.pool.query<{ entity: string; to: string; ms: number }>(
    `select t.entity_id as entity, t.to_state as "to", (extract(epoch from t.at) * 1000)::float8 as ms
     from transitions t
     where t.entity_id = any($1::uuid[]) and t.at >= to_timestamp($2::float8 / 1000)
     order by t.at, t.id`,
    [[...names.keys()], faultAt],
  );
  return rows.map((r) => ({ name: `${names.get(r.entity)}:${r.to}`, ms: r.ms - faultAt }));
}

/**
 * What pgfleet was doing about the resource and its two servers (named by the role each had
 * before the fault) when a run failed: each machine's state, its latest observation and the
 * jobs queued or running for it. Taken before a hung primary is let go, so that a failover
 * that never began says why.
 */
export async function failureNotes(ctx: Context, names: Map<string, string>): Promise<string[]> {
  return (await Promise.all([...names].map(([id, name]) => entityNotes(ctx.running.pool, id, name)))).flat();
}
