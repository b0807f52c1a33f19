import type { Readable } from 'node:stream';
import type { KeyedCertificate } from '../tls/certificates.ts';
import type { ArchiveConfig } from '../wal/main.ts';

/**
 * Commands on the host of one server: its Postgres, its pooler and the files around them.
 * A provider hands one out for each placed server (`Provider.host`); the local host runs the
 * commands on this machine, a remote one would run them through an agent. The replication
 * steps (src/replication/) are written against this interface alone, so they work on any
 * provider.
 *
 * Every host lays a server out the same way, because Postgres settings and SQL name these
 * places relative to the data directory: the data directory sits in the server's own
 * directory, beside its TLS files (`../tls`, see src/tls/postgres.ts), the archiver's
 * configs and `../archive-skipped` (see src/replication/standbys.ts), which a standby's
 * restore command reads and a promotion writes over SQL.
 *
 * Each method may run twice (a job whose worker died runs again), so each is safe to
 * repeat, and none removes or re-initialises data except `setAside` and `destroy`.
 */
export interface Host {
  /**
   * Create the cluster (initdb, into scratch and renamed into place) listening on the
   * server's address and port with the server's superuser password, and `settings` in postgresql.conf.
   * A cluster that exists is left as it is.
   */
  initialize(settings: Record<string, string>): Promise<void>;
  /**
   * A data directory from a base backup's tar, with `settings` added (what makes the copy
   * this server) and `signal` written before it is put in place, so that it never starts as
   * a second primary. A cluster that exists is left as it is.
   */
  restoreBackup(tar: Readable, settings: Record<string, string>, signal: 'standby.signal' | 'recovery.signal'): Promise<void>;
  /**
   * Turn the stopped cluster into a standby of `source` with pg_rewind, then add `settings`
   * and standby.signal. Throws RewindSourceUnreachable (src/pg/cluster.ts) when the source
   * could not be reached before anything was changed, so it can be tried again.
   */
  rewind(source: { host: string; port: number; password: string }, settings: Record<string, string>): Promise<void>;
  /** Whether the data directory holds `name`: `PG_VERSION` for a cluster, `standby.signal` for a standby. */
  hasDataFile(name: string): Promise<boolean>;
  /** Write `name` in the data directory (pg_hba.conf), readable by the Postgres user only. */
  writeDataFile(name: string, content: string): Promise<void>;
  /**
   * Move the data directory aside (as `data.diverged`) for an operator, or remove it when
   * something is aside already: the first data set aside is the one worth keeping.
   */
  setAside(): Promise<void>;
  /** Remove `name` from the server's own directory, the data directory's parent; a missing file is fine. */
  removeServerFile(name: string): Promise<void>;
  /**
   * The command Postgres runs for pgfleet's archiver (`wal-push "%p"`, `wal-fetch "%f" "%p"`,
   * given as `args`) on this host, reading `config` from the file `configName` in the
   * server's own directory, which only the Postgres user may read (S3 credentials may be in
   * it). A directory store is made writable by that user.
   */
  archiverCommand(args: string, configName: string, config: ArchiveConfig): Promise<string>;
  /**
   * Put a new key and certificate where the server reads them, replacing the old ones; a
   * running server, and its pooler, serve them from their next configuration reload.
   */
  installCertificate(certificate: KeyedCertificate): Promise<void>;
  /** Start Postgres and wait until it accepts connections; a running server is left alone. */
  start(): Promise<void>;
  /** Bring back a Postgres that is down or hung: killed, then started. Its pooler keeps its clients. */
  restart(): Promise<void>;
  /** Kill Postgres, whatever state it is in, and wait until every one of its processes is gone; its pooler is left. */
  kill(): Promise<void>;
  /**
   * Postgres first, then its pooler; `fast` by default, `kill` for a server that must stop
   * now whatever state it is in (a fence, a hang): afterwards it takes no connection and
   * acknowledges no commit.
   */
  stop(mode?: 'fast' | 'kill'): Promise<void>;
  /**
   * Configure the connection pooler in front of the server from the server's catalog and
   * make sure it runs; nothing for a server placed without one (no `pool_port`).
   */
  refreshPool(): Promise<void>;
  /**
   * What the host sees of the server, as observation keys: `alive` and `pid` of Postgres,
   * `pool_alive` when it has a pooler, `data_dir_bytes`, and `disk_free_bytes` and
   * `disk_total_bytes` of the disk its data is on.
   */
  observe(): Promise<Record<string, string>>;
  /** Private memory (bytes) of the server's processes by pid; gone ones are left out. */
  processMemory(pids: number[]): Promise<Map<number, number>>;
  /** Kill Postgres and its pooler and remove the server's own directory with everything in it. */
  destroy(): Promise<void>;
}
