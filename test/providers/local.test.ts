import { readFile } from 'node:fs/promises';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { findPgBinaries } from '../../src/pg/binaries.ts';
import { clusterStatus, PgCluster, pgIdentity } from '../../src/pg/cluster.ts';
import { LocalProvider } from '../../src/providers/local.ts';
import { waitFor } from '../support/db.ts';
import { providerContract } from './contract.ts';

providerContract('local', async () => {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-local-'));
  await fs.chmod(home, 0o755);
  const provider = new LocalProvider(home, new PgCluster(findPgBinaries(process.env.PG_BIN), pgIdentity()));
  return {
    provider,
    async crash(server) {
      const dataDir = provider.dataDir(server);
      const pid = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
      process.kill(pid, 'SIGKILL');
      await waitFor('the postmaster to die', async () => !(await clusterStatus(dataDir)).running, 10_000);
    },
    async cleanup() {
      await fs.rm(home, { recursive: true, force: true });
    },
  };
});
