import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servedCertificate } from '../../observers/tls.ts';
import type { PgBinaries } from '../../src/pg/binaries.ts';
import type { Provider, ServerRecord } from '../../src/providers/provider.ts';
import { initializeServer } from '../../src/replication/initialize.ts';
import { rejoinAsStandby } from '../../src/replication/rejoin.ts';
import { promoteStandby } from '../../src/replication/standbys.ts';
import { openArchive, type ArchiveTarget } from '../../src/store/open.ts';
import { createAuthority, issueServerCertificate, type KeyedCertificate } from '../../src/tls/certificates.ts';
import { certificateHosts, installHba } from '../../src/tls/postgres.ts';
import { takeBaseBackup } from '../../src/wal/backup.ts';
import { waitFor } from '../support/db.ts';
import { superuserClient } from '../support/providers.ts';

export interface ProviderHarness {
  provider: Provider;
  /** Where the servers archive their WAL and find their base backups. */
  archive: ArchiveTarget;
  /** pg_basebackup, as the backup task runs it from the control plane. */
  bin: PgBinaries;
  cleanup(): Promise<void>;
}

const connect = async (server: ServerRecord, ssl?: pg.ClientConfig['ssl']) => {
  const client = superuserClient(server, { connectionTimeoutMillis: 5000, ssl });
  await client.connect();
  return client;
};

async function query<T extends pg.QueryResultRow>(server: ServerRecord, sql: string): Promise<T[]> {
  const client = await connect(server);
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

const select1 = async (server: ServerRecord) => (await query<{ n: number }>(server, 'select 1 as n'))[0]!.n;

const newServer = (name: string, superuserPassword = randomBytes(24).toString('base64url')): ServerRecord => ({
  id: randomUUID(),
  provider: name,
  host: null,
  port: null,
  superuserPassword,
  attrs: {},
});

/**
 * The postmaster dies as in a crash (SIGKILL), on whatever host the server runs: the
 * command runs as the Postgres user in the data directory, where postmaster.pid names it.
 * Its listening socket goes with it, so a refused connection says it is dead.
 */
async function crash(server: ServerRecord): Promise<void> {
  const client = await connect(server);
  // Its backend is told, as it goes, that the postmaster died.
  client.on('error', () => undefined);
  await client.query(`copy (select 1) to program 'kill -KILL $(head -n 1 postmaster.pid)'`);
  await client.end().catch(() => undefined);
  await waitFor(
    'the postmaster to die',
    () =>
      select1(server).then(
        () => false,
        () => true,
      ),
    10_000,
  );
}

/**
 * Every provider passes this suite, the hosts it hands out included: the machines and the
 * replication steps rely on nothing else.
 */
export function providerContract(name: string, make: () => Promise<ProviderHarness>): void {
  describe(`provider contract: ${name}`, () => {
    let h: ProviderHarness;
    let ca: KeyedCertificate;
    const issue = () => issueServerCertificate(ca, { name: server.id, hosts: certificateHosts(server.host), validityMs: 3_600_000 });
    const serial = (cert: KeyedCertificate) => new X509Certificate(cert.certificate).serialNumber;
    const served = async () => (await servedCertificate(server.host!, server.port!, 5000)).serialNumber;
    const server = newServer(name);
    const host = () => h.provider.host(server);

    beforeAll(async () => {
      h = await make();
      ca = await createAuthority();
    });
    afterAll(async () => {
      await h?.provider.destroy(server).catch(() => undefined);
      await h.cleanup();
    });

    it('gives a server no host before it is placed', () => {
      expect(() => h.provider.host(server)).toThrow(/has no port yet: provision it first/);
    });

    it('provisions a place, and provisioning again returns the same place', async () => {
      const place = await h.provider.provision(server);
      Object.assign(server, { host: place.host, port: place.port, attrs: place.attrs });
      expect(place.port).toBeGreaterThan(0);
      expect(await h.provider.provision(server)).toEqual(place);
    });

    it('initializes, and initializing again leaves the cluster as it is', async () => {
      await initializeServer(host(), server, await issue(), h.archive);
      await host().start();
      const client = await connect(server);
      await client.query('create table precious (v text)');
      await client.query('insert into precious values ($1)', ['only copy']);
      await client.end();
      await initializeServer(host(), server, await issue(), h.archive);
      await host().start();
      expect(await query(server, 'select v from precious')).toEqual([{ v: 'only copy' }]);
    });

    it("reads the private memory of the server's backends, and leaves out a process that is gone", async () => {
      const client = await connect(server);
      try {
        const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
        const memory = await host().processMemory([pid, 2 ** 22 + 1]);
        expect([...memory.keys()]).toEqual([pid]);
        expect(memory.get(pid)).toBeGreaterThan(0);
      } finally {
        await client.end();
      }
    });

    it('serves its certificate to clients that check it against the CA, and a new one after a reload', async () => {
      const client = await connect(server, { ca: ca.certificate });
      expect((await client.query<{ ssl: boolean }>('select ssl from pg_stat_ssl where pid = pg_backend_pid()')).rows[0]!.ssl).toBe(true);
      const next = await issue();
      await host().installCertificate(next);
      await client.query('select pg_reload_conf()');
      await waitFor('the new certificate to be served', async () => (await served()) === serial(next), 10_000);
      // The session that was open goes on; its TLS session was made with the old certificate.
      expect((await client.query<{ n: number }>('select 1 as n')).rows[0]!.n).toBe(1);
      await client.end();
    });

    it("lets customers' roles in over TLS only", async () => {
      const admin = await connect(server);
      await admin.query("create role app login password 'app-password-0123456789'");
      await installHba(host());
      await admin.query('select pg_reload_conf()');
      await admin.end();
      const app = (ssl: pg.ClientConfig['ssl']) =>
        new pg.Client({
          host: server.host!,
          port: server.port!,
          user: 'app',
          password: 'app-password-0123456789',
          database: 'postgres',
          ssl,
        });
      await expect(app(false).connect()).rejects.toThrow(/no pg_hba\.conf entry .* no encryption/);
      const tls = app({ ca: ca.certificate });
      await tls.connect();
      await tls.end();
    });

    it('refuses connections without the password', async () => {
      const client = new pg.Client({ host: server.host!, port: server.port!, user: 'postgres', password: 'wrong', database: 'postgres' });
      await expect(client.connect()).rejects.toThrow(/password authentication failed/);
    });

    it('observes a live process and the disk its data is on', async () => {
      const seen = await host().observe();
      expect(seen).toMatchObject({ alive: 'true', pid: expect.stringMatching(/^\d+$/) });
      expect(Number(seen.data_dir_bytes)).toBeGreaterThan(0);
      expect(Number(seen.disk_free_bytes)).toBeGreaterThan(0);
      expect(Number(seen.disk_total_bytes)).toBeGreaterThanOrEqual(Number(seen.disk_free_bytes));
    });

    it('observes a crashed process, restarts it, and observes that too', async () => {
      await crash(server);
      // The kernel closes a dying process's socket before it has finished exiting (exit_files
      // comes before exit_notify): on a loaded machine the pid still reads alive for a moment.
      await waitFor('the host to see the postmaster gone', async () => (await host().observe()).alive === 'false', 5000, 20);
      await host().restart();
      expect(await select1(server)).toBe(1);
      expect(await host().observe()).toMatchObject({ alive: 'true' });
    });

    it('stops, starts again with the data kept, and stopping twice is fine', async () => {
      await host().stop();
      await host().stop();
      expect(await host().observe()).toMatchObject({ alive: 'false' });
      await host().start();
      await host().start();
      expect(await query(server, 'select v from precious')).toEqual([{ v: 'only copy' }]);
    });

    it('destroys the server, and destroying twice is fine', async () => {
      await h.provider.destroy(server);
      await h.provider.destroy(server);
      expect(await host().observe()).toMatchObject({ alive: 'false' });
    });
  });

  describe(`replication steps on provider ${name}`, { timeout: 180_000 }, () => {
    let h: ProviderHarness;
    let ca: KeyedCertificate;
    const a = newServer(name);
    // A copy has its leader's superuser, password and all.
    const b = newServer(name, a.superuserPassword);
    const count = async (server: ServerRecord) => Number((await query<{ n: string }>(server, 'select count(*) as n from t'))[0]!.n);
    const backupOf = (server: ServerRecord, label: string) =>
      takeBaseBackup(
        h.bin,
        openArchive(h.archive),
        `servers/${server.id}`,
        { host: server.host!, port: server.port!, password: server.superuserPassword },
        label,
      );
    const place = async (server: ServerRecord) => {
      const placed = await h.provider.provision(server);
      Object.assign(server, { host: placed.host, port: placed.port, attrs: { ...server.attrs, ...placed.attrs } });
    };
    const follow = (server: ServerRecord, leader: ServerRecord, label: string) =>
      Object.assign(server, {
        attrs: { ...server.attrs, follows: leader.id, backup_label: label },
        leader: { host: leader.host!, port: leader.port! },
      });

    beforeAll(async () => {
      h = await make();
      ca = await createAuthority();
      const issue = (server: ServerRecord) =>
        issueServerCertificate(ca, { name: server.id, hosts: certificateHosts(server.host), validityMs: 3_600_000 });
      await place(a);
      await initializeServer(h.provider.host(a), a, await issue(a), h.archive);
      await h.provider.host(a).start();
      await query(a, 'create table t (n int)');
      await query(a, 'insert into t select generate_series(1, 100)');
      await backupOf(a, 'a-1');
      await place(b);
      follow(b, a, 'a-1');
      await initializeServer(h.provider.host(b), b, await issue(b), h.archive);
      await h.provider.host(b).start();
    });
    afterAll(async () => {
      for (const server of [a, b]) await h?.provider.destroy(server).catch(() => undefined);
      await h?.cleanup();
    });

    it("makes a follower from its leader's base backup in the archive, which streams from the leader", async () => {
      await query(a, 'insert into t select generate_series(101, 200)');
      await waitFor('the follower to have every row', async () => (await count(b)) === 200, 30_000);
      expect(await query(b, 'select pg_is_in_recovery() as r')).toEqual([{ r: true }]);
    });

    it('promotes the follower and rewinds the former primary into its standby', async () => {
      await h.provider.host(a).stop('kill');
      // The archive has nothing past what the follower received: the promotion skips it.
      await promoteStandby({ host: b.host!, port: b.port!, password: b.superuserPassword }, async () => false);
      await query(b, 'insert into t select generate_series(201, 300)');
      follow(a, b, 'b-1');
      expect(await rejoinAsStandby(h.provider.host(a), a, h.archive)).toEqual({ how: 'rewound' });
      await waitFor('the rewound standby to have every row', async () => (await count(a)) === 300, 30_000);
    });

    it('rebuilds a former primary whose data was set aside from a backup of its leader', async () => {
      await h.provider.host(a).kill();
      await h.provider.host(a).setAside();
      expect(await h.provider.host(a).hasDataFile('PG_VERSION')).toBe(false);
      await backupOf(b, 'b-1');
      await query(b, 'insert into t select generate_series(301, 400)');
      expect(await rejoinAsStandby(h.provider.host(a), a, h.archive)).toEqual({ how: 'rebuilt', because: 'no data directory to rewind' });
      await waitFor('the rebuilt standby to have every row', async () => (await count(a)) === 400, 30_000);
      expect(await h.provider.host(a).hasDataFile('standby.signal')).toBe(true);
    });
  });
}
