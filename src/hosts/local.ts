import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { PgCluster } from '../pg/cluster.ts';
import { privateMemory } from '../pg/memory.ts';
import { poolerStatus, reloadPooler, stopPooler, type Pgbouncer } from '../pg/pgbouncer.ts';
import { poolFiles, withPoolCatalog } from '../pg/poolConfig.ts';
import { placed, type ServerRecord } from '../providers/provider.ts';
import type { KeyedCertificate } from '../tls/certificates.ts';
import { CERT_FILE, KEY_FILE, TLS_DIR } from '../tls/postgres.ts';
import { archiverBundle } from '../wal/bundle.ts';
import type { ArchiveConfig } from '../wal/main.ts';
import type { Host } from './host.ts';

/**
 * What every local host shares: PGFLEET_HOME (where the archiver is bundled), Postgres and
 * pgbouncer as this machine runs them (as an unprivileged user when pgfleet is root), and
 * the last walk of each data directory.
 */
export interface LocalMachine {
  home: string;
  cluster: PgCluster;
  /** The pgbouncer put in front of each server; none when this machine has none. */
  pooler: Pgbouncer | undefined;
  /** The last walk of each data directory: its size, and when (performance.now()). */
  walked: Map<string, { bytes: number; at: number }>;
}

/** Where a local server keeps its data directory and its pooler's files (with the pooler's pid file), in its own directory. */
export function localServerFiles(serverDir: string): { dataDir: string; poolDir: string } {
  return { dataDir: path.join(serverDir, 'data'), poolDir: path.join(serverDir, 'pgbouncer') };
}

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

/**
 * A server on this machine: a real Postgres cluster in `serverDir` (which the local
 * provider allocates), run with pg_ctl, with a pgbouncer in front of it on `pool_port` when
 * the machine has one. The pooler lives and dies with its server: started (`refreshPool`)
 * once Postgres is up, stopped with it.
 */
export class LocalHost implements Host {
  private readonly dataDir: string;
  private readonly poolDir: string;

  constructor(
    private readonly machine: LocalMachine,
    /** Placed, except for `destroy`, which needs no port. */
    private readonly server: ServerRecord,
    private readonly serverDir: string,
  ) {
    ({ dataDir: this.dataDir, poolDir: this.poolDir } = localServerFiles(serverDir));
  }

  private get cluster(): PgCluster {
    return this.machine.cluster;
  }

  async initialize(settings: Record<string, string>): Promise<void> {
    await this.cluster.init({
      dataDir: this.dataDir,
      host: this.server.host!,
      port: this.server.port!,
      superuserPassword: this.server.superuserPassword,
      settings,
    });
  }

  async restoreBackup(tar: Readable, settings: Record<string, string>, signal: 'standby.signal' | 'recovery.signal'): Promise<void> {
    await this.cluster.restoreTar(this.dataDir, tar, settings, signal);
  }

  async rewind(source: { host: string; port: number; password: string }, settings: Record<string, string>): Promise<void> {
    await this.cluster.rewind(this.dataDir, source, settings);
  }

  async hasDataFile(name: string): Promise<boolean> {
    return existsSync(path.join(this.dataDir, name));
  }

  async writeDataFile(name: string, content: string): Promise<void> {
    await this.cluster.writeOwnedFile(path.join(this.dataDir, name), content);
  }

  async setAside(): Promise<void> {
    const aside = `${this.dataDir}.diverged`;
    if (existsSync(aside)) await fs.rm(this.dataDir, { recursive: true, force: true });
    else await fs.rename(this.dataDir, aside);
  }

  async removeServerFile(name: string): Promise<void> {
    await fs.rm(path.join(this.serverDir, name), { force: true });
  }

  /**
   * The archiver runs from the bundle under PGFLEET_HOME/bin (src/wal/bundle.ts), with this
   * process's Node, both reachable by the Postgres user.
   */
  async archiverCommand(args: string, configName: string, config: ArchiveConfig): Promise<string> {
    await this.cluster.ensureOwnedDir(this.serverDir);
    if (config.store.startsWith('file://')) await this.cluster.ensureOwnedDir(new URL(config.store).pathname);
    const file = path.join(this.serverDir, configName);
    await this.cluster.writeOwnedFile(file, JSON.stringify(config));
    const bundle = await archiverBundle(this.machine.home);
    return `"${process.execPath}" "${bundle}" ${args} --config "${file}"`;
  }

  /**
   * Each file is written aside and renamed into place, so Postgres, whenever it reads them
   * (a start, a reload), finds a whole key and a whole certificate; the key first, so the
   * window in which the two do not match is the one between two renames.
   */
  async installCertificate(certificate: KeyedCertificate): Promise<void> {
    const dir = path.join(this.serverDir, TLS_DIR);
    await this.cluster.ensureOwnedDir(this.serverDir);
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
    await reloadPooler(this.poolDir);
  }

  async start(): Promise<void> {
    await this.cluster.start(this.dataDir);
  }

  async restart(): Promise<void> {
    // A process that is alive but not answering is hung, and may not even take a signal it
    // has to handle: kill it before starting. A pooler that runs keeps its clients, which
    // reconnect to the new Postgres.
    await this.cluster.stop(this.dataDir, 'kill');
    await this.cluster.start(this.dataDir);
  }

  async kill(): Promise<void> {
    await this.cluster.stop(this.dataDir, 'kill');
  }

  async stop(mode: 'fast' | 'kill' = 'fast'): Promise<void> {
    await this.cluster.stop(this.dataDir, mode);
    await stopPooler(this.poolDir, mode);
  }

  /**
   * Bring the server's pooler to what the server's catalog says (its tenants, their
   * verifiers and limits) and make sure it runs: configured, reloaded when that changed
   * something, started when it was not running. A server placed without a pooler (none on
   * this machine then) has none.
   */
  async refreshPool(): Promise<void> {
    const poolPort = Number(this.server.attrs.pool_port);
    const pooler = this.machine.pooler;
    if (!pooler || !poolPort) return;
    const { host, port } = placed(this.server);
    await withPoolCatalog({ host, port, password: this.server.superuserPassword }, async (catalog) => {
      const tls = path.join(this.serverDir, TLS_DIR);
      const place = {
        dir: this.poolDir,
        host,
        listenPort: poolPort,
        serverPort: port,
        superuserPassword: this.server.superuserPassword,
        tls: { keyFile: path.join(tls, KEY_FILE), certFile: path.join(tls, CERT_FILE) },
      };
      const changed = await pooler.configure(this.poolDir, poolFiles(place, catalog));
      await pooler.start(this.poolDir, { host, port: poolPort }, changed);
    });
  }

  async observe(): Promise<Record<string, string>> {
    const status = await this.cluster.status(this.dataDir);
    const disk = await fs.statfs(this.dataDir).catch(() => undefined);
    return {
      alive: String(status.running),
      ...(status.pid !== undefined && status.running ? { pid: String(status.pid) } : {}),
      ...(this.server.attrs.pool_port ? { pool_alive: String((await poolerStatus(this.poolDir)).running) } : {}),
      data_dir_bytes: String(await this.dataDirBytes()),
      ...(disk ? { disk_free_bytes: String(disk.bavail * disk.bsize), disk_total_bytes: String(disk.blocks * disk.bsize) } : {}),
    };
  }

  private async dataDirBytes(): Promise<number> {
    const last = this.machine.walked.get(this.dataDir);
    if (last && performance.now() - last.at < DATA_DIR_BYTES_EVERY_MS) return last.bytes;
    const bytes = await directoryBytes(this.dataDir);
    this.machine.walked.set(this.dataDir, { bytes, at: performance.now() });
    return bytes;
  }

  processMemory(pids: number[]): Promise<Map<number, number>> {
    return privateMemory(pids);
  }

  async destroy(): Promise<void> {
    await this.cluster.stop(this.dataDir, 'kill');
    await stopPooler(this.poolDir, 'kill');
    await fs.rm(this.serverDir, { recursive: true, force: true });
    this.machine.walked.delete(this.dataDir);
  }
}
