import type { IncidentTask } from '../../machines/incident.ts';
import type { TaskHandlers } from '../queue/worker.ts';
import { archiveRetentionTasks } from '../backups/retention.ts';
import { backupTask } from '../backups/tasks.ts';
import type { PagingConfig } from '../config.ts';
import { incidentTasks } from '../incidents/tasks.ts';
import { limitTasks } from '../resources/limits.ts';
import { resourceTasks, type ResourceTaskOptions } from '../resources/tasks.ts';
import { observationTasks } from '../runner/observe.ts';
import { RENEW_TASK, renewCertificateTask } from '../servers/certificates.ts';
import type { Providers } from '../providers/registry.ts';
import { refreshServerPool, serverTasks } from '../servers/tasks.ts';

/**
 * The tasks of servers, resources, backups and certificates by name, with `observe` and
 * `tick` for both kinds of observed entity; a worker's whole table adds incidents', limits'
 * and archive retention's (workerTasks).
 */
export function allTasks(
  providers: Providers,
  opts: ResourceTaskOptions,
): Omit<TaskHandlers, IncidentTask | 'enforce' | 'notify_resource' | 'prune_archives'> {
  const { observe: observeServer, ...server } = serverTasks(providers, opts.sealer, opts.probe, opts.tls, opts.archive);
  const { observe: observeResource, ...resource } = resourceTasks(opts, (db, serverId) =>
    refreshServerPool(db, providers, opts.sealer, serverId),
  );
  // One queue of task names: a resource task named like a server task would silently replace it.
  const clash = Object.keys(server).filter((task) => task in resource);
  if (clash.length > 0) throw new Error(`server and resource tasks share the names ${clash.join(', ')}`);
  return {
    ...server,
    ...resource,
    backup: backupTask(opts),
    [RENEW_TASK]: renewCertificateTask(providers, opts.sealer, opts.tls, opts.probe.timeoutMs),
    ...observationTasks({ server: observeServer, resource: observeResource }),
  };
}

export interface WorkerTaskOptions extends ResourceTaskOptions {
  paging: PagingConfig;
  /** This deployment's address, for links in pages. */
  consoleUrl: string | undefined;
  archiveRetentionSeconds: number;
}

/**
 * Every task a worker runs, by name: the compiler holds the table to the task map (src/tasks.ts),
 * and test/tasks/handlers.test.ts checks each machine's tasks against it at run time.
 */
export function workerTasks(providers: Providers, opts: WorkerTaskOptions): TaskHandlers {
  return {
    ...allTasks(providers, opts),
    ...incidentTasks({ paging: opts.paging, consoleUrl: opts.consoleUrl }),
    ...limitTasks(providers, opts.sealer),
    ...archiveRetentionTasks(opts.archive, opts.archiveRetentionSeconds),
  };
}
