import type { Plan } from '../src/plans.ts';
import { standbyName } from '../src/replication/standbys.ts';
import { probeTenant, type Tenant } from '../src/pg/tenant.ts';

/** States of a resource whose database serves its customer: its login is probed. */
const SERVING = ['available', 'unsynchronized', 'stalled'];

/** A resource as the control database has it: what this observer is shown to look at. */
export interface ResourceShown {
  /** The top-level state of its machine. */
  state: string | undefined;
  /** Its servers, each in its role: their machines' states, and whether their processes were last seen alive. */
  servers: { id: string; role: string; state: string; alive: string | null; host: string | null; port: number | null }[];
  tenant: Pick<Tenant, 'database' | 'role' | 'password'>;
  plan: Pick<Plan, 'standbys' | 'synchronous'>;
  /** The latest observation of one of its servers. */
  latestObservationOf(serverId: string): Promise<Record<string, string>>;
}

/**
 * What the resource's servers are doing, and whether its customer can log in. Tenants are
 * probed as a customer with `sslmode=verify-full` connects: trusting the deployment's
 * authority (`ca`) alone.
 */
export async function observeResource(
  resource: ResourceShown,
  opts: { ca: string; syncStallMs: number },
): Promise<Record<string, Record<string, string>>> {
  const { servers } = resource;
  const seen: Record<string, string> = {};
  for (const s of servers) {
    seen[`${s.role}.server`] = s.id;
    seen[`${s.role}.state`] = s.state;
    if (s.alive !== null) seen[`${s.role}.alive`] = s.alive;
  }
  const sources: Record<string, Record<string, string>> = { servers: seen };
  const primary = servers.find((s) => s.role === 'primary');
  // Only a primary that is up is worth a login: one that hangs would hold this observation up.
  if (SERVING.includes(resource.state ?? '') && primary?.state === 'available' && primary.host && primary.port) {
    sources.tenant = await probeTenant(primary.host, primary.port, resource.tenant, opts.ca);
  }
  if (resource.plan.standbys > 0 && primary)
    sources.sync = replicationSeen(
      await resource.latestObservationOf(primary.id),
      resource.plan,
      opts.syncStallMs,
      servers.find((s) => s.role === 'standby'),
    );
  return sources;
}

/**
 * How the primary's synchronous replication looks, from its latest observation (taken
 * every second while the database has a standby): whether it waits for a standby, how
 * long its commits have waited, and whether the resource's standby answers and has
 * flushed what the primary wrote. With them, the plan's choice and the stall threshold:
 * the machine judges a stall by these.
 */
function replicationSeen(
  obs: Record<string, string>,
  plan: Pick<Plan, 'synchronous'>,
  syncStallMs: number,
  standby: { id: string } | undefined,
): Record<string, string> {
  const seen: Record<string, string> = {
    'sync.mode': plan.synchronous ?? 'available',
    'sync.stall_ms': String(syncStallMs),
  };
  const copy = (from: string, to: string) => {
    if (obs[from] !== undefined) seen[to] = obs[from];
  };
  copy('synchronous_standby_names', 'sync.names');
  copy('sync_waiting', 'sync.waiting');
  copy('sync_wait_ms', 'sync.wait_ms');
  if (standby)
    for (const key of ['state', 'sync_state', 'reply_ms', 'flush_lag_bytes'])
      copy(`replica.${standbyName(standby.id)}.${key}`, `sync.standby_${key}`);
  return seen;
}
