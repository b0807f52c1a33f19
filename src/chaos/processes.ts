import { execFile } from 'node:child_process';
import { readFile, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { processRunning } from '../pg/cluster.ts';

const run = promisify(execFile);

/** A local server's data directory under PGFLEET_HOME (the local provider's layout). */
export function serverDataDir(home: string, serverId: string): string {
  return path.join(home, 'servers', serverId, 'data');
}

/**
 * A cluster's postmaster and every process it started, from its data directory; none when it
 * is not running. The pid in postmaster.pid counts only if that process works in the data
 * directory (every Postgres process does): a server killed earlier leaves its pid file behind,
 * and the pid may belong to another server's postmaster by now.
 */
export async function clusterPids(dataDir: string): Promise<number[]> {
  let pid: number;
  try {
    pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  } catch {
    return [];
  }
  if (!(pid > 0) || !(await processRunning(pid))) return [];
  const [cwd, dir] = await Promise.all([readlink(`/proc/${pid}/cwd`).catch(() => ''), realpath(dataDir).catch(() => dataDir)]);
  if (cwd !== dir) return [];
  const { stdout } = await run('ps', ['-o', 'pid=', '--ppid', String(pid)]).catch(() => ({ stdout: '' }));
  return [
    pid,
    ...stdout
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => n > 0),
  ];
}

/** The walsenders among a cluster's processes: the ones streaming WAL to its standbys. */
export async function walsenderPids(dataDir: string): Promise<number[]> {
  const pids = (await clusterPids(dataDir)).slice(1);
  const named = await Promise.all(
    pids.map(async (pid) => ((await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).includes('walsender') ? pid : 0)),
  );
  return named.filter((pid) => pid > 0);
}

/** Signal each of `pids`, ignoring any that has exited since it was listed. */
export function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
}

/**
 * Processes a fault has stopped (SIGSTOP) and not let go yet, so that every way out
 * continues them: nothing can stop a server whose processes cannot run.
 */
export class Frozen {
  private readonly pids = new Set<number>();

  freeze(pids: readonly number[]): void {
    for (const pid of pids) this.pids.add(pid);
    signalAll(pids, 'SIGSTOP');
  }

  has(pid: number): boolean {
    return this.pids.has(pid);
  }

  thaw(): void {
    signalAll([...this.pids], 'SIGCONT');
    this.pids.clear();
  }
}
