import { hasTag } from '../../machines/policy.ts';
import { resourceMachine } from '../../machines/resource.ts';
import { serverMachine } from '../../machines/server.ts';
import type { Pool } from '../db.ts';
import { asSuperuser } from '../pg/superuser.ts';
import type { Sealer } from '../sealer.ts';
import { loadServerRecord } from '../servers/rows.ts';
import { query } from './writer.ts';

/** pgfleet's own processes that a chaos run may kill, when it runs them (npm run chaos). */
export interface ProcessControl {
  /** SIGKILL the process, then start another in its place as a supervisor would. */
  killAndRestart(name: 'web' | 'clock' | 'router'): Promise<void>;
  /** SIGKILL the worker of this dyno name (`worker.1`) and start another under it; false when no worker of ours has it. */
  killWorker(dyno: string): Promise<boolean>;
  /** Restart the control database: an immediate shutdown (what a crash leaves) and a start. */
  restartControl(): Promise<void>;
  /** pgfleet's processes that exited by themselves between two instants (wall ms), one line each; each was started again. */
  crashes(from: number, to: number): string[];
}

/**
 * What a chaos run reaches of a deployment: its operator API, its control database (for the
 * servers' superuser passwords and the jobs table), PGFLEET_HOME (the local servers' data
 * directories, whose processes it signals), and, only when it runs them itself, pgfleet's
 * processes.
 */
export interface Deployment {
  apiUrl: string;
  token: string;
  pool: Pool;
  sealer: Sealer;
  home: string;
  processes?: ProcessControl;
}

export interface ShownServer {
  id: string;
  role: string;
  state: string;
  port: number | null;
}

export interface ShownResource {
  id: string;
  state: string;
  config: Record<string, string>;
  servers: ShownServer[];
}

export async function api<T>(dep: Deployment, method: string, route: string): Promise<T> {
  const res = await fetch(`${dep.apiUrl}/api${route}`, {
    method,
    headers: { authorization: `Bearer ${dep.token}` },
    signal: AbortSignal.timeout(3000),
  });
  if (!res.ok) throw new Error(`${method} /api${route} answered ${res.status}`);
  return (await res.json()) as T;
}

export function showResource(dep: Deployment, id: string): Promise<ShownResource> {
  return api<ShownResource>(dep, 'GET', `/resources/${id}`);
}

export interface Whole {
  primary: ShownServer;
  standby: ShownServer;
}

/**
 * Whether a database is whole, as bench:failover means it: available, its primary and
 * standby both available, the standby synchronous on the primary (asked of the primary
 * itself), and the customer's URL reaching the primary. After a fault (`since`, wall ms) also
 * both servers observed by pgfleet since: a database whose servers nobody watches any more
 * (a job held by a dead worker, a queue that lost its control database) would not survive
 * the next fault, however well it looks. The pair when it is, else what is missing.
 */
export async function whole(dep: Deployment, id: string, url: string, since?: number): Promise<Whole | string> {
  try {
    const shown = await showResource(dep, id);
    const roles = shown.servers.map((s) => `${s.role} ${s.id.slice(0, 8)} ${s.state}`).join(', ');
    const primary = shown.servers.find((s) => s.role === 'primary');
    const standby = shown.servers.find((s) => s.role === 'standby');
    const healthy = (s: ShownServer | undefined): s is ShownServer => hasTag(serverMachine, s?.state, 'healthy');
    if (!hasTag(resourceMachine, shown.state, 'healthy') || !healthy(primary) || !healthy(standby))
      return `resource ${shown.state}; ${roles}`;
    const server = await loadServerRecord(dep.pool, dep.sealer, primary.id);
    if (!server?.host || !server.port) return `the primary ${primary.id.slice(0, 8)} has no address`;
    const sync = await asSuperuser(
      { host: server.host, port: server.port, password: server.superuserPassword },
      'postgres',
      async (client) =>
        (
          await client.query<{ name: string }>(
            `select application_name as name from pg_stat_replication where sync_state = 'sync' and state = 'streaming'`,
          )
        ).rows.map((r) => r.name),
      2000,
    );
    if (!sync.includes(standby.id.replace(/-/g, '_')))
      return `the standby ${standby.id.slice(0, 8)} is not streaming synchronously (sync: ${sync.join(', ') || 'none'})`;
    const [at] = await query<{ port: number; recovery: boolean }>(
      url,
      'select inet_server_port() as port, pg_is_in_recovery() as recovery',
      2000,
    );
    if (at?.port !== primary.port || at.recovery)
      return `the URL reaches port ${at?.port} (recovery ${at?.recovery}), not the primary's ${primary.port}`;
    if (since !== undefined) {
      const { rows } = await dep.pool.query<{ id: string }>(
        `select id from servers where id = any($1::uuid[])
           and (last_observed_at is null or last_observed_at < to_timestamp($2::float8 / 1000))`,
        [[primary.id, standby.id], since],
      );
      if (rows.length) return `pgfleet has not observed ${rows.map((r) => r.id.slice(0, 8)).join(', ')} since the fault`;
    }
    return { primary, standby };
  } catch (err) {
    return `error: ${err instanceof Error ? err.message : String(err)}`;
  }
}

interface IncidentRow {
  id: string;
  entity: { id: string; kind: string; state: string | null };
  reason: string;
  state: string;
  openedAt: string;
  resolvedAt: string | null;
}

/** Incidents opened at or after `since` (wall ms) on any of `entities`, and which of them are still open. */
export async function incidentsSince(
  dep: Deployment,
  since: number,
  entities: ReadonlySet<string>,
): Promise<{ opened: IncidentRow[]; open: IncidentRow[] }> {
  const rows = await api<IncidentRow[]>(dep, 'GET', '/incidents');
  const opened = rows.filter((i) => entities.has(i.entity.id) && Date.parse(i.openedAt) >= since);
  return { opened, open: opened.filter((i) => i.resolvedAt === null) };
}

/** Jobs that died at or after `since`, as `task: first line of the error`. */
export async function deadJobsSince(dep: Deployment, since: number): Promise<string[]> {
  const rows = await api<{ task: string; deadAt: string; lastError: string | null }[]>(dep, 'GET', '/jobs/dead');
  return rows.filter((j) => Date.parse(j.deadAt) >= since).map((j) => `${j.task}: ${(j.lastError ?? '').split('\n')[0]}`);
}

/** The server ids ever linked to the databases, read from the control database. */
export async function serverIds(dep: Deployment, resources: readonly string[]): Promise<string[]> {
  const { rows } = await dep.pool.query<{ id: string }>(
    'select server_id as id from resource_servers where resource_id = any($1::uuid[])',
    [resources],
  );
  return rows.map((r) => r.id);
}
