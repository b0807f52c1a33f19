import { randomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { PgBinaries } from '../../src/pg/binaries.ts';
import type { LocalProvider } from '../../src/providers/local.ts';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { PROVIDERS } from '../../src/providers/registry.ts';
import { initializeServer } from '../../src/replication/initialize.ts';
import { openArchive, type ArchiveTarget } from '../../src/store/open.ts';
import type { ObjectStore } from '../../src/store/store.ts';
import { createAuthority, issueServerCertificate, type KeyedCertificate } from '../../src/tls/certificates.ts';
import { certificateHosts } from '../../src/tls/postgres.ts';
import { superuserClient, testProviderContext } from './providers.ts';

/**
 * Local servers that archive their WAL, without a control plane: a temporary PGFLEET_HOME, a
 * LocalProvider on it, an archive (a directory in the home unless `archive` is given), and
 * servers placed, initialized and started on it. `cleanup` destroys every server it made
 * and removes the home.
 */
export interface ArchivedServers {
  bin: PgBinaries;
  provider: LocalProvider;
  archive: ArchiveTarget;
  store: ObjectStore;
  /** A placed, initialized and started server; a standby of `leader` when `attrs.follows` names it. */
  server(attrs?: Record<string, string>, leader?: ServerRecord): Promise<ServerRecord>;
  query(server: ServerRecord, sql: string): Promise<pg.QueryResult>;
  cleanup(): Promise<void>;
}

export async function archivedServers(archive?: ArchiveTarget): Promise<ArchivedServers> {
  const context = await testProviderContext();
  const target = archive ?? { storeUrl: `file://${context.home}/archive` };
  const provider = PROVIDERS.local(context);
  let ca: KeyedCertificate | undefined;
  const made: ServerRecord[] = [];
  const password = randomBytes(24).toString('base64url');
  return {
    bin: context.bin,
    provider,
    archive: target,
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
      const host = provider.host(server);
      await initializeServer(
        host,
        server,
        await issueServerCertificate(ca, { name: server.id, hosts: certificateHosts(server.host), validityMs: 3_600_000 }),
        target,
      );
      await host.start();
      return server;
    },
    async query(server, sql) {
      const client = superuserClient(server, { connectionTimeoutMillis: 5000 });
      await client.connect();
      try {
        return await client.query(sql);
      } finally {
        await client.end();
      }
    },
    async cleanup() {
      for (const server of made) await provider.destroy(server).catch(() => undefined);
      await context.remove();
    },
  };
}
