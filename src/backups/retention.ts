import type { Pool } from '../db.ts';
import type { Logger } from '../log.ts';
import type { TaskHandlers } from '../queue/worker.ts';
import { openArchive, serverArchivePrefix, type ArchiveTarget } from '../store/open.ts';
import type { ObjectStore } from '../store/store.ts';

/**
 * A deleted server's archive (its WAL and base backups, `servers/<id>/`) is kept for
 * PGFLEET_ARCHIVE_RETENTION_SECONDS after the server is gone (7 days by default: time to
 * restore a database deprovisioned by mistake, or to look into what it wrote), then
 * removed. It used to be kept for ever. The server's row says when its archive went.
 */
export const PRUNE_ARCHIVES_EVERY_SECONDS = 60;
/** Deleted servers whose archives one run removes: a run stays short, and the next takes the rest. */
const SERVERS_PER_RUN = 20;

export async function pruneDeletedArchives(pool: Pool, store: ObjectStore, retentionSeconds: number, log: Logger): Promise<string[]> {
  const { rows } = await pool.query<{ id: string }>(
    `select s.id from servers s join entity_states m on m.entity_id = s.id
     where m.state = 'deleted' and m.finished_at < now() - make_interval(secs => $1) and not s.attrs ? 'archive_removed_at'
     order by m.finished_at limit $2`,
    [retentionSeconds, SERVERS_PER_RUN],
  );
  for (const { id } of rows) {
    const keys = await store.list(`${serverArchivePrefix(id)}/`);
    for (const key of keys) await store.delete(key);
    await pool.query(`update servers set attrs = attrs || hstore('archive_removed_at', now()::text) where id = $1`, [id]);
    log.info({ server: id, objects: keys.length }, 'removed the archive of a server deleted past the retention');
  }
  return rows.map((r) => r.id);
}

export function archiveRetentionTasks(archive: ArchiveTarget, retentionSeconds: number): Pick<TaskHandlers, 'prune_archives'> {
  return {
    async prune_archives(_job, { pool, log }) {
      await pruneDeletedArchives(pool, openArchive(archive), retentionSeconds, log);
    },
  };
}
