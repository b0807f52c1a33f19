import type { Host } from '../hosts/host.ts';
import { placed, type ServerRecord } from '../providers/provider.ts';
import { serverArchivePrefix, type ArchiveTarget } from '../store/open.ts';
import { TLS_SETTINGS } from '../tls/postgres.ts';
import type { ArchiveConfig } from '../wal/main.ts';
import { ARCHIVE_SKIPPED_FILE, primaryConninfo, skippableRestoreCommand } from './standbys.ts';

/** A postgresql.conf string value. */
const quoted = (value: string) => `'${value.replace(/'/g, "''")}'`;

/**
 * So that pg_rewind can bring a primary back as a standby after a failover: hint bits in the
 * WAL, and WAL kept past the checkpoints the rewind's own crash recovery makes.
 */
export const REWINDABLE = { wal_log_hints: 'on', wal_keep_size: quoted('256MB') };

/**
 * What a server's archiver reads: the store and its prefix, and the store's credentials
 * only when the store needs them (S3). A directory store needs none, and a secret is
 * written only where it is used: the S3 keys had been in every server's file.
 */
function archiverConfig(archive: ArchiveTarget, prefix: string): ArchiveConfig {
  const needsCredentials = archive.storeUrl.startsWith('s3://');
  return { store: archive.storeUrl, prefix, ...(needsCredentials && archive.env ? { env: archive.env } : {}) };
}

/**
 * Every WAL file the server completes goes to the store through pgfleet's archiver
 * (`wal-push`), which Postgres runs as its own user with a config only that user reads.
 */
export async function archiveSettings(host: Host, server: ServerRecord, archive: ArchiveTarget): Promise<Record<string, string>> {
  const command = await host.archiverCommand('wal-push "%p"', 'archive.json', archiverConfig(archive, serverArchivePrefix(server.id)));
  return { archive_mode: 'on', archive_command: quoted(command), archive_timeout: quoted('60s') };
}

/** Where the server's leader listens; a follower of one that is not placed cannot start. */
export function leaderOf(server: ServerRecord): { host: string; port: number } {
  if (!server.leader) throw new Error(`server ${server.id} follows ${server.attrs.follows ?? 'no server'}, which has no address`);
  return server.leader;
}

/**
 * What makes a copy this server and a standby of its leader: its own address, port and
 * archive (a copy brings its leader's postgresql.conf, which names the leader's), WAL
 * fetched from the leader's archive (`prefix`), and streaming from the leader.
 */
export async function standbySettings(
  host: Host,
  server: ServerRecord,
  archive: ArchiveTarget,
  prefix: string,
): Promise<Record<string, string>> {
  const restoreCommand = await host.archiverCommand('wal-fetch "%f" "%p"', 'restore.json', archiverConfig(archive, prefix));
  // Left by a promotion of this server before: a standby again, it reads its archive.
  await host.removeServerFile(ARCHIVE_SKIPPED_FILE);
  const conninfo = primaryConninfo(leaderOf(server), server.superuserPassword, server.id);
  const { host: address, port } = placed(server);
  return {
    listen_addresses: quoted(address),
    port: String(port),
    restore_command: quoted(skippableRestoreCommand(restoreCommand)),
    primary_conninfo: quoted(conninfo),
    recovery_target_timeline: quoted('latest'),
    ...TLS_SETTINGS,
    ...(await archiveSettings(host, server, archive)),
  };
}
