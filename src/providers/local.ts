import { existsSync, readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { controlDataDir } from '../control.ts';
import { RewindSourceUnreachable, type PgCluster } from '../pg/cluster.ts';
import { privateMemory } from '../pg/memory.ts';
import { reloadPooler, stopPooler, poolerStatus, type Pgbouncer } from '../pg/pgbouncer.ts';
import { poolFiles, withPoolCatalog } from '../pg/poolConfig.ts';
import { freePort } from '../pg/ports.ts';
import { ARCHIVE_SKIPPED_FILE, primaryConninfo, skippableRestoreCommand } from '../replication/standbys.ts';
import { openArchive, type ArchiveTarget } from '../store/open.ts';
import { backupTar, findBackup, latestBackup } from '../wal/backup.ts';
import { archiverBundle } from '../wal/bundle.ts';
import type { KeyedCertificate } from '../tls/certificates.ts';
import { CERT_FILE, KEY_FILE, PG_HBA, TLS_DIR, TLS_SETTINGS } from '../tls/postgres.ts';
import { BackupNotFinished, NotYet, type Placement, type Provider, type Rejoined, type ServerRecord } from './provider.ts';

/** Bytes under a directory, for the data directory size observation. */
async function directoryBytes(dir: string): Promise<number> {
  const entries = await fs.readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  const sizes = await Promise.all(
    entries
      .filter((e) => e.isFile())
      .map((e) =>
        fs.stat(path.join(e.parentPath, e.name)).then(
          (s) => s.size,
          () => 0,
        ),
      ),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

/**
 * How often a data directory is walked for its size. A walk stats every file: about 1,300
 * in a fresh server's, 25–50 ms of this process's CPU. Done at every observation of 32
 * servers (every 5 s, the 2 of an `ha` database every second) that was about 0.3 s of CPU a
 * second, beside the failover work; once a minute it is 20 ms. A size a minute old is
 * fresh enough: disk space is judged by the disk's free bytes, read at every observation.
 */
const DATA_DIR_BYTES_EVERY_MS = 60_000;

function serverDataDir(home: string, id: string): string {
  return path.join(home, 'servers', id, 'data');
}

/** The pgbouncer in front of the server keeps its files and pid file here, beside the data directory. */
function serverPoolDir(home: string, id: string): string {
  return path.join(home, 'servers', id, 'pgbouncer');
}

/** Where the server's leader listens; a follower of one that is not placed cannot start. */
function leaderOf(server: ServerRecord): { host: string; port: number } {
  if (!server.leader) throw new Error(`server ${server.id} follows ${server.attrs.follows ?? 'no server'}, which has no address`);
  return server.leader;
}

/**
 * What a server's archiver reads: the store and its prefix, and the store's credentials
 * only when the store needs them (S3). A directory store needs none, and a secret is
 * written only where it is used: the S3 keys had been in every server's file.
 */
function archiverConfig(archive: ArchiveTarget, prefix: string): string {
  const needsCredentials = archive.storeUrl.startsWith('s3://');
  return JSON.stringify({ store: archive.storeUrl, prefix, ...(needsCredentials && archive.env ? { env: archive.env } : {}) });
}

/** A postgresql.conf string value. */
const quoted = (value: string) => `'${value.replace(/'/g, "''")}'`;

const REWINDABLE = { wal_log_hints: 'on', wal_keep_size: quoted('256MB') };

/**
 * The embedded default: each server is a real Postgres cluster in its own directory under
 * PGFLEET_HOME/servers, on its own loopback port, run with pg_ctl; with a pgbouncer in
 * front of it on another port (`pool_port`) when the machine has one. The pooler lives and
 * dies with its server: started (`refreshPool`) once Postgres is up, stopped with it.
 */
export class LocalProvider implements Provider {
  readonly name = 'local';
  /** The last walk of each data directory: its size, and when (performance.now()). */
  private readonly walked = new Map<string, { bytes: number; at: number }>();

  constructor(
    private readonly home: string,
    private readonly cluster: PgCluster,
    private readonly archive?: ArchiveTarget,
    private readonly pooler?: Pgbouncer,
  ) {}

  /**
   * Bring the server's pooler to what the server's catalog says (its tenants, their
   * verifiers and limits) and make sure it runs: configured, reloaded when that changed
   * something, started when it was not running. A server placed without a pooler (none on
   * this machine then) has none.
   */
  async refreshPool(server: ServerRecord): Promise<void> {
    const poolPort = Number(server.attrs.pool_port);
    if (!this.pooler || !poolPort) return;
    const { port } = this.placed(server);
    const dir = serverPoolDir(this.home, server.id);
    const pooler = this.pooler;
    await withPoolCatalog({ host: server.host ?? '127.0.0.1', port, password: server.superuserPassword }, async (catalog) => {
      const tls = path.join(this.home, 'servers', server.id, TLS_DIR);
      const place = {
        dir,
        listenPort: poolPort,
        serverPort: port,
        superuserPassword: server.superuserPassword,
        tls: { keyFile: path.join(tls, KEY_FILE), certFile: path.join(tls, CERT_FILE) },
      };
      const changed = await pooler.configure(dir, poolFiles(place, catalog));
      await pooler.start(dir, poolPort, changed);
    });
  }

  /**
   * A follower starts from its leader's latest base backup, replays the leader's archive
   * (`wal-fetch`), then streams from the leader as a read-only standby on the same
   * timeline. It archives to its own prefix once it is promoted. A backup that is not
   * finished is not waited for here: the task asks again, or asks for a fresh backup when
   * this one can no longer finish (it waited 90 s in place for one whose job had died).
   */
  private async restoreFollower(server: ServerRecord, dataDir: string, port: number): Promise<void> {
    const leader = server.attrs.follows!;
    if (!this.archive) throw new Error('followers need a WAL archive: this provider has none');
    const store = openArchive(this.archive);
    // A follower's placement asks for a fresh backup of its leader (`backup_label`): an
    // older one may be of a timeline the leader has left.
    const wanted = server.attrs.backup_label;
    const backup = wanted ? await findBackup(store, `servers/${leader}`, wanted) : await latestBackup(store, `servers/${leader}`);
    if (!backup) throw new BackupNotFinished(leader, wanted);
    await this.cluster.restoreTar(
      dataDir,
      backupTar(store, backup),
      await this.standbySettings(server, port, backup.prefix),
      'standby.signal',
    );
  }

  /**
   * What makes a copy this server and a standby of its leader: its own port and archive,
   * WAL fetched from the leader's archive (`prefix`), and streaming from the leader.
   */
  private async standbySettings(server: ServerRecord, port: number, prefix: string): Promise<Record<string, string>> {
    const dir = path.join(this.home, 'servers', server.id);
    await this.cluster.ensureOwnedDir(dir);
    const restoreConfig = path.join(dir, 'restore.json');
    await this.cluster.writeOwnedFile(restoreConfig, archiverConfig(this.archive!, prefix));
    // Left by a promotion of this server before: a standby again, it reads its archive.
    await fs.rm(path.join(dir, ARCHIVE_SKIPPED_FILE), { force: true });
    const bundle = await archiverBundle(this.home);
    const conninfo = primaryConninfo(leaderOf(server), server.superuserPassword, server.id);
    return {
      port: String(port),
      restore_command: quoted(skippableRestoreCommand(`"${process.execPath}" "${bundle}" wal-fetch "%f" "%p" --config "${restoreConfig}"`)),
      primary_conninfo: quoted(conninfo),
      recovery_target_timeline: quoted('latest'),
      ...TLS_SETTINGS,
      ...(await this.archiveSettings(server)),
    };
  }

  /**
   * A fenced former primary comes back as a standby of its leader (`attrs.follows`, the
   * server that took over): rewound when pg_rewind can (only what changed is copied), or
   * else rebuilt from the leader's base backup. What the old primary wrote after the
   * timelines parted was never acknowledged (its commits waited for the standby), so it
   * goes; the rebuild keeps the old directory aside, as `data.diverged`, for an operator.
   *
   * Each attempt goes on from what the last one left: a rewind that could not reach the
   * leader changed nothing and is tried again (it used to set the data aside, and a leader
   * down for a moment made every later attempt wait for a backup); data set aside is
   * rebuilt; a copy already made a standby is started.
   */
  async rejoin(server: ServerRecord): Promise<Rejoined> {
    const { dataDir, port } = this.placed(server);
    if (!this.archive) throw new Error('rejoining needs a WAL archive: this provider has none');
    const leader = { ...leaderOf(server), password: server.superuserPassword };
    await this.cluster.stop(dataDir, 'kill');
    let how: Rejoined;
    // A primary has no standby.signal (promotion removes it): this one is a rewind or a
    // rebuild that an earlier attempt made and did not see start.
    if (existsSync(path.join(dataDir, 'standby.signal'))) how = { how: 'started' };
    else if (existsSync(path.join(dataDir, 'PG_VERSION'))) {
      try {
        await this.cluster.rewind(dataDir, leader, await this.standbySettings(server, port, `servers/${server.attrs.follows}`));
        how = { how: 'rewound' };
      } catch (err) {
        if (err instanceof RewindSourceUnreachable) throw new NotYet(err.message);
        await this.setAside(dataDir);
        await this.rebuild(server, dataDir, port, (err as Error).message);
        how = { how: 'rebuilt', because: (err as Error).message };
      }
    } else {
      await this.rebuild(server, dataDir, port, 'no data directory to rewind');
      how = { how: 'rebuilt', because: 'no data directory to rewind' };
    }
    await this.writeHba(dataDir);
    try {
      await this.cluster.start(dataDir);
    } catch (err) {
      if (how.how !== 'started') throw err;
      // A standby an earlier attempt made that cannot start (its rewind left it unable to
      // read its own checkpoint, say) would fail every attempt the same way: rebuilt instead.
      const because = `the standby an earlier attempt made did not start: ${(err as Error).message.slice(0, 500)}`;
      await this.cluster.stop(dataDir, 'kill');
      await this.setAside(dataDir);
      await this.rebuild(server, dataDir, port, because);
      await this.writeHba(dataDir);
      await this.cluster.start(dataDir);
      return { how: 'rebuilt', because };
    }
    return how;
  }

  /** The diverged data goes aside for an operator; a copy made since, when it is already there, goes. */
  private async setAside(dataDir: string): Promise<void> {
    const aside = `${dataDir}.diverged`;
    if (existsSync(aside)) await fs.rm(dataDir, { recursive: true, force: true });
    else await fs.rename(dataDir, aside);
  }

  private async rebuild(server: ServerRecord, dataDir: string, port: number, because: string): Promise<void> {
    await this.restoreFollower(server, dataDir, port).catch((err: unknown) => {
      // Still a NotYet, saying why it is rebuilt: the next attempt only finds no data.
      if (err instanceof NotYet) err.message = `${because}; to rebuild: ${err.message}`;
      else err = new Error(`${because}; and rebuilding from the archive failed: ${(err as Error).message}`);
      throw err;
    });
  }

  /**
   * Every WAL file the server completes goes to the store through pgfleet's archiver
   * (`wal-push`), which Postgres runs as its own user with a config only that user reads.
   */
  private async archiveSettings(server: ServerRecord): Promise<Record<string, string>> {
    if (!this.archive) return {};
    const dir = path.join(this.home, 'servers', server.id);
    await this.cluster.ensureOwnedDir(dir);
    if (this.archive.storeUrl.startsWith('file://')) await this.cluster.ensureOwnedDir(new URL(this.archive.storeUrl).pathname);
    const config = path.join(dir, 'archive.json');
    await this.cluster.writeOwnedFile(config, archiverConfig(this.archive, `servers/${server.id}`));
    const bundle = await archiverBundle(this.home);
    const command = `"${process.execPath}" "${bundle}" wal-push "%p" --config "${config}"`;
    return { archive_mode: 'on', archive_command: quoted(command), archive_timeout: quoted('60s') };
  }

  dataDir(server: Pick<ServerRecord, 'id'>): string {
    return serverDataDir(this.home, server.id);
  }

  private placed(server: ServerRecord): { dataDir: string; port: number } {
    if (server.port === null) throw new Error(`server ${server.id} has no port yet: provision it first`);
    return { dataDir: this.dataDir(server), port: server.port };
  }

  async provision(server: ServerRecord): Promise<Placement> {
    if (server.host !== null && server.port !== null) return { host: server.host, port: server.port, attrs: server.attrs };
    await fs.mkdir(path.join(this.home, 'servers'), { recursive: true, mode: 0o755 });
    // The router process answers this server's health checks (Patroni's endpoints) on a port of its own.
    const attrs: Record<string, string> = { data_dir: this.dataDir(server), health_port: String(await freePort()) };
    if (this.pooler) attrs.pool_port = String(await freePort());
    return { host: '127.0.0.1', port: await freePort(), attrs };
  }

  async initialize(server: ServerRecord, certificate: KeyedCertificate): Promise<void> {
    const { dataDir, port } = this.placed(server);
    // Before the cluster: a cluster whose settings name TLS files cannot start without them.
    await this.installCertificate(server, certificate);
    if (server.attrs.follows) await this.restoreFollower(server, dataDir, port);
    else {
      // So that pg_rewind can bring it back as a standby after a failover: hint bits in the
      // WAL, and WAL kept past the checkpoints the rewind's own crash recovery makes. A shared
      // server's max_connections is its tenants' connection budget (src/placement.ts).
      const settings: Record<string, string> = { ...REWINDABLE, ...TLS_SETTINGS, ...(await this.archiveSettings(server)) };
      if (server.attrs.max_connections) settings.max_connections = server.attrs.max_connections;
      await this.cluster.init({ dataDir, port, superuserPassword: server.superuserPassword, settings });
    }
    await this.writeHba(dataDir);
  }

  /**
   * Each file is written aside and renamed into place, so Postgres, whenever it reads them
   * (a start, a reload), finds a whole key and a whole certificate; the key first, so the
   * window in which the two do not match is the one between two renames.
   */
  async installCertificate(server: ServerRecord, certificate: KeyedCertificate): Promise<void> {
    const dir = path.join(this.home, 'servers', server.id, TLS_DIR);
    await this.cluster.ensureOwnedDir(path.dirname(dir));
    await this.cluster.ensureOwnedDir(dir);
    for (const [name, content] of [
      [KEY_FILE, certificate.key],
      [CERT_FILE, certificate.certificate],
    ] as const) {
      const file = path.join(dir, name);
      await this.cluster.writeOwnedFile(`${file}.new`, content);
      await fs.rename(`${file}.new`, file);
    }
    // The pooler serves the same certificate: a reload makes it read the new one.
    await reloadPooler(serverPoolDir(this.home, server.id));
  }

  async requireTls(server: ServerRecord): Promise<void> {
    await this.writeHba(this.placed(server).dataDir);
  }

  /** A copy carries its leader's pg_hba.conf, which may be older than TLS: each server gets pgfleet's own. */
  private async writeHba(dataDir: string): Promise<void> {
    await this.cluster.writeOwnedFile(path.join(dataDir, 'pg_hba.conf'), PG_HBA);
  }

  async start(server: ServerRecord): Promise<void> {
    await this.cluster.start(this.placed(server).dataDir);
  }

  async restart(server: ServerRecord): Promise<void> {
    const { dataDir } = this.placed(server);
    // A process that is alive but not answering is hung, and may not even take a signal it
    // has to handle: kill it before starting. A pooler that runs keeps its clients, which
    // reconnect to the new Postgres.
    await this.cluster.stop(dataDir, 'kill');
    await this.cluster.start(dataDir);
  }

  /** Postgres first, then its pooler: a fenced primary acknowledges no commit and takes no connection. */
  async stop(server: ServerRecord, mode: 'fast' | 'kill' = 'fast'): Promise<void> {
    await this.cluster.stop(this.placed(server).dataDir, mode);
    await stopPooler(serverPoolDir(this.home, server.id), mode);
  }

  async observe(server: ServerRecord): Promise<Record<string, string>> {
    if (server.port === null) return { placed: 'false' };
    const dataDir = this.dataDir(server);
    const status = await this.cluster.status(dataDir);
    const disk = await fs.statfs(dataDir).catch(() => undefined);
    return {
      alive: String(status.running),
      ...(status.pid !== undefined && status.running ? { pid: String(status.pid) } : {}),
      ...(server.attrs.pool_port ? { pool_alive: String((await poolerStatus(serverPoolDir(this.home, server.id))).running) } : {}),
      data_dir_bytes: String(await this.dataDirBytes(dataDir)),
      ...(disk ? { disk_free_bytes: String(disk.bavail * disk.bsize), disk_total_bytes: String(disk.blocks * disk.bsize) } : {}),
    };
  }

  private async dataDirBytes(dataDir: string): Promise<number> {
    const last = this.walked.get(dataDir);
    if (last && performance.now() - last.at < DATA_DIR_BYTES_EVERY_MS) return last.bytes;
    const bytes = await directoryBytes(dataDir);
    this.walked.set(dataDir, { bytes, at: performance.now() });
    return bytes;
  }

  processMemory(_server: ServerRecord, pids: number[]): Promise<Map<number, number>> {
    return privateMemory(pids);
  }

  async destroy(server: ServerRecord): Promise<void> {
    const dataDir = this.dataDir(server);
    await this.cluster.stop(dataDir, 'kill');
    await stopPooler(serverPoolDir(this.home, server.id), 'kill');
    await fs.rm(path.dirname(dataDir), { recursive: true, force: true });
    this.walked.delete(dataDir);
  }
}

/** Stop every cluster under PGFLEET_HOME, the servers (with their poolers) and the embedded control database. */
export async function stopLocalClusters(home: string, cluster: PgCluster, control: PgCluster = cluster): Promise<string[]> {
  let ids: string[];
  try {
    ids = readdirSync(path.join(home, 'servers'));
  } catch {
    ids = [];
  }
  const stopped: string[] = [];
  for (const id of ids) await stopPooler(serverPoolDir(home, id));
  const all: [PgCluster, string][] = [
    ...ids.map((id): [PgCluster, string] => [cluster, serverDataDir(home, id)]),
    [control, controlDataDir(home)],
  ];
  for (const [runs, dir] of all) {
    if (!(await runs.status(dir)).running) continue;
    await runs.stop(dir);
    stopped.push(dir);
  }
  return stopped;
}
