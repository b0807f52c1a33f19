import fs from 'node:fs/promises';

/**
 * Private memory of processes on this host, in bytes: `RssAnon` from /proc, the anonymous
 * pages a backend allocated for itself (its sorts and hashes, whatever `work_mem` says),
 * without the shared buffers every backend maps. A process that is gone is left out.
 */
export async function privateMemory(pids: number[]): Promise<Map<number, number>> {
  const found = new Map<number, number>();
  await Promise.all(
    pids.map(async (pid) => {
      const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
      const kb = status && /^RssAnon:\s+(\d+) kB$/m.exec(status)?.[1];
      if (kb) found.set(pid, Number(kb) * 1024);
    }),
  );
  return found;
}
