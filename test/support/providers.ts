import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { findPgBinaries, type PgBinaries } from '../../src/pg/binaries.ts';
import { PgCluster, pgIdentity } from '../../src/pg/cluster.ts';
import { findPgbouncer, Pgbouncer } from '../../src/pg/pgbouncer.ts';
import type { ProviderContext, ServerRecord } from '../../src/providers/provider.ts';

/**
 * What providers are made from in a test, as `runProcesses` makes it: a temporary
 * PGFLEET_HOME the Postgres user can reach, Postgres from PG_BIN (run as an unprivileged
 * user when root), and pgbouncer when `pooler` asks for it. `remove` deletes the home.
 */
export async function testProviderContext(
  opts: { pooler?: boolean } = {},
): Promise<ProviderContext & { bin: PgBinaries; remove(): Promise<void> }> {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-provider-'));
  await fs.chmod(home, 0o755);
  const bin = findPgBinaries(process.env.PG_BIN);
  const cluster = new PgCluster(bin, pgIdentity());
  return {
    home,
    bin,
    cluster,
    pooler: opts.pooler ? new Pgbouncer(findPgbouncer(undefined)!, cluster) : undefined,
    remove: () => fs.rm(home, { recursive: true, force: true }),
  };
}

/** A client (not yet connected) of a server's `postgres` database as its superuser. */
export function superuserClient(server: ServerRecord, options: Pick<pg.ClientConfig, 'connectionTimeoutMillis' | 'ssl'> = {}): pg.Client {
  return new pg.Client({
    host: server.host!,
    port: server.port!,
    user: 'postgres',
    password: server.superuserPassword,
    database: 'postgres',
    ...options,
  });
}
