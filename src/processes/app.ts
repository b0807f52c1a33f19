import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pathToFileURL } from 'node:url';
import { configVarPrefix, type Config } from '../config.ts';
import { Clock } from './clock.ts';
import { addonSecrets, encryptionKey, operatorToken, startEmbeddedControl } from '../control.ts';
import { createPool, type Pool } from '../db.ts';
import type { Logger } from '../log.ts';
import { migrate } from '../migrate.ts';
import { findPgBinaries } from '../pg/binaries.ts';
import { controlIdentity, PgCluster, pgIdentity } from '../pg/cluster.ts';
import { findPgbouncer, Pgbouncer } from '../pg/pgbouncer.ts';
import { makeProviders, type Providers } from '../providers/registry.ts';
import { Worker } from '../queue/worker.ts';
import { Sealer } from '../sealer.ts';
import { incidentJournal } from '../incidents/escalation.ts';
import { HealthServer } from '../health.ts';
import { createMetrics } from '../metrics.ts';
import { Router } from './router.ts';
import { wireSubscribers } from './subscribers.ts';
import { workerTasks } from './tasks.ts';
import { certificateAuthority } from '../tls/authority.ts';
import { buildWeb, metricsServer } from '../web/server.ts';

export type ProcessName = 'web' | 'worker' | 'clock' | 'router';

export interface Running {
  pool: Pool;
  databaseUrl: string;
  /** Where the web process listens, when it runs. */
  url: string | undefined;
  web: FastifyInstance | undefined;
  operatorToken: string;
  sealer: Sealer;
  providers: Providers;
  /** The deployment's CA certificate (PEM), which customers check their servers' certificates with. */
  caCertificate: string;
  stop(): Promise<void>;
}

export function localCluster(config: Config, binaries = findPgBinaries(config.pgBin)): PgCluster {
  return new PgCluster(binaries, pgIdentity(config.pgUser));
}

/** The embedded control database's own cluster, run by a user of its own (src/pg/cluster.ts controlIdentity). */
export function controlCluster(config: Config, binaries = findPgBinaries(config.pgBin)): PgCluster {
  return new PgCluster(binaries, controlIdentity(config.controlPgUser, pgIdentity(config.pgUser)));
}

/**
 * The pgbouncer that runs in front of every server, looked for once at start-up. Without
 * one pgfleet still runs: its servers get no pooler and its databases no pooled URL.
 */
function pooler(config: Config, cluster: PgCluster, log: Logger): Pgbouncer | undefined {
  const bin = findPgbouncer(config.pgbouncerBin);
  if (bin) return new Pgbouncer(bin, cluster);
  log.warn(
    'pgbouncer not found: install the Debian package pgbouncer (or set PGBOUNCER_BIN); ' +
      'new servers get no connection pooler and databases no CONNECTION_POOL_URL',
  );
  return undefined;
}

/**
 * One codebase, several entry points: `start` runs web, worker and clock in one process;
 * the Procfile runs each alone against one DATABASE_URL.
 */
export async function runProcesses(config: Config, log: Logger, processes: ProcessName[]): Promise<Running> {
  const binaries = findPgBinaries(config.pgBin);
  const cluster = localCluster(config, binaries);
  const databaseUrl = config.databaseUrl ?? (await startEmbeddedControl(config.home, controlCluster(config, binaries)));
  const pool = createPool(databaseUrl, config.concurrency + 5);
  await migrate(pool);
  const archive = {
    storeUrl: config.storeUrl ?? pathToFileURL(path.join(config.home, 'archive')).href,
    // The archiver runs as the Postgres user, without our environment: S3 credentials go in its config.
    env: config.storeEnv,
  };
  const providers = makeProviders({ home: config.home, cluster, pooler: pooler(config, cluster, log) });
  const token = await operatorToken(config.home, config.operatorToken);
  const sealer = new Sealer(await encryptionKey(config.home, config.encryptionKey));
  const addon = { ...config.addon, ...(await addonSecrets(config.home, config.addon)) };
  const tls = { authority: await certificateAuthority(pool, sealer), ...config.tls };
  wireSubscribers(config.paging);
  const stops: (() => Promise<void>)[] = [];
  const metrics = createMetrics(processes.includes('web') ? pool : undefined);
  let url: string | undefined;
  let web: FastifyInstance | undefined;

  if (processes.includes('worker')) {
    const worker = new Worker(pool, {
      queues: config.queues,
      concurrency: config.concurrency,
      leaseSeconds: config.jobLease,
      name: config.workerName,
      handlers: workerTasks(providers, {
        sealer,
        provider: config.provider,
        sharedMaxConnections: config.sharedMaxConnections,
        addon,
        configPrefix: configVarPrefix(addon.id),
        binaries,
        archive,
        probe: config.probe,
        tls,
        paging: config.paging,
        consoleUrl: addon.publicUrl,
        archiveRetentionSeconds: config.archiveRetentionSeconds,
      }),
      journal: incidentJournal,
      jobDuration: metrics.jobDuration,
      log: log.child({ process: 'worker' }),
    });
    await worker.start();
    stops.push(() => worker.stop());
  }
  if (processes.includes('clock')) {
    const clock = new Clock(pool, {
      observeInterval: config.observeInterval,
      observationRetentionDays: config.observationRetentionDays,
      tlsRenewDays: config.tls.renewDays,
      log: log.child({ process: 'clock' }),
    });
    await clock.start();
    stops.push(() => clock.stop());
  }
  if (processes.includes('router')) {
    const health = new HealthServer(pool, sealer, log.child({ process: 'router' }), 250, config.probe.timeoutMs);
    await health.start();
    const router = new Router(pool, '127.0.0.1', log.child({ process: 'router' }), {
      replicaWithin: (id, maxLag) => health.replicaWithin(id, maxLag),
      readOnlyMaxLagBytes: config.readOnlyMaxLagBytes,
    });
    await router.start();
    // Stopped in reverse: the router, which asks the health checks, goes first.
    stops.push(
      () => health.stop(),
      () => router.stop(),
    );
  }
  if (processes.includes('web')) {
    const app = buildWeb({
      pool,
      log,
      sealer,
      operatorToken: token,
      providers: Object.keys(providers),
      addon,
      metrics: metrics.registry,
      archive,
      host: config.host,
      caCertificate: tls.authority.certificate,
    });
    url = await app.listen({ port: config.port, host: config.host });
    stops.push(() => app.close());
    web = app;
  } else if (config.metricsPort !== undefined) {
    const server = metricsServer(metrics.registry, config.host, token);
    await server.listen({ port: config.metricsPort, host: config.host });
    stops.push(() => server.close());
  }

  return {
    pool,
    databaseUrl,
    url,
    web,
    operatorToken: token,
    sealer,
    providers,
    caCertificate: tls.authority.certificate,
    async stop() {
      for (const stop of stops.reverse()) await stop();
      await pool.end();
    },
  };
}
