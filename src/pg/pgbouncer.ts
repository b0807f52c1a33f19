import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { processRunning, type PgCluster } from './cluster.ts';
import type { PoolFiles } from './poolConfig.ts';
import { accepts } from './ports.ts';

const run = promisify(execFile);

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The pgbouncer binary: `PGBOUNCER_BIN`, else the first on the PATH, else Debian's
 * /usr/sbin (which an unprivileged user's PATH often lacks). Undefined when there is none:
 * pgfleet then runs without poolers.
 */
export function findPgbouncer(bin: string | undefined, searchPath = `${process.env.PATH ?? ''}:/usr/sbin`): string | undefined {
  if (bin !== undefined) {
    if (!executable(bin)) throw new Error(`PGBOUNCER_BIN=${bin} is not an executable file: point it at pgbouncer, or unset it`);
    return bin;
  }
  return searchPath
    .split(':')
    .filter(Boolean)
    .map((dir) => path.join(dir, 'pgbouncer'))
    .find(executable);
}

export interface PoolerStatus {
  running: boolean;
  pid: number | undefined;
}

const pidFile = (dir: string) => path.join(dir, 'pgbouncer.pid');
const iniFile = (dir: string) => path.join(dir, 'pgbouncer.ini');

/**
 * Whether the pgbouncer of `dir` runs: the pid in its pid file is alive and is a pgbouncer
 * started with this directory's config, so a pid the kernel gave to another process since
 * is never taken for it (nor signalled).
 */
export async function poolerStatus(dir: string): Promise<PoolerStatus> {
  const pid = Number((await fs.readFile(pidFile(dir), 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return { running: false, pid: undefined };
  const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  const ours = cmdline.split('\0').includes(iniFile(dir));
  return { running: ours && (await processRunning(pid)), pid };
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/**
 * Stop the pgbouncer of `dir`: `fast` is pgbouncer's immediate shutdown (SIGTERM: every
 * client is disconnected at once), `kill` is SIGKILL; either way it takes no connection
 * afterwards. Waits until the process is gone, and removes a pid file left behind, which
 * would stop the next start. Needs no binary: `pgfleet down` stops poolers on any machine.
 */
export async function stopPooler(dir: string, mode: 'fast' | 'kill' = 'fast'): Promise<void> {
  const status = await poolerStatus(dir);
  if (status.running) {
    signal(status.pid!, mode === 'kill' ? 'SIGKILL' : 'SIGTERM');
    const deadline = Date.now() + 10_000;
    while (await processRunning(status.pid!)) {
      // SIGTERM is enough within milliseconds; 10 s means it is stuck.
      if (Date.now() > deadline) signal(status.pid!, 'SIGKILL');
      if (Date.now() > deadline + 10_000) throw new Error(`pgbouncer ${status.pid} did not die within 20 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  await fs.rm(pidFile(dir), { force: true });
}

/** Make a running pooler read its files again (SIGHUP); none running, nothing to do. */
export async function reloadPooler(dir: string): Promise<void> {
  const status = await poolerStatus(dir);
  if (status.running) signal(status.pid!, 'SIGHUP');
}

/**
 * pgbouncer processes, one per server, run as the user that runs Postgres (never as root)
 * from files in a directory of the server's own, with a pid file there like postmaster.pid.
 */
export class Pgbouncer {
  constructor(
    readonly bin: string,
    private readonly cluster: PgCluster,
  ) {}

  /** Write the files that differ from what `dir` holds; whether any did. */
  async configure(dir: string, files: PoolFiles): Promise<boolean> {
    await this.cluster.ensureOwnedDir(dir);
    let changed = false;
    for (const [name, content] of Object.entries(files)) {
      const file = path.join(dir, name);
      if ((await fs.readFile(file, 'utf8').catch(() => undefined)) === content) continue;
      // Written aside and renamed: a pgbouncer reloading now reads the old file or the new one, never half.
      await this.cluster.writeOwnedFile(`${file}.new`, content);
      await fs.rename(`${file}.new`, file);
      changed = true;
    }
    return changed;
  }

  /**
   * Start it and wait until it accepts connections at `host` and `port` (its `listen_addr`
   * and `listen_port`); a running one is reloaded (SIGHUP) when its files changed, and
   * otherwise left alone.
   */
  async start(dir: string, { host, port }: { host: string; port: number }, changed: boolean): Promise<void> {
    const status = await poolerStatus(dir);
    if (status.running) {
      if (changed) signal(status.pid!, 'SIGHUP');
      return;
    }
    // The pid file of a dead (or zombie) pgbouncer: it would refuse to start.
    await fs.rm(pidFile(dir), { force: true });
    const identity = this.cluster.identity;
    try {
      await run(this.bin, ['-d', iniFile(dir)], {
        cwd: dir,
        uid: identity?.uid,
        gid: identity?.gid,
        timeout: 30_000,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
      });
    } catch (err) {
      const e = err as Error & { stderr?: string };
      throw new Error(`pgbouncer did not start: ${(e.stderr || e.message).trim().slice(-500)}`);
    }
    // Up once its own process (not whatever else might hold the port) runs and the port answers.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const now = await poolerStatus(dir);
      if (now.running && (await accepts(host, port))) return;
      if (Date.now() > deadline || (now.pid !== undefined && !now.running)) {
        const log = await fs.readFile(path.join(dir, 'pgbouncer.log'), 'utf8').catch(() => '');
        throw new Error(`pgbouncer did not come up at ${host}:${port}: ${log.trim().split('\n').slice(-3).join(' | ').slice(-500)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
