import { hasTag } from '../../machines/policy.ts';
import { serverMachine } from '../../machines/server.ts';
import { observePooler } from '../../observers/pgbouncer.ts';
import { observePostgres } from '../../observers/postgres.ts';
import { observeProvider } from '../../observers/provider.ts';
import { observeTls } from '../../observers/tls.ts';
import type { ProbeConfig } from '../config.ts';
import type { Client, Pool, Queryable } from '../db.ts';
import type { Logger } from '../log.ts';
import type { Provider, ServerRecord } from '../providers/provider.ts';
import { providerOf, type Providers } from '../providers/registry.ts';
import { initializeServer } from '../replication/initialize.ts';
import { BackupNotFinished, NotYet } from '../replication/notYet.ts';
import { rejoinAsStandby } from '../replication/rejoin.ts';
import { enqueueAgain, hurryJob, jobLive, recentlyDead, type Job } from '../queue/jobs.ts';
import type { JobContext, TaskHandlers } from '../queue/worker.ts';
import type { ServerTask } from '../../machines/server.ts';
import { openArchive, serverArchivePrefix, type ArchiveTarget } from '../store/open.ts';
import { findBackup } from '../wal/backup.ts';
import type { Observation, Observer, Sources } from '../runner/observe.ts';
import { latestObservation } from '../runner/observations.ts';
import { report, sendEvent } from '../runner/runner.ts';
import { machineState } from '../runner/store.ts';
import type { Sealer } from '../sealer.ts';
import { followLeader, loadServerRecord, placeServer, requestBackup, standbyTakesOver } from './rows.ts';
import { issueFor, type TlsOptions } from './certificates.ts';

async function serverFor(
  pool: Pool,
  job: Job<ServerTask>,
  providers: Providers,
  sealer: Sealer,
): Promise<{ server: ServerRecord; provider: Provider }> {
  const server = await loadServerRecord(pool, sealer, job.entityId);
  if (!server) throw new Error(`server ${job.entityId} does not exist`);
  return { server, provider: providerOf(providers, server) };
}

/**
 * Once Postgres is up, its pooler: a pooler that cannot start must not count against the
 * server (a restart would kill a healthy Postgres for it), so this only warns; the
 * observation then finds it dead and the machine asks for `restart_pool`.
 */
async function startPool(provider: Provider, server: ServerRecord, log: Logger): Promise<void> {
  try {
    await provider.host(server).refreshPool();
  } catch (err) {
    log.warn({ err }, 'the pooler did not start');
  }
}

/** Configure the pooler of a server from its catalog again, after its tenants changed. */
export async function refreshServerPool(db: Queryable, providers: Providers, sealer: Sealer, serverId: string): Promise<void> {
  const server = await loadServerRecord(db, sealer, serverId);
  if (!server) throw new Error(`server ${serverId} does not exist`);
  await providerOf(providers, server).host(server).refreshPool();
}

/** How soon a step that could not be done yet (NotYet) is asked for again. */
const NOT_YET_SECONDS = 1;
/**
 * Fresh backups of a leader asked for while this many of its backup jobs died in the last
 * 10 minutes: a backup that fails whatever the timing (a broken archive) must not be asked
 * for again every few seconds. Its dead jobs page; the waiting server keeps asking.
 */
const FRESH_BACKUPS_PER_10_MIN = 3;

/**
 * The provider could not do the step yet: the job ends and asks for itself again shortly,
 * rather than sleeping in place or spending its attempts towards a dead job. When what it
 * waits for is a backup that can no longer finish (its job died, or is gone and no backup
 * was made: a rebuild had waited 90 s a time for such a label, for good), a fresh backup of
 * the leader is asked for first, once the leader is available to take it; a backup job
 * waiting out a retry (its leader was down) is run at once when the leader is back.
 */
async function askAgain<T extends ServerTask>(
  pool: Pool,
  job: Job<T>,
  server: ServerRecord,
  err: NotYet,
  archive: ArchiveTarget,
  log: Logger,
): Promise<{ commit: (client: Client) => Promise<void> }> {
  let freshBackupOf: string | undefined;
  if (err instanceof BackupNotFinished) {
    // The job first: once it is done, its backup is in the store.
    const coming = err.label !== undefined && (await jobLive(pool, 'backup', { label: err.label }));
    const made =
      err.label !== undefined &&
      !coming &&
      (await findBackup(openArchive(archive), serverArchivePrefix(err.leader), err.label)) !== undefined;
    const leader = await machineState(pool, err.leader);
    // A leader that is gone takes no backup again: a failure to see, not a wait.
    if (!coming && !made && (leader === undefined || leader === 'deleting' || leader === 'deleted'))
      throw new Error(`${err.message}, and the leader is ${leader ?? 'gone'}`);
    if (
      !coming &&
      !made &&
      hasTag(serverMachine, leader, 'healthy') &&
      (await recentlyDead(pool, 'backup', { server: err.leader }, 600)) < FRESH_BACKUPS_PER_10_MIN
    )
      freshBackupOf = err.leader;
    if (coming && hasTag(serverMachine, leader, 'healthy') && (await hurryJob(pool, 'backup', { label: err.label! })))
      log.info({ label: err.label }, 'the leader is back: its backup is retried now');
  }
  log.info({ reason: err.message, freshBackupOf }, 'not yet: asking again');
  return {
    commit: async (client) => {
      if (freshBackupOf) await followLeader(client, server.id, freshBackupOf, await requestBackup(client, freshBackupOf));
      await enqueueAgain(client, job, NOT_YET_SECONDS);
    },
  };
}

/**
 * The server tasks. Each does one thing to the world and reports it to the machine as an
 * event; an unexpected error is thrown, so the queue retries it and, in the end, shows it
 * as a dead job. Start and restart report failure as an event instead: counting failed
 * restarts is the machine's decision.
 */
export function serverTasks(providers: Providers, sealer: Sealer, probe: ProbeConfig, tls: TlsOptions, archive: ArchiveTarget) {
  return {
    async provision(job, { pool }) {
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      const place = await provider.provision(server);
      return {
        commit: async (client) => {
          await placeServer(client, server.id, place.host, place.port, place.attrs);
          await sendEvent<'server'>(client, server.id, { type: 'provisioned' }, job.id);
        },
      };
    },
    async initialize(job, { pool, log }) {
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      try {
        await initializeServer(provider.host(server), server, await issueFor(server, tls), archive);
      } catch (err) {
        if (err instanceof NotYet) return askAgain(pool, job, server, err, archive, log);
        throw err;
      }
      return report(job, { type: 'initialized' });
    },
    async start(job, { pool, log }) {
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      try {
        await provider.host(server).start();
        await startPool(provider, server, log);
        return report(job, { type: 'started' });
      } catch (err) {
        log.warn({ err }, 'start failed');
        return report(job, { type: 'start.failed', error: (err as Error).message.slice(0, 1000) });
      }
    },
    async restart(job, { pool, log }) {
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      try {
        // A primary whose standby is up is the failover's to replace, which is faster than a
        // restart and cannot race it; asked first, so its fence does not wait for a probe.
        if (await standbyTakesOver(pool, server.id)) {
          log.info('a standby takes over from this primary; not restarting it');
          return;
        }
        // Re-check before acting: a server that answers again is not restarted.
        const answer = await observePostgres(
          { host: server.host!, port: server.port!, password: server.superuserPassword },
          probe.timeoutMs,
        );
        // A failover may have begun while this waited: a server being fenced must not come back.
        const state = await machineState(pool, server.id);
        if (state !== 'restarting' && state !== 'failed') {
          log.info({ state }, 'the server is no longer waiting for a restart; not restarting it');
          return;
        }
        if (answer.reachable === 'true') log.info('server answers again; not restarting it');
        else await provider.host(server).restart();
        await startPool(provider, server, log);
        return report(job, { type: 'restarted' });
      } catch (err) {
        log.warn({ err }, 'restart failed');
        return report(job, { type: 'restart.failed', error: (err as Error).message.slice(0, 1000) });
      }
    },
    /** A planned restart: a clean stop (sessions end, a checkpoint) and a start. */
    async maintain(job, { pool, log }) {
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      try {
        await provider.host(server).stop();
        await provider.host(server).start();
        await startPool(provider, server, log);
        return report(job, { type: 'restarted' });
      } catch (err) {
        log.warn({ err }, 'maintenance restart failed');
        return report(job, { type: 'restart.failed', error: (err as Error).message.slice(0, 1000) });
      }
    },
    /** Stop it hard and leave it stopped: a fenced server must not take a write. */
    async fence(job, { pool }) {
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      await provider.host(server).stop('kill');
      return report(job, { type: 'fenced' });
    },
    /**
     * Only from `rejoining`: a fresh observation may have queued the job again while it ran,
     * and a server that already rejoined must not be stopped and rewound a second time.
     */
    async rejoin(job, { pool, log }) {
      if ((await machineState(pool, job.entityId)) !== 'rejoining') return;
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      let rejoined;
      try {
        rejoined = await rejoinAsStandby(provider.host(server), server, archive);
      } catch (err) {
        if (err instanceof NotYet) return askAgain(pool, job, server, err, archive, log);
        throw err;
      }
      log.info({ leader: server.attrs.follows, ...rejoined }, 'the former primary rejoined as a standby');
      await startPool(provider, server, log);
      return report(job, { type: 'rejoined' });
    },
    /**
     * The pooler of an available server was seen dead: start it again. Only while it is
     * available: a server being fenced or stopped must not get its pooler back.
     */
    async restart_pool(job, { pool, log }) {
      const state = await machineState(pool, job.entityId);
      if (!hasTag(serverMachine, state, 'healthy')) {
        log.info({ state }, 'the server is not available; not starting its pooler');
        return;
      }
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      await provider.host(server).refreshPool();
    },
    async destroy(job, { pool }) {
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      await provider.destroy(server);
      return report(job, { type: 'destroyed' });
    },
    async observe(job: Job<'observe'>, { pool }: JobContext): Promise<Observation> {
      const { server, provider } = await serverFor(pool, job, providers, sealer);
      const sources: Sources = { provider: await observeProvider(provider, server) };
      if (server.host !== null && server.port !== null) {
        // Side by side: a hung server must not make the observation wait for two timeouts.
        const poolPort = server.attrs.pool_port ? Number(server.attrs.pool_port) : undefined;
        const [postgres, tls, pgbouncer] = await Promise.all([
          observePostgres({ host: server.host, port: server.port, password: server.superuserPassword }, probe.timeoutMs),
          observeTls(server.host, server.port, probe.timeoutMs),
          poolPort === undefined ? undefined : observePooler(server.host, poolPort, server.superuserPassword, probe.timeoutMs),
        ]);
        Object.assign(sources, { postgres, tls }, pgbouncer ? { pgbouncer } : {});
      }
      // How the probe judged, kept with what it saw: the failed probes in a row, counted here
      // because several observations can come before the machine sees one, and the run that
      // makes a hang. A server's observations run one at a time (one lane of its queue), so
      // nothing counts in between; a healthy server (the common case) needs no look at its
      // last observation.
      const failed =
        sources.postgres?.reachable === 'false'
          ? Number((await latestObservation(pool, server.id, 'servers'))?.obs.failed_probes ?? 0) + 1
          : 0;
      sources.probe = { timeout_ms: String(probe.timeoutMs), hang_probes: String(probe.hangProbes), failed_probes: String(failed) };
      // Down: the tick is urgent, from the first failed probe of a hang.
      const down = sources.postgres?.reachable === 'false' || sources.provider?.alive === 'false';
      // Commits on this server have waited for a standby past the stall threshold: the
      // databases it serves judge that now, not at their next routine observation.
      const stalled = Number(sources.postgres?.sync_waiting) > 0 && Number(sources.postgres?.sync_wait_ms) > probe.syncStallMs;
      return { sources, urgent: down, dependentsNow: stalled };
    },
  } satisfies Pick<TaskHandlers, Exclude<ServerTask, 'observe'>> & { observe: Observer };
}
