import { observeResource } from '../../observers/resource.ts';
import type { Addon } from '../config.ts';
import type { Client, Queryable } from '../db.ts';
import type { PgBinaries } from '../pg/binaries.ts';
import {
  desynchronize,
  promoteStandby,
  repointStandby,
  standbyName,
  StandbysNotSynchronous,
  synchronizeStandbys,
  syncProgress,
} from '../replication/standbys.ts';
import { copyTenant, createTenant, dropTenant, freezeTenant, probeTenant, setTenantLimits, thawTenant } from '../pg/tenant.ts';
import { deliver } from '../platform.ts';
import { credentialTasks, type RefreshPool } from '../credentials/tasks.ts';
import { namedRoleNames, namedRoles } from '../credentials/rows.ts';
import { syncNamedRoles } from '../pg/credentials.ts';
import type { ProbeConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import { enqueueAgain, type Job } from '../queue/jobs.ts';
import type { JobContext, JobHandler, TaskHandlers } from '../queue/worker.ts';
import type { TaskOf } from '../tasks.ts';
import type { ResourceTask } from '../../machines/resource.ts';
import { linkServer, placeResource } from './placement.ts';
import {
  loadResourceRecord,
  relinkServer,
  resourceServers,
  storeOauthTokens,
  takeOver,
  unlinkServer,
  type ResourceRecord,
  type ResourceServer,
} from './rows.ts';
import { resourceConfig } from './config.ts';
import { report, sendEvent } from '../runner/runner.ts';
import type { Observation, Observer } from '../runner/observe.ts';
import { latestObservation } from '../runner/observations.ts';
import { machineState } from '../runner/store.ts';
import type { Sealer } from '../sealer.ts';
import { openArchive, serverArchivePrefix, type ArchiveTarget } from '../store/open.ts';
import { archiveAhead } from '../wal/archive.ts';
import {
  followersOf,
  followLeader,
  insertFollower,
  loadServerRecord,
  requestBackup,
  serverAddress,
  superuserTarget,
} from '../servers/rows.ts';
import type { TlsOptions } from '../servers/certificates.ts';

export interface ResourceTaskOptions {
  sealer: Sealer;
  /** The provider new servers are made on. */
  provider: string;
  /** `max_connections` of a new shared server. */
  sharedMaxConnections: number;
  addon: Addon;
  configPrefix: string;
  binaries: PgBinaries;
  /** Where servers archive their WAL. */
  archive: ArchiveTarget;
  /** Tenants are probed as a customer with `sslmode=verify-full` connects: trusting this authority alone. */
  tls: TlsOptions;
  probe: ProbeConfig;
}

type Outcome = { commit: (client: Client) => Promise<void> };

/**
 * How soon `synchronize` looks again while no standby is synchronous and caught up: a
 * standby takes the reload within milliseconds and confirms a flush at once, so most steps
 * end at the second attempt; it polled every 100 ms in place before.
 */
const SYNC_RECHECK_SECONDS = 0.2;

/**
 * A step of the resource machine: whatever goes wrong is reported as `step.failed`, for the
 * machine to retry with backoff and, in the end, to show as failed.
 */
function step<T extends TaskOf<'resource'>>(fn: (job: Job<T>, ctx: JobContext) => Promise<Outcome>): JobHandler<T> {
  return async (job, ctx) => {
    try {
      return await fn(job, ctx);
    } catch (err) {
      return failed(job, err, ctx.log);
    }
  };
}

function failed(job: Job<TaskOf<'resource'>>, err: unknown, log: Logger): Outcome {
  log.warn({ err }, `${job.task} failed`);
  return report(job, { type: 'step.failed', error: (err as Error).message });
}

export function resourceTasks(opts: ResourceTaskOptions, refreshPool: RefreshPool) {
  const { sealer } = opts;

  async function load(db: Queryable, job: { entityId: string }): Promise<{ resource: ResourceRecord; servers: ResourceServer[] }> {
    const resource = await loadResourceRecord(db, sealer, job.entityId);
    if (!resource) throw new Error(`resource ${job.entityId} does not exist`);
    return { resource, servers: await resourceServers(db, resource.id) };
  }

  function withRole(servers: ResourceServer[], role: ResourceServer['role']): ResourceServer {
    const server = servers.find((s) => s.role === role);
    if (!server) throw new Error(`the resource has no ${role} server`);
    return server;
  }

  async function superuser(db: Queryable, server: Pick<ResourceServer, 'id' | 'host' | 'port'>) {
    const record = await loadServerRecord(db, sealer, server.id);
    return superuserTarget(server, record!.superuserPassword);
  }

  /**
   * Take the tenant off servers it no longer lives on: dropped now from shared ones; in the
   * job's commit, dedicated ones are deleted and every link goes.
   */
  /**
   * Where the tenant is gone or a failover is under way, a pooler that cannot be refreshed
   * must not hold the step up: a dropped tenant's entry lets nobody in, and a running
   * pooler of a promoted standby already knows its tenants.
   */
  async function refreshPoolOrWarn(db: Queryable, serverId: string, log: Logger): Promise<void> {
    await refreshPool(db, serverId).catch((err: unknown) => log.warn({ err, server: serverId }, 'the pooler was not refreshed'));
  }

  async function release(
    db: Queryable,
    log: Logger,
    resource: ResourceRecord,
    gone: ResourceServer[],
  ): Promise<(client: Client) => Promise<void>> {
    const others = await namedRoleNames(db, resource.id);
    for (const server of gone) {
      if (server.tenancy !== 'shared' || server.finished) continue;
      await dropTenant(await superuser(db, server), resource.tenant, others);
      await refreshPoolOrWarn(db, server.id, log);
    }
    return async (client) => {
      for (const server of gone) {
        if (server.tenancy === 'dedicated') await sendEvent<'server'>(client, server.id, { type: 'delete' });
        await unlinkServer(client, resource.id, server.id);
      }
    };
  }

  return {
    ...credentialTasks(sealer, opts.tls.authority.certificate, refreshPool, failed),

    place: step(async (job, { pool }) => {
      const { resource } = await load(pool, job);
      return report(job, { type: 'placed' }, async (client) => {
        const role = (await machineState(client, resource.id)) === 'changing' ? 'target' : 'primary';
        await placeResource(client, { sealer, provider: opts.provider, sharedMaxConnections: opts.sharedMaxConnections }, resource, role);
      });
    }),

    create_tenant: step(async (job, { pool }) => {
      const { resource, servers } = await load(pool, job);
      const primary = withRole(servers, 'primary');
      if (resource.follows) {
        // A follower is a copy: its tenant came with the backup; it must only be able to log in.
        const probe = await probeTenant(primary.host!, primary.port!, resource.tenant, opts.tls.authority.certificate);
        if (probe.reachable !== 'true') throw new Error(`the follower does not let its tenant in yet: ${probe.error}`);
      } else {
        await createTenant(await superuser(pool, primary), resource.tenant);
      }
      // The pooled URL handed out with the config must let the tenant in at once.
      await refreshPool(pool, primary.id);
      return report(job, { type: 'tenant.created', standby: resource.plan.standbys > 0 });
    }),

    /** A standby of the primary on a server of its own, from a fresh base backup of it. */
    place_standby: step(async (job, { pool }) => {
      const { resource, servers } = await load(pool, job);
      const primary = withRole(servers, 'primary');
      return report(job, { type: 'placed' }, async (client) => {
        if (servers.some((s) => s.role === 'standby')) return;
        const standby = await insertFollower(client, primary.id, await requestBackup(client, primary.id));
        if (!standby) throw new Error(`the primary ${primary.id} is not available to build a standby from`);
        await linkServer(client, resource.id, standby, 'standby');
      });
    }),

    /**
     * Make the standby synchronous: the primary acknowledges a commit only once the standby
     * has written it, so losing the primary loses no acknowledged transaction. Until the
     * standby confirms, the job ends and is asked again with how far it got, leaving the
     * resource's other actions free meanwhile.
     */
    synchronize: step(async (job, { pool }) => {
      const { resource, servers } = await load(pool, job);
      const standbys = servers.filter((s) => s.role === 'standby').map((s) => standbyName(s.id));
      // Made synchronous again after a stall, it streams already: commits wait for it no longer than a stall.
      const resync = (await machineState(pool, resource.id)) === 'unsynchronized';
      const primary = await superuser(pool, withRole(servers, 'primary'));
      try {
        await synchronizeStandbys(primary, standbys, resync ? opts.probe.syncStallMs : undefined, syncProgress(job.payload.sync));
      } catch (err) {
        if (!(err instanceof StandbysNotSynchronous)) throw err;
        const sync = err.progress;
        return { commit: (client) => enqueueAgain(client, job, SYNC_RECHECK_SECONDS, { ...job.payload, sync }) };
      }
      return report(job, { type: 'synchronized' });
    }),

    /**
     * The standby stalled: the primary stops waiting for it, and the commits that waited go
     * through. The standby streams on as it can; it is made synchronous again once caught up.
     */
    desynchronize: step(async (job, { pool }) => {
      const { servers } = await load(pool, job);
      await desynchronize(await superuser(pool, withRole(servers, 'primary')));
      return report(job, { type: 'desynchronized' });
    }),

    /** Tell the old primary's machine to fence it; the resource waits until it is fenced. */
    fence_primary: step(async (job, { pool }) => {
      const { servers } = await load(pool, job);
      const primary = withRole(servers, 'primary');
      return report(job, { type: 'fencing' }, async (client) => void (await sendEvent<'server'>(client, primary.id, { type: 'fence' })));
    }),

    /** The standby becomes the primary, with every commit the old one acknowledged. */
    promote: step(async (job, { pool, log }) => {
      const { resource, servers } = await load(pool, job);
      const standby = withRole(servers, 'standby');
      const store = openArchive(opts.archive);
      const prefix = serverArchivePrefix(withRole(servers, 'primary').id);
      await promoteStandby(await superuser(pool, standby), (timeline, position) => archiveAhead(store, prefix, timeline, position));
      // Promoted, it has replayed every change to the tenants: its pooler learns the latest.
      await refreshPoolOrWarn(pool, standby.id, log);
      return report(job, { type: 'promoted' }, (client) => takeOver(client, resource.id, 'standby'));
    }),

    /**
     * After a failover: the fenced old primary comes back as a standby of the new one (its
     * machine rewinds it, or rebuilds it from a fresh base backup of the new primary, which
     * is on its own timeline).
     */
    restore_standby: step(async (job, { pool }) => {
      const { resource, servers } = await load(pool, job);
      const primary = withRole(servers, 'primary');
      const former = servers.find((s) => s.role === 'former' && s.state === 'fenced');
      // The old primary's followers (read-only copies, follower resources) stream from the new one.
      const followers = former ? await followersOf(pool, former.id) : [];
      for (const follower of followers) {
        await repointStandby(await superuser(pool, follower), serverAddress(primary), follower.id);
      }
      return report(job, { type: 'placed' }, async (client) => {
        if (servers.some((s) => s.role === 'standby')) return;
        if (!former) throw new Error('the resource has no fenced former primary to bring back');
        const backup = await requestBackup(client, primary.id);
        for (const follower of followers) await followLeader(client, follower.id, primary.id, backup);
        await followLeader(client, former.id, primary.id, backup);
        await relinkServer(client, resource.id, former.id, 'standby');
        await sendEvent<'server'>(client, former.id, { type: 'rejoin' });
      });
    }),

    /** Off a plan with standbys: first the primary stops waiting for them, or its commits would hang once they go. */
    drop_standby: step(async (job, { pool, log }) => {
      const { resource, servers } = await load(pool, job);
      await desynchronize(await superuser(pool, withRole(servers, 'primary')));
      return report(
        job,
        { type: 'standby.dropped' },
        await release(
          pool,
          log,
          resource,
          servers.filter((s) => s.role === 'standby'),
        ),
      );
    }),

    apply_plan: step(async (job, { pool }) => {
      const { resource, servers } = await load(pool, job);
      const primary = withRole(servers, 'primary');
      await setTenantLimits(await superuser(pool, primary), resource.tenant);
      await refreshPool(pool, primary.id);
      return report(job, { type: 'applied' });
    }),

    /**
     * Stop writes where the database is, then copy every committed row to the target. The
     * target only becomes the primary in this job's commit, and the tenant logs in there
     * only in the next step: a repeated copy replaces one that nobody has written to yet.
     */
    move: step(async (job, { pool }) => {
      const { resource, servers } = await load(pool, job);
      const from = await superuser(pool, withRole(servers, 'primary'));
      const to = await superuser(pool, withRole(servers, 'target'));
      // Named credentials may write too: they stop with the owner.
      const others = await namedRoleNames(pool, resource.id);
      await freezeTenant(from, resource.tenant, others);
      try {
        await copyTenant(opts.binaries, from, to, resource.tenant);
      } catch (err) {
        // The step waits out a backoff before it copies again: meanwhile the tenant works
        // where its data still is, rather than being locked out for minutes.
        await thawTenant(from, resource.tenant, others);
        throw err;
      }
      return report(job, { type: 'moved' }, (client) => takeOver(client, resource.id, 'target'));
    }),

    activate: step(async (job, { pool }) => {
      const { resource, servers } = await load(pool, job);
      const primary = withRole(servers, 'primary');
      const target = await superuser(pool, primary);
      await thawTenant(target, resource.tenant);
      // The copy carries no roles nor grants: named credentials are made again on the new server.
      await syncNamedRoles(target, resource.tenant, await namedRoles(pool, sealer, resource.id));
      await refreshPool(pool, primary.id);
      return report(job, { type: 'activated' });
    }),

    cleanup: step(async (job, { pool, log }) => {
      const { resource, servers } = await load(pool, job);
      return report(
        job,
        { type: 'cleaned' },
        await release(
          pool,
          log,
          resource,
          servers.filter((s) => s.role === 'former'),
        ),
      );
    }),

    drop_tenant: step(async (job, { pool, log }) => {
      const { resource, servers } = await load(pool, job);
      return report(job, { type: 'dropped' }, await release(pool, log, resource, servers));
    }),

    /** Hand the platform the config; failures are the machine's to retry, forever if need be. */
    async deliver(job: Job<'deliver'>, { pool, log }: JobContext): Promise<Outcome> {
      try {
        const { resource, servers } = await load(pool, job);
        if (resource.callbackUrl) {
          const { rows } = await pool.query<{ reported: boolean }>(
            `select attrs ? 'provision_reported' as reported from resources where id = $1`,
            [resource.id],
          );
          await deliver(
            opts.addon,
            {
              callbackUrl: resource.callbackUrl,
              oauthGrant: resource.oauthGrant,
              tokens: resource.oauthTokens,
              config: resourceConfig(
                opts.configPrefix,
                resource.tenant,
                servers.find((s) => s.role === 'primary'),
                resource.route,
              ),
              reportProvisioned: !rows[0]?.reported,
            },
            (tokens) => storeOauthTokens(pool, sealer, resource.id, tokens),
          );
        }
        return report(job, { type: 'delivered' }, async (client) => {
          await client.query(`update resources set attrs = attrs || hstore('provision_reported', 'true') where id = $1`, [resource.id]);
        });
      } catch (err) {
        log.warn({ err }, 'handing the config to the platform failed');
        return report(job, { type: 'delivery.failed', error: (err as Error).message });
      }
    },

    /** What the resource's servers are doing, and whether its customer can log in (observers/resource.ts). */
    async observe(job: Job<'observe'>, { pool }: JobContext): Promise<Observation> {
      const { resource, servers } = await load(pool, job);
      const shown = {
        state: await machineState(pool, resource.id),
        servers,
        tenant: resource.tenant,
        plan: resource.plan,
        latestObservationOf: async (id: string) => (await latestObservation(pool, id, 'servers'))?.obs ?? {},
      };
      const sources = await observeResource(shown, { ca: opts.tls.authority.certificate, syncStallMs: opts.probe.syncStallMs });
      // Nothing here is a server down or a commit waiting: the servers' own observations say those.
      return { sources, urgent: false, dependentsNow: false };
    },
  } satisfies Pick<TaskHandlers, Exclude<ResourceTask, 'observe'>> & { observe: Observer };
}
