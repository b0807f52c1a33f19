import type { PgBinaries } from '../pg/binaries.ts';
import type { JobHandler } from '../queue/worker.ts';
import type { Sealer } from '../sealer.ts';
import { loadServerRecord } from '../servers/rows.ts';
import { openArchive, serverArchivePrefix, type ArchiveTarget } from '../store/open.ts';
import { takeBaseBackup } from '../wal/backup.ts';

export interface BackupTaskOptions {
  sealer: Sealer;
  binaries: PgBinaries;
  /** Where servers archive their WAL, and their base backups go. */
  archive: ArchiveTarget;
}

/**
 * A base backup of a server into its archive. The job has no entity: a long backup must not
 * hold up the server's own queue (its observations and ticks).
 */
export function backupTask(opts: BackupTaskOptions): JobHandler<'backup'> {
  return async (job, { pool, log }) => {
    const serverId = job.payload.server;
    const server = await loadServerRecord(pool, opts.sealer, serverId);
    if (!server?.host || !server.port) throw new Error(`server ${serverId} is not placed`);
    const store = openArchive(opts.archive);
    const { label } = job.payload;
    const manifest = await takeBaseBackup(
      opts.binaries,
      store,
      serverArchivePrefix(serverId),
      { host: server.host, port: server.port, password: server.superuserPassword },
      label,
    );
    log.info({ server: serverId, label, bytes: manifest.bytes, parts: manifest.parts.length }, 'base backup taken');
  };
}
