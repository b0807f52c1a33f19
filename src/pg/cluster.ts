import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { watchChild } from '../child.ts';
import type { PgBinaries } from './binaries.ts';
import { asSuperuser } from './superuser.ts';

const run = promisify(execFile);

/** Who runs Postgres: ourselves, or an unprivileged user when we are root. */
export interface PgIdentity {
  user: string;
  uid: number;
  gid: number;
}

/**
 * Postgres refuses to run as root. When pgfleet is root it hands every Postgres process
 * to `PGFLEET_PG_USER`, or to `postgres` when that user exists, or to `nobody`.
 */
export function pgIdentity(preferred?: string): PgIdentity | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const candidates = preferred ? [preferred] : ['postgres', 'nobody'];
  for (const user of candidates) {
    try {
      const id = (flag: string) =>
        Number(execFileSync('id', [flag, user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
      return { user, uid: id('-u'), gid: id('-g') };
    } catch {
      continue;
    }
  }
  throw new Error(
    `pgfleet runs as root and Postgres will not: create the user ${candidates.join(' or ')} or set PGFLEET_PG_USER to an unprivileged user`,
  );
}

/**
 * The control database runs as a user of its own, never as the one that runs customers'
 * servers: a server's processes (its superuser reads files with pg_read_file) must not be
 * able to read the control database's files, which hold every credential, sealed or not.
 * When we are root and the user does not exist, it is made as a system user, as a package
 * would; when we are not root, there is only ourselves (and docs/configuration.md says so).
 */
export function controlIdentity(name: string, serverUser: PgIdentity | undefined): PgIdentity | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  try {
    id('-u');
  } catch {
    execFileSync(
      'useradd',
      ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name],
      { stdio: 'ignore' },
    );
  }
  const identity = { user: name, uid: id('-u'), gid: id('-g') };
  if (identity.uid === serverUser?.uid)
    throw new Error(
      `PGFLEET_CONTROL_PG_USER (${name}) is the user that runs customers' servers: give the control database a user of its own`,
    );
  return identity;
}

export interface ClusterSpec {
  dataDir: string;
  /** The one address it listens on: where its server was placed, so that it never answers at another server's address. */
  host: string;
  port: number;
  superuserPassword: string;
  /** Extra postgresql.conf settings. */
  settings?: Record<string, string | number>;
}

export interface ClusterStatus {
  running: boolean;
  pid: number | undefined;
}

/**
 * pg_rewind could not reach its source before it changed anything in the target (the new
 * primary was down for a moment): the data directory is as it was, and the rewind can be
 * tried again. After REWIND_BEGUN, a lost source leaves the target half rewound.
 */
export class RewindSourceUnreachable extends Error {}

/** What pg_rewind says as it starts to change the target. */
const REWIND_BEGUN = 'rewinding from last common checkpoint';
/** libpq's words for a server it cannot reach or that went away, and a server not yet (or no longer) taking connections. */
const SOURCE_UNREACHABLE =
  /connection to server .* failed|could not connect to server|server closed the connection unexpectedly|no connection to the server|terminating connection|timeout expired|SSL SYSCALL error|SSL connection has been closed unexpectedly|the database system is (starting up|shutting down|in recovery mode|not yet accepting connections)/;

export class PgCluster {
  constructor(
    private readonly bin: PgBinaries,
    /** Who runs Postgres, and the pgbouncer in front of it. */
    readonly identity: PgIdentity | undefined,
  ) {}

  private async exec(file: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<string> {
    const { stdout } = await run(file, args, {
      cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C', ...env },
      uid: this.identity?.uid,
      gid: this.identity?.gid,
      timeout: 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  }

  /**
   * A stopped cluster another user left (an older pgfleet ran the control database as the
   * servers' user) becomes this cluster's user's, with everything beside it in its parent.
   */
  async adopt(dataDir: string): Promise<void> {
    if (!this.identity || !existsSync(dataDir)) return;
    if ((await fs.stat(dataDir)).uid === this.identity.uid || (await this.status(dataDir)).running) return;
    await run('chown', ['-R', `${this.identity.uid}:${this.identity.gid}`, path.dirname(dataDir)]);
  }

  /** A directory the Postgres user owns (when we are root) and can reach. */
  async ensureOwnedDir(dir: string): Promise<void> {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (!this.identity) return;
    await fs.chown(dir, this.identity.uid, this.identity.gid);
    try {
      await this.exec('test', ['-w', dir], '/');
    } catch {
      throw new Error(
        `${dir} is not reachable by the user ${this.identity.user} that runs Postgres: ` +
          'put PGFLEET_HOME where that user can traverse every parent directory',
      );
    }
  }

  /**
   * A data directory from a base backup's tar, extracted by the Postgres user into scratch
   * and renamed into place (like `init`): a crash mid-extraction never leaves something
   * that looks like a cluster, and an existing cluster is never touched.
   */
  async restoreTar(
    dataDir: string,
    tar: Readable,
    settings: Record<string, string>,
    signal: 'standby.signal' | 'recovery.signal',
  ): Promise<'restored' | 'exists'> {
    if (existsSync(path.join(dataDir, 'PG_VERSION'))) return 'exists';
    if (existsSync(dataDir) && (await fs.readdir(dataDir)).length > 0)
      throw new Error(`${dataDir} is not empty and holds no cluster: refusing to touch it`);
    await this.ensureOwnedDir(path.dirname(dataDir));
    const scratch = `${dataDir}.restore`;
    await fs.rm(scratch, { recursive: true, force: true });
    await this.ensureOwnedDir(scratch);
    const child = spawn('tar', ['-x', '-C', scratch], {
      uid: this.identity?.uid,
      gid: this.identity?.gid,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    const { exited, stderr } = watchChild(child);
    try {
      await pipeline(tar, child.stdin!);
    } catch (err) {
      child.kill('SIGTERM');
      await exited;
      throw err;
    }
    const code = await exited;
    if (code !== 0) throw new Error(`tar could not extract the backup (${code}): ${stderr().slice(-500)}`);
    // What this copy must do differently from the server it came from (its port, its role).
    await this.writeSettings(scratch, settings);
    // In scratch, before the rename: a copy must never start as a second primary.
    await this.writeOwnedFile(path.join(scratch, signal), '');
    if (existsSync(dataDir)) await fs.rmdir(dataDir);
    await fs.rename(scratch, dataDir);
    return 'restored';
  }

  /**
   * Turn a stopped former primary into a standby of `source` without copying what they
   * still share: `pg_rewind` rolls the data directory back to where the timelines parted
   * (replaying a crash first, since a fenced server was killed), copies what changed since,
   * and with it the source's configuration files. So the settings that make this server
   * itself (its port, its archive, its leader) are written again afterwards.
   */
  async rewind(dataDir: string, source: { host: string; port: number; password: string }, settings: Record<string, string>): Promise<void> {
    if (!this.bin.pgRewind) throw new Error(`pg_rewind is not next to the Postgres binaries in ${this.bin.dir}`);
    const status = await this.status(dataDir);
    if (status.running) throw new Error(`${dataDir} is running: stop it before rewinding it`);
    if (status.pid !== undefined) await clearZombieLock(dataDir, status.pid);
    // pg_rewind reads the source's timeline from its control file, which a promotion updates
    // at its next checkpoint only: before it, pg_rewind finds "no rewind required" and the
    // old primary, started as a standby, cannot read its own checkpoint on the new timeline.
    try {
      await asSuperuser(source, 'postgres', (client) => client.query('checkpoint'));
    } catch (err) {
      throw new RewindSourceUnreachable(
        `pg_rewind could not reach ${source.host}:${source.port}: the checkpoint before it failed: ${(err as Error).message}`,
      );
    }
    try {
      await this.exec(
        this.bin.pgRewind,
        [
          '--target-pgdata',
          dataDir,
          '--source-server',
          `host=${source.host} port=${source.port} user=postgres dbname=postgres connect_timeout=5`,
        ],
        path.dirname(dataDir),
        { PGPASSWORD: source.password },
      );
    } catch (err) {
      const e = err as Error & { stderr?: string };
      const output = (e.stderr ?? e.message).trim();
      // Its own lines, without the log of the crash recovery it runs first.
      const said =
        output
          .split('\n')
          .filter((line) => line.startsWith('pg_rewind:'))
          .join('\n') || output;
      if (!output.includes(REWIND_BEGUN) && SOURCE_UNREACHABLE.test(output))
        throw new RewindSourceUnreachable(`pg_rewind could not reach ${source.host}:${source.port}: ${said.slice(-1000)}`);
      throw new Error(`pg_rewind failed: ${said.slice(-1000)}`);
    }
    await this.writeSettings(dataDir, settings);
    await this.writeOwnedFile(path.join(dataDir, 'standby.signal'), '');
  }

  /** Settings appended to postgresql.auto.conf, where the last value of a name wins. */
  private async writeSettings(dataDir: string, settings: Record<string, string>): Promise<void> {
    const lines = Object.entries(settings).map(([k, v]) => `${k} = ${v}`);
    await this.writeOwnedFile(path.join(dataDir, 'postgresql.auto.conf'), `\n# managed by pgfleet\n${lines.join('\n')}\n`, true);
  }

  /** A file only the Postgres user (and root) may read: an archiver's config with credentials. */
  async writeOwnedFile(file: string, content: string, append = false): Promise<void> {
    await (append ? fs.appendFile(file, content, { mode: 0o600 }) : fs.writeFile(file, content, { mode: 0o600 }));
    if (this.identity) await fs.chown(file, this.identity.uid, this.identity.gid);
  }

  /** As root, the binaries must be executable by the user that runs Postgres (a checkout under /root is not). */
  private async ensureRunnable(): Promise<void> {
    if (!this.identity) return;
    try {
      await this.exec('test', ['-x', this.bin.postgres], '/');
    } catch {
      throw new Error(
        `the Postgres binaries in ${this.bin.dir} cannot be run by the user ${this.identity.user}: ` +
          'set PG_BIN to binaries that user can reach',
      );
    }
  }

  /**
   * initdb into a scratch directory, then rename it into place. A crash mid-initdb leaves
   * only scratch behind (which never held data), and an existing cluster is never touched:
   * a job that runs twice finds PG_VERSION and stops.
   */
  async init(spec: ClusterSpec): Promise<'created' | 'exists'> {
    if (existsSync(path.join(spec.dataDir, 'PG_VERSION'))) return 'exists';
    if (existsSync(spec.dataDir) && (await fs.readdir(spec.dataDir)).length > 0) {
      throw new Error(`${spec.dataDir} is not empty and holds no cluster: refusing to touch it`);
    }
    const parent = path.dirname(spec.dataDir);
    await this.ensureOwnedDir(parent);
    await this.ensureRunnable();
    const scratch = `${spec.dataDir}.initdb`;
    const pwfile = `${spec.dataDir}.pw`;
    await fs.rm(scratch, { recursive: true, force: true });
    await fs.writeFile(pwfile, spec.superuserPassword, { mode: 0o600 });
    if (this.identity) await fs.chown(pwfile, this.identity.uid, this.identity.gid);
    try {
      await this.exec(
        this.bin.initdb,
        ['-D', scratch, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C'],
        parent,
      );
    } finally {
      await fs.rm(pwfile, { force: true });
    }
    const settings: Record<string, string | number> = {
      listen_addresses: `'${spec.host}'`,
      port: spec.port,
      unix_socket_directories: "''",
      // As a standby, it tells its primary where it is every second, not every 10 s: its last
      // reply's age then tells a stalled standby from an idle one within the stall threshold.
      wal_receiver_status_interval: "'1s'",
      ...spec.settings,
    };
    const lines = Object.entries(settings).map(([k, v]) => `${k} = ${v}`);
    await fs.appendFile(path.join(scratch, 'postgresql.conf'), `\n# managed by pgfleet\n${lines.join('\n')}\n`);
    if (existsSync(spec.dataDir)) await fs.rmdir(spec.dataDir);
    await fs.rename(scratch, spec.dataDir);
    return 'created';
  }

  status(dataDir: string): Promise<ClusterStatus> {
    return clusterStatus(dataDir);
  }

  /** Start and wait until it accepts connections; a running cluster is left as it is. */
  async start(dataDir: string): Promise<void> {
    const status = await this.status(dataDir);
    if (status.running) return;
    if (status.pid !== undefined) await clearZombieLock(dataDir, status.pid);
    const logFile = path.join(path.dirname(dataDir), 'postgres.log');
    await this.exec(this.bin.pgCtl, ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60'], path.dirname(dataDir));
  }

  /**
   * Stop; `fast` rolls back open transactions, `immediate` skips the shutdown checkpoint,
   * and `kill` is for a server that cannot answer a signal it has to handle (a hang, a
   * stopped process): SIGKILL to the postmaster and every process it started, which
   * nothing can block, then a wait until all of them are gone. Each is as safe for the data
   * as a crash; the next start replays the WAL.
   */
  async stop(dataDir: string, mode: StopMode = 'fast'): Promise<void> {
    const status = await this.status(dataDir);
    // A postmaster killed before may have left backends behind, finishing what they had.
    if (mode === 'kill') return killCluster(dataDir, status.running ? status.pid : undefined);
    if (!status.running) return;
    await this.exec(this.bin.pgCtl, ['stop', '-D', dataDir, '-m', mode, '-w', '-t', '60'], path.dirname(dataDir));
  }
}

export type StopMode = 'fast' | 'immediate' | 'kill';

/**
 * The processes of a cluster, from /proc: every Postgres process works in its data
 * directory, so this finds the postmaster's children and also backends it left behind when
 * it was killed, which have another parent by then.
 */
async function clusterProcesses(dataDir: string): Promise<number[]> {
  const dir = await fs.realpath(dataDir).catch(() => dataDir);
  const pids: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    if ((await fs.readlink(`/proc/${entry}/cwd`).catch(() => '')) === dir) pids.push(Number(entry));
  }
  return pids;
}

function sigkill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/**
 * The postmaster first, so it cannot start another child, then every other process of the
 * cluster: one left behind could finish a commit, and would keep the shared memory attached
 * so the cluster could not start again.
 */
async function killCluster(dataDir: string, postmaster: number | undefined): Promise<void> {
  if (postmaster !== undefined) sigkill(postmaster);
  const others = await clusterProcesses(dataDir);
  for (const pid of others) sigkill(pid);
  const all = [...(postmaster === undefined ? [] : [postmaster]), ...others];
  const deadline = Date.now() + 10_000;
  while ((await Promise.all(all.map(processRunning))).some(Boolean)) {
    if (Date.now() > deadline) throw new Error(`Postgres processes ${all.join(', ')} did not die of SIGKILL within 10 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Read postmaster.pid and ask the kernel whether that process lives. */
export async function clusterStatus(dataDir: string): Promise<ClusterStatus> {
  let pid: number;
  try {
    pid = Number((await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  } catch {
    return { running: false, pid: undefined };
  }
  if (!Number.isInteger(pid) || pid <= 0) return { running: false, pid: undefined };
  return { running: await processRunning(pid), pid };
}

/** A process that exists (perhaps another user's) and is not a zombie waiting to be reaped. */
export async function processRunning(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !(await isZombie(pid));
}

/**
 * Postgres refuses to start (or to run single-user, as pg_rewind does) while the pid in
 * postmaster.pid exists, and a killed postmaster exists as a zombie until its parent reaps
 * it, which in a container whose first process reaps nothing is never. The lock file of a
 * dead process may go: the shared-memory interlock still stops a start while any old
 * backend is attached.
 */
async function clearZombieLock(dataDir: string, pid: number): Promise<void> {
  if (!(await processRunning(pid))) await fs.rm(path.join(dataDir, 'postmaster.pid'), { force: true });
}

/**
 * A postmaster killed with SIGKILL stays a zombie until its parent reaps it, and a zombie
 * still answers kill(pid, 0). On Linux /proc tells the two apart.
 */
async function isZombie(pid: number): Promise<boolean> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}
