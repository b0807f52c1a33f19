import { hasTag } from '../../machines/policy.ts';
import { serverMachine } from '../../machines/server.ts';
import type { Queryable } from '../db.ts';
import { namedRoles, pendingOwnerPassword, settleCredentials, settleRotation } from './rows.ts';
import type { Logger } from '../log.ts';
import { setRolePassword, syncNamedRoles } from '../pg/credentials.ts';
import { asSuperuser, type SuperuserTarget } from '../pg/superuser.ts';
import { probeTenant } from '../pg/tenant.ts';
import type { Job } from '../queue/jobs.ts';
import type { TaskOf } from '../tasks.ts';
import type { JobContext } from '../queue/worker.ts';
import { loadResourceRecord, resourceServers, type ResourceServer } from '../resources/rows.ts';
import { report } from '../runner/runner.ts';
import type { Sealer } from '../sealer.ts';
import { loadServerRecord, superuserTarget } from '../servers/rows.ts';

type Outcome = ReturnType<typeof report>;

/** How long a follower may take to replay a credential change before the step fails and is retried. */
const FOLLOWER_CATCH_UP_MS = 10_000;

async function primaryWal(target: SuperuserTarget): Promise<string> {
  return asSuperuser(
    target,
    'postgres',
    async (c) => (await c.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')).rows[0]!.lsn,
  );
}

async function replayed(target: SuperuserTarget, lsn: string): Promise<boolean> {
  return asSuperuser(
    target,
    'postgres',
    async (c) =>
      (await c.query<{ done: boolean }>('select coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, true) as done', [lsn])).rows[0]!.done,
  );
}

/**
 * The resource machine's credential steps: `rotate_password` (the owner's) and
 * `sync_credentials` (named ones). Each makes the primary hold what the control database
 * asks, refreshes the poolers whose auth_file holds the verifiers, and settles the rows in
 * its commit; run again at any point, it converges on the same passwords.
 */
/** Configure a server's pooler again from its catalog, after the tenants or roles on it changed. */
export type RefreshPool = (db: Queryable, serverId: string) => Promise<void>;

export function credentialTasks(
  sealer: Sealer,
  ca: string,
  refreshPool: RefreshPool,
  fail: (job: Job<TaskOf<'resource'>>, err: unknown, log: Logger) => Outcome,
) {
  async function superuser(db: Queryable, server: ResourceServer): Promise<SuperuserTarget> {
    const record = await loadServerRecord(db, sealer, server.id);
    return superuserTarget(server, record!.superuserPassword);
  }

  async function load(db: Queryable, id: string) {
    const resource = await loadResourceRecord(db, sealer, id);
    if (!resource) throw new Error(`resource ${id} does not exist`);
    const primary = (await resourceServers(db, id)).find((s) => s.role === 'primary');
    if (!primary) throw new Error('the resource has no primary server');
    return { resource, primary, target: await superuser(db, primary) };
  }

  /**
   * Log in once through the server's pooler with a password just set. pgbouncer logs in to
   * Postgres with the SCRAM keys of the last client that logged in as the role, so until a
   * client with the new password does, every new server connection of that role fails, and
   * the clients that logged in with the old one (allowed to finish) waited 120 s
   * (query_wait_timeout) for one and were cut off. This login makes the keys the new ones.
   */
  async function loginThroughPool(server: ResourceServer, login: { database: string; role: string; password: string }): Promise<void> {
    if (server.poolPort === null || server.host === null) return;
    const probe = await probeTenant(server.host, server.poolPort, login, ca, 5000);
    if (probe.reachable !== 'true')
      throw new Error(`${login.role} cannot log in through the pooler of ${server.id} with its new password: ${probe.error}`);
  }

  /**
   * Followers of the resource are physical copies: a role change reaches them by
   * replication, and their poolers must read it once it has. A follower's server that is not
   * up is skipped (its pooler is configured from its catalog when it starts); one that is up
   * must replay the change within FOLLOWER_CATCH_UP_MS, or the step fails and is retried.
   */
  async function refreshFollowers(
    db: Queryable,
    resourceId: string,
    lsn: string,
    logins: { database: string; role: string; password: string }[],
  ): Promise<void> {
    const { rows } = await db.query<{ id: string }>('select id from resources where follows = $1', [resourceId]);
    for (const follower of rows) {
      const server = (await resourceServers(db, follower.id)).find(
        (s) => s.role === 'primary' && hasTag(serverMachine, s.state, 'healthy'),
      );
      if (!server) continue;
      const target = await superuser(db, server);
      const deadline = Date.now() + FOLLOWER_CATCH_UP_MS;
      while (!(await replayed(target, lsn))) {
        if (Date.now() > deadline)
          throw new Error(`the follower ${follower.id} has not replayed the credential change within ${FOLLOWER_CATCH_UP_MS / 1000} s`);
        await new Promise((r) => setTimeout(r, 100));
      }
      await refreshPool(db, server.id);
      for (const login of logins) await loginThroughPool(server, login);
    }
  }

  return {
    /**
     * The owner's pending password (stored by the request, see requestRotation) set on the
     * primary unless it holds it already, then made current in the commit. Until then the
     * control database's current password is the old one; a crash after the server took the
     * new one leaves the pending password to set again, never a new one. With no pending
     * password (the step ran already), the primary is made to hold the current one.
     */
    async rotate_password(job: Job<'rotate_password'>, { pool, log }: JobContext): Promise<Outcome> {
      try {
        const { resource, primary, target } = await load(pool, job.entityId);
        const pending = await pendingOwnerPassword(pool, resource.id);
        const login = { ...resource.tenant, password: pending ? sealer.open(pending) : resource.tenant.password };
        await setRolePassword(target, login.role, login.password);
        await refreshPool(pool, primary.id);
        await loginThroughPool(primary, login);
        await refreshFollowers(pool, resource.id, await primaryWal(target), [login]);
        return report(job, { type: 'rotated' }, (client) => settleRotation(client, resource.id, pending));
      } catch (err) {
        return fail(job, err, log);
      }
    },

    async sync_credentials(job: Job<'sync_credentials'>, { pool, log }: JobContext): Promise<Outcome> {
      try {
        const { resource, primary, target } = await load(pool, job.entityId);
        const roles = await namedRoles(pool, sealer, resource.id);
        await syncNamedRoles(target, resource.tenant, roles);
        await refreshPool(pool, primary.id);
        const logins = roles
          .filter((r) => !r.destroy && r.pendingSealed !== null)
          .map((r) => ({ database: resource.tenant.database, role: r.role, password: r.password }));
        for (const login of logins) await loginThroughPool(primary, login);
        await refreshFollowers(pool, resource.id, await primaryWal(target), logins);
        return report(job, { type: 'credentials.synced' }, (client) => settleCredentials(client, resource.id, roles));
      } catch (err) {
        return fail(job, err, log);
      }
    },
  };
}
