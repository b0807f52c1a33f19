import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { findPgBinaries } from '../../src/pg/binaries.ts';
import { clusterStatus, PgCluster, pgIdentity, processRunning } from '../../src/pg/cluster.ts';
import { freePort } from '../../src/pg/ports.ts';
import { waitFor } from '../support/db.ts';
import { signalAll } from '../../src/chaos/processes.ts';

describe('a killed cluster', () => {
  it('leaves no process behind: a frozen backend the postmaster left is killed too, and the cluster starts again', async () => {
    const home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-kill-'));
    await fs.chmod(home, 0o755);
    const cluster = new PgCluster(findPgBinaries(process.env.PG_BIN), pgIdentity());
    const dataDir = path.join(home, 'data');
    const password = 'kill-test-password';
    const port = await freePort();
    let backend: number | undefined;
    try {
      await cluster.init({ dataDir, host: '127.0.0.1', port, superuserPassword: password });
      await cluster.start(dataDir);
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password, database: 'postgres' });
      client.on('error', () => undefined);
      await client.connect();
      backend = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
      // A backend that cannot notice its postmaster die, because it is frozen, outlives it.
      process.kill(backend, 'SIGSTOP');
      const { pid: postmaster } = await clusterStatus(dataDir);
      process.kill(postmaster!, 'SIGKILL');
      await waitFor('the postmaster to die', async () => !(await clusterStatus(dataDir)).running, 10_000);
      expect(await processRunning(backend)).toBe(true);

      await cluster.stop(dataDir, 'kill');
      expect(await processRunning(backend)).toBe(false);
      void client.end().catch(() => undefined);
      await cluster.start(dataDir);
      expect((await clusterStatus(dataDir)).running).toBe(true);
    } finally {
      if (backend !== undefined) signalAll([backend], 'SIGCONT');
      await cluster.stop(dataDir, 'kill');
      await fs.rm(home, { recursive: true, force: true });
    }
  });
});
