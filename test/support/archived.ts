import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { findPgBinaries, type PgBinaries } from '../../src/pg/binaries.ts';
import { PgCluster, pgIdentity } from '../../src/pg/cluster.ts';
import { LocalProvider } from '../../src/providers/local.ts';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { openArchive, type ArchiveTarget } from '../../src/store/open.ts';
import type { ObjectStore } from '../../src/store/store.ts';
import { createAuthority, issueServerCertificate, type KeyedCertificate } from '../../src/tls/certificates.ts';
import { certificateHosts } from '../../src/tls/postgres.ts';

/**
 * Local servers that archive their WAL, without a control plane: a temporary PGFLEET_HOME, a
 * LocalProvider on it with an archive (a directory in the home unless `archive` is given),
 * and servers placed, initialized and started on it. `cleanup` destroys every server it made
 * and removes the home.
 */
export interface ArchivedServers {
  bin: PgBinaries;
  provider: LocalProvider;
  store: ObjectStore;
  /** A placed, initialized and started server; a standby of `leader` when `attrs.follows` names it. */
  server(attrs?: Record<string, string>, leader?: ServerRecord): Promise<ServerRecord>;
  query(server: ServerRecord, sql: string): Promise<pg.QueryResult>;
  cleanup(): Promise<void>;
}

export async function archivedServers(archive?: ArchiveTarget): Promise<ArchivedServers> {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-archived-'));
  await fs.chmod(home, 0o755);
  const bin = findPgBinaries(process.env.PG_BIN);
  const target = archive ?? { storeUrl: `file://${home}/archive` };
  const provider = new LocalProvider(home, new PgCluster(bin, pgIdentity()), target);
  let ca: KeyedCertificate | undefined;
  const made: ServerRecord[] = [];
  const password = randomBytes(24).toString('base64url');
  return {
    bin,
    provider,
    store: openArchive(target),
    async server(attrs = {}, leader) {
      ca ??= await createAuthority();
      const server: ServerRecord = {
        id: randomUUID(),
        provider: 'local',
        host: null,
        port: null,
        superuserPassword: password,
        attrs: { ...attrs },
      };
      made.push(server);
      const place = await provider.provision(server);
      Object.assign(server, { host: place.host, port: place.port, attrs: { ...server.attrs, ...place.attrs } });
      if (leader) server.leader = { host: leader.host!, port: leader.port! };
      await provider.initialize(
        server,
        await issueServerCertificate(ca, { name: server.id, hosts: certificateHosts(server.host), validityMs: 3_600_000 }),
      );
      await provider.start(server);
      return server;
    },
    async query(server, sql) {
      const client = new pg.Client({
        host: server.host!,
        port: server.port!,
        user: 'postgres',
        password: server.superuserPassword,
        database: 'postgres',
        connectionTimeoutMillis: 5000,
      });
      await client.connect();
      try {
        return await client.query(sql);
      } finally {
        await client.end();
      }
    },
    async cleanup() {
      for (const server of made) await provider.destroy(server).catch(() => undefined);
      await fs.rm(home, { recursive: true, force: true });
    },
  };
}
