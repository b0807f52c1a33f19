import { readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { controlDataDir } from '../control.ts';
import type { PgCluster } from '../pg/cluster.ts';
import { freePort } from '../pg/ports.ts';
import { standbyName } from '../pg/replication.ts';
import { openStore } from '../store/open.ts';
import { backupTar, latestBackup } from '../wal/backup.ts';
import { archiverBundle } from '../wal/bundle.ts';
import type { Placement, Provider, ServerRecord } from './provider.ts';

/** Bytes under a directory, for the data directory size observation. */
async function directoryBytes(dir: string): Promise<number> {
  const entries = await fs.readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  const sizes = await Promise.all(
    entries.filter((e) => e.isFile()).map((e) => fs.stat(path.join(e.parentPath, e.name)).then((s) => s.size, () => 0)),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

function serverDataDir(home: string, id: string): string {
  return path.join(home, 'servers', id, 'data');
}

/** How long a follower's initialization waits for its leader's first base backup. */
const FOLLOWER_BACKUP_WAIT_MS = 90_000;

/** Where a provider's servers archive their WAL: a store URL and, for S3, its credentials. */
export interface ArchiveTarget {
  storeUrl: string;
  env?: Record<string, string>;
}

/** A postgresql.conf string value. */
const quoted = (value: string) => `'${value.replace(/'/g, "''")}'`;

/**
 * The embedded default: each server is a real Postgres cluster in its own directory under
 * PGFLEET_HOME/servers, on its own loopback port, run with pg_ctl.
 */
export class LocalProvider implements Provider {
  readonly name = 'local';

  constructor(
    private readonly home: string,
    private readonly cluster: PgCluster,
    private readonly archive?: ArchiveTarget,
  ) {}

  /**
   * A follower starts from its leader's latest base backup, replays the leader's archive
   * (`wal-fetch`), then streams from the leader as a read-only standby on the same
   * timeline. It archives to its own prefix once it is promoted.
   */
  private async restoreFollower(server: ServerRecord, dataDir: string, port: number): Promise<void> {
    const leader = server.attrs.follows!;
    if (!this.archive) throw new Error('followers need a WAL archive: this provider has none');
    const store = openStore(this.archive.storeUrl, { ...process.env, ...this.archive.env });
    // A follower's placement asks for a fresh backup of its leader: wait for one a while.
    let backup = await latestBackup(store, `servers/${leader}`);
    for (let waited = 0; !backup && waited < FOLLOWER_BACKUP_WAIT_MS; waited += 500) {
      await new Promise((r) => setTimeout(r, 500));
      backup = await latestBackup(store, `servers/${leader}`);
    }
    if (!backup) throw new Error(`the leader ${leader} has no base backup yet: take one (POST /api/servers/${leader}/backups)`);
    const dir = path.join(this.home, 'servers', server.id);
    await this.cluster.ensureOwnedDir(dir);
    const restoreConfig = path.join(dir, 'restore.json');
    await this.cluster.writeOwnedFile(restoreConfig, JSON.stringify({ store: this.archive.storeUrl, prefix: backup.prefix, env: this.archive.env }));
    const bundle = await archiverBundle(this.home);
    const conninfo = `host=${server.attrs.leader_host} port=${server.attrs.leader_port} user=postgres password=${server.superuserPassword} application_name=${standbyName(server.id)}`;
    await this.cluster.restoreTar(
      dataDir,
      backupTar(store, backup),
      {
        port: String(port),
        restore_command: quoted(`"${process.execPath}" "${bundle}" wal-fetch "%f" "%p" --config "${restoreConfig}"`),
        primary_conninfo: quoted(conninfo),
        ...(await this.archiveSettings(server)),
      },
      'standby.signal',
    );
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
    await this.cluster.writeOwnedFile(config, JSON.stringify({ store: this.archive.storeUrl, prefix: `servers/${server.id}`, env: this.archive.env }));
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
    return { host: '127.0.0.1', port: await freePort(), attrs: { data_dir: this.dataDir(server) } };
  }

  async initialize(server: ServerRecord): Promise<void> {
    const { dataDir, port } = this.placed(server);
    if (server.attrs.follows) await this.restoreFollower(server, dataDir, port);
    else await this.cluster.init({ dataDir, port, superuserPassword: server.superuserPassword, settings: await this.archiveSettings(server) });
  }

  async start(server: ServerRecord): Promise<void> {
    await this.cluster.start(this.placed(server).dataDir);
  }

  async restart(server: ServerRecord): Promise<void> {
    const { dataDir } = this.placed(server);
    // A process that is alive but not answering is hung: stop it hard before starting.
    if ((await this.cluster.status(dataDir)).running) await this.cluster.stop(dataDir, 'immediate');
    await this.cluster.start(dataDir);
  }

  async stop(server: ServerRecord, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.cluster.stop(this.placed(server).dataDir, mode);
  }

  async observe(server: ServerRecord): Promise<Record<string, string>> {
    if (server.port === null) return { placed: 'false' };
    const dataDir = this.dataDir(server);
    const status = await this.cluster.status(dataDir);
    const disk = await fs.statfs(dataDir).catch(() => undefined);
    return {
      alive: String(status.running),
      ...(status.pid !== undefined && status.running ? { pid: String(status.pid) } : {}),
      data_dir_bytes: String(await directoryBytes(dataDir)),
      ...(disk ? { disk_free_bytes: String(disk.bavail * disk.bsize), disk_total_bytes: String(disk.blocks * disk.bsize) } : {}),
    };
  }

  async destroy(server: ServerRecord): Promise<void> {
    const dataDir = this.dataDir(server);
    await this.cluster.stop(dataDir, 'immediate');
    await fs.rm(path.dirname(dataDir), { recursive: true, force: true });
  }
}

/** Stop every cluster under PGFLEET_HOME: the servers and the embedded control database. */
export async function stopLocalClusters(home: string, cluster: PgCluster): Promise<string[]> {
  let ids: string[];
  try {
    ids = readdirSync(path.join(home, 'servers'));
  } catch {
    ids = [];
  }
  const stopped: string[] = [];
  for (const dir of [...ids.map((id) => serverDataDir(home, id)), controlDataDir(home)]) {
    if (!(await cluster.status(dir)).running) continue;
    await cluster.stop(dir);
    stopped.push(dir);
  }
  return stopped;
}
