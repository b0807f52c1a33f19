import { statesTagged } from '../../machines/policy.ts';
import { resourceMachine } from '../../machines/resource.ts';
import { serverMachine } from '../../machines/server.ts';
import type { Queryable } from '../db.ts';
import { transaction } from '../db.ts';
import { findPlan } from '../plans.ts';
import { govern, type Governed, type GovernedTenant } from '../pg/governor.ts';
import type { Providers } from '../providers/registry.ts';
import { deliverNotifications, noticeToResource } from '../notifications.ts';
import { enqueueUnlessQueued } from '../queue/jobs.ts';
import type { TaskHandlers } from '../queue/worker.ts';
import type { Sealer } from '../sealer.ts';
import { loadServerRecord } from '../servers/rows.ts';

/**
 * Plans' limits on shared servers, held from outside the tenants' sessions (src/pg/governor.ts):
 * every ENFORCE_EVERY_SECONDS the clock asks for one `enforce` job per shared server; it
 * looks at the server's tenants, puts back what a tenant undid, and records each database's
 * size on its resource. A tenant whose database passes its size is told why its writes are
 * refused, and told again when they are back.
 */
export const ENFORCE_EVERY_SECONDS = 2;

interface TenantRow extends GovernedTenant {
  id: string;
  sizeBytes: number | undefined;
  overSize: boolean;
}

async function tenantsOf(db: Queryable, serverId: string): Promise<TenantRow[]> {
  // Named credentials log in to the same database: the plan holds them as it holds the owner.
  const { rows } = await db.query<{
    id: string;
    plan: string;
    database: string;
    role: string;
    others: string[];
    size: string | null;
    over: string | null;
  }>(
    `select r.id, r.plan, r.database_name as database, r.role_name as role, r.attrs->'size_bytes' as size, r.attrs->'over_size' as over,
       array(select c.role_name from credentials c where c.resource_id = r.id order by c.role_name) as others
     from resource_servers rs join resources r on r.id = rs.resource_id join entity_states m on m.entity_id = r.id
     where rs.server_id = $1 and rs.role = 'primary' and m.finished_at is null and not (m.state = any($2::text[]))`,
    [serverId, statesTagged(resourceMachine, 'gone')],
  );
  return rows.flatMap((r) => {
    const plan = findPlan(r.plan);
    if (!plan) return [];
    return [
      {
        id: r.id,
        database: r.database,
        role: r.role,
        others: r.others,
        statementTimeoutMs: plan.statementTimeoutMs,
        sizeLimitBytes: plan.sizeLimitBytes,
        memoryLimitBytes: plan.memoryLimitBytes,
        sizeBytes: r.size === null ? undefined : Number(r.size),
        overSize: r.over === 'true',
      },
    ];
  });
}

const gib = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(bytes < 1024 ** 3 ? 2 : 1)} GB`;

/**
 * What one look found, kept on the resource: its database's size, and whether it is over its
 * plan's. A change either way tells the customer, in the same transaction.
 */
export async function recordUsage(
  db: Queryable,
  tenant: Pick<TenantRow, 'id' | 'overSize' | 'sizeLimitBytes'>,
  governed: Pick<Governed, 'sizeBytes' | 'overSize'>,
): Promise<void> {
  await db.query(`update resources set attrs = attrs || hstore(array['size_bytes', 'over_size'], array[$2, $3]) where id = $1`, [
    tenant.id,
    String(governed.sizeBytes),
    String(governed.overSize),
  ]);
  if (governed.overSize && !tenant.overSize) {
    await noticeToResource(db, tenant.id, {
      phase: 'size_limit',
      subject: "Your database is over its plan's size: writes are refused",
      body:
        `Your database holds ${gib(governed.sizeBytes)}, more than the ${gib(tenant.sizeLimitBytes)} its plan allows, ` +
        'so new transactions are read-only and sessions that keep writing are ended. Your data is safe and readable. ' +
        'Delete data (DELETE, TRUNCATE or DROP in a transaction begun with BEGIN READ WRITE) or move to a larger plan, ' +
        'and writes come back within seconds.',
    });
  } else if (!governed.overSize && tenant.overSize) {
    await noticeToResource(db, tenant.id, {
      phase: 'size_ok',
      subject: "Your database is within its plan's size again",
      body:
        `Your database holds ${gib(governed.sizeBytes)}, within the ${gib(tenant.sizeLimitBytes)} its plan allows: ` +
        'writes are accepted again.',
    });
  }
}

export function limitTasks(providers: Providers, sealer: Sealer): Pick<TaskHandlers, 'enforce' | 'notify_resource'> {
  return {
    /**
     * One look at a shared server's tenants. A server that does not answer is its machine's
     * business, not this job's: the failure is logged and the next look comes in seconds.
     */
    async enforce(job, { pool, log }) {
      const serverId = job.payload.server;
      const server = await loadServerRecord(pool, sealer, serverId);
      const provider = server && providers[server.provider];
      if (!server?.host || !server.port || !provider) return;
      const tenants = await tenantsOf(pool, serverId);
      let governed: Governed[];
      try {
        governed = await govern({ host: server.host, port: server.port, password: server.superuserPassword }, tenants, {
          previousSizes: Object.fromEntries(tenants.flatMap((t) => (t.sizeBytes === undefined ? [] : [[t.database, t.sizeBytes]]))),
          memoryOf: (pids) => provider.host(server).processMemory(pids),
        });
      } catch (err) {
        log.warn({ err, server: serverId }, "could not enforce the plans' limits on this server");
        return;
      }
      await transaction(pool, async (client) => {
        for (const [i, g] of governed.entries()) {
          const tenant = tenants[i]!;
          if (g.cancelled.length > 0 || g.terminated.length > 0 || g.settingsRestored) {
            log.info(
              { resource: tenant.id, cancelled: g.cancelled, terminated: g.terminated, settingsRestored: g.settingsRestored },
              'held a tenant to its plan',
            );
          }
          await recordUsage(client, tenant, g);
        }
      });
    },
    async notify_resource(job, { pool }) {
      await deliverNotifications(pool, { resource: job.payload.resource });
    },
  };
}

/** One `enforce` job per live shared server, unless one is pending or running: the clock's part. */
export async function enqueueEnforcement(db: Queryable, queue: string): Promise<number> {
  const { rows } = await db.query<{ id: string }>(
    `select s.id from servers s join entity_states m on m.entity_id = s.id where s.tenancy = 'shared' and m.state = any($1::text[])`,
    [statesTagged(serverMachine, 'healthy')],
  );
  return enqueueUnlessQueued(
    db,
    'enforce',
    queue,
    rows.map((r) => ({ server: r.id })),
  );
}
