import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlDataDir, startEmbeddedControl } from '../../src/control.ts';
import { findPgBinaries } from '../../src/pg/binaries.ts';
import { controlIdentity, PgCluster, pgIdentity } from '../../src/pg/cluster.ts';
import { stopLocalClusters, type LocalProvider } from '../../src/providers/local.ts';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { PROVIDERS } from '../../src/providers/registry.ts';
import { initializeServer } from '../../src/replication/initialize.ts';
import { createAuthority, issueServerCertificate } from '../../src/tls/certificates.ts';
import { certificateHosts } from '../../src/tls/postgres.ts';

/**
 * Customers' servers and the control database share a machine: a server's superuser (one
 * a tenant escape or a careless operator could reach) must not read the control database's
 * files, and a server's archiver config holds no secret its store does not need.
 */
describe('what a server can read of the machine it shares', () => {
  const root = process.getuid?.() === 0;
  const binaries = findPgBinaries(process.env.PG_BIN);
  const servers = new PgCluster(binaries, pgIdentity(process.env.PGFLEET_PG_USER));
  const control = new PgCluster(binaries, controlIdentity('pgfleet-control', servers.identity));
  let home: string;
  let provider: LocalProvider;
  const server: ServerRecord = {
    id: randomUUID(),
    provider: 'local',
    host: null,
    port: null,
    superuserPassword: randomBytes(24).toString('base64url'),
    attrs: {},
  };

  beforeAll(async () => {
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-separation-'));
    await fs.chmod(home, 0o755);
    await startEmbeddedControl(home, control);
    const archive = {
      storeUrl: `file://${home}/archive`,
      env: { AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret-that-must-not-be-written' },
    };
    provider = PROVIDERS.local({ home, cluster: servers, pooler: undefined });
    Object.assign(server, await provider.provision(server));
    const ca = await createAuthority();
    await initializeServer(
      provider.host(server),
      server,
      await issueServerCertificate(ca, { name: server.id, hosts: certificateHosts(server.host), validityMs: 3_600_000 }),
      archive,
    );
    await provider.host(server).start();
  });
  afterAll(async () => {
    await stopLocalClusters(home, servers, control);
    await fs.rm(home, { recursive: true, force: true });
  });

  it(
    root
      ? "runs the control database as a user of its own, whose files a server's superuser cannot read"
      : 'runs everything as this user when not root (separation needs root)',
    async () => {
      const controlOwner = (await fs.stat(controlDataDir(home))).uid;
      const serverOwner = (await fs.stat(provider.dataDir(server))).uid;
      if (!root) {
        expect([controlOwner, serverOwner]).toEqual([process.getuid!(), process.getuid!()]);
        return;
      }
      expect(controlOwner).toBe(control.identity!.uid);
      expect(serverOwner).not.toBe(controlOwner);
      const superuser = new pg.Client({
        host: server.host!,
        port: server.port!,
        user: 'postgres',
        password: server.superuserPassword,
        database: 'postgres',
      });
      await superuser.connect();
      try {
        // The server's own files, yes; the control database's, no.
        expect((await superuser.query(`select pg_read_file('PG_VERSION') as v`)).rows[0].v).toMatch(/^\d+/);
        await expect(superuser.query('select pg_read_file($1)', [path.join(controlDataDir(home), 'PG_VERSION')])).rejects.toThrow(
          /Permission denied/,
        );
        await expect(superuser.query('select pg_ls_dir($1)', [controlDataDir(home)])).rejects.toThrow(/Permission denied/);
        await expect(superuser.query('select pg_read_file($1)', [path.join(home, 'control.json')])).rejects.toThrow(/Permission denied/);
        await expect(superuser.query('select pg_read_file($1)', [path.join(home, 'secrets.json')])).rejects.toThrow(
          /Permission denied|No such file/,
        );
      } finally {
        await superuser.end();
      }
    },
  );

  it('writes no store credentials into the archiver config of a directory store', async () => {
    const config = await fs.readFile(path.join(home, 'servers', server.id, 'archive.json'), 'utf8');
    expect(JSON.parse(config)).toEqual({ store: `file://${home}/archive`, prefix: `servers/${server.id}` });
    expect(config).not.toContain('secret-that-must-not-be-written');
  });
});
