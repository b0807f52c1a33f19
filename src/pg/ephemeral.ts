import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { findPgBinaries } from './binaries.ts';
import { PgCluster, pgIdentity } from './cluster.ts';
import { freePort } from './ports.ts';

export interface EphemeralPostgres {
  /** Superuser URL of the `postgres` database. */
  url: string;
  port: number;
  password: string;
  dir: string;
  cluster: PgCluster;
  /** Stop the server (by its data directory) and remove the directory. */
  stop(): Promise<void>;
}

/**
 * A throwaway Postgres on a free port in a temporary directory, for tests and benchmarks.
 * It stops by its data directory, never by process name.
 */
export async function startEphemeralPostgres(settings: Record<string, string | number> = {}): Promise<EphemeralPostgres> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-pg-'));
  await fs.chmod(dir, 0o755);
  const cluster = new PgCluster(findPgBinaries(process.env.PG_BIN), pgIdentity(process.env.PGFLEET_PG_USER));
  const dataDir = path.join(dir, 'data');
  const password = randomBytes(16).toString('hex');
  const port = await freePort();
  await cluster.init({
    dataDir,
    host: '127.0.0.1',
    port,
    superuserPassword: password,
    settings: { max_connections: 300, fsync: 'on', ...settings },
  });
  await cluster.start(dataDir);
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    port,
    password,
    dir,
    cluster,
    async stop() {
      await cluster.stop(dataDir, 'fast').catch(() => cluster.stop(dataDir, 'immediate'));
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
