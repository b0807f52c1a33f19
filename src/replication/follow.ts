import type { Host } from '../hosts/host.ts';
import type { ServerRecord } from '../providers/provider.ts';
import { openArchive, serverArchivePrefix, type ArchiveTarget } from '../store/open.ts';
import { backupTar, findBackup, latestBackup } from '../wal/backup.ts';
import { BackupNotFinished } from './notYet.ts';
import { standbySettings } from './settings.ts';

/**
 * A follower starts from its leader's latest base backup, replays the leader's archive
 * (`wal-fetch`), then streams from the leader as a read-only standby on the same
 * timeline. It archives to its own prefix once it is promoted. A backup that is not
 * finished is not waited for here: the task asks again, or asks for a fresh backup when
 * this one can no longer finish (it waited 90 s in place for one whose job had died).
 */
export async function restoreFollower(host: Host, server: ServerRecord, archive: ArchiveTarget): Promise<void> {
  const leader = server.attrs.follows!;
  const store = openArchive(archive);
  // A follower's placement asks for a fresh backup of its leader (`backup_label`): an
  // older one may be of a timeline the leader has left.
  const wanted = server.attrs.backup_label;
  const backup = wanted
    ? await findBackup(store, serverArchivePrefix(leader), wanted)
    : await latestBackup(store, serverArchivePrefix(leader));
  if (!backup) throw new BackupNotFinished(leader, wanted);
  await host.restoreBackup(backupTar(store, backup), await standbySettings(host, server, archive, backup.prefix), 'standby.signal');
}
