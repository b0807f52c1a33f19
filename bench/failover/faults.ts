/**
 * The faults the failover benchmark makes to a primary: a crash (SIGKILL of the postmaster)
 * or a hang (SIGSTOP of the postmaster and every child), and letting hung processes go.
 */
import { clusterPids, signalAll } from '../../src/chaos/processes.ts';
import type { Fault } from './report.ts';

/** Processes this bench froze and has not let go yet: continued on the way out, whatever happens. */
const frozen = new Set<number>();

/** Lets every process this bench froze run again. */
export function thaw(): void {
  signalAll([...frozen], 'SIGCONT');
  frozen.clear();
}

/**
 * Makes `fault` to the Postgres of `dataDir` whose processes were `pids` (the postmaster
 * first), listed before the fault so that listing them takes none of its time. The pids
 * signalled.
 */
export async function makeFault(fault: Fault, pids: number[], dataDir: string): Promise<number[]> {
  if (fault === 'crash') {
    const signalled = pids.slice(0, 1);
    signalAll(signalled, 'SIGKILL');
    return signalled;
  }
  // The postmaster (first) and every child at once; then any child it forked since they were listed.
  for (const pid of pids) frozen.add(pid);
  signalAll(pids, 'SIGSTOP');
  const late = (await clusterPids(dataDir)).filter((pid) => !frozen.has(pid));
  for (const pid of late) frozen.add(pid);
  signalAll(late, 'SIGSTOP');
  return [...pids, ...late];
}
