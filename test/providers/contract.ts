import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servedCertificate } from '../../observers/tls.ts';
import type { Provider, ServerRecord } from '../../src/providers/provider.ts';
import { initializeServer } from '../../src/replication/initialize.ts';
import type { ArchiveTarget } from '../../src/store/open.ts';
import { createAuthority, issueServerCertificate, type KeyedCertificate } from '../../src/tls/certificates.ts';
import { certificateHosts, installHba } from '../../src/tls/postgres.ts';
import { waitFor } from '../support/db.ts';

export interface ProviderHarness {
  provider: Provider;
  /** Where the servers archive their WAL. */
  archive: ArchiveTarget;
  /** Make the server's process die as a crash would (kill -9 locally, a terminated instance on a cloud). */
  crash(server: ServerRecord): Promise<void>;
  cleanup(): Promise<void>;
}

async function select1(server: ServerRecord): Promise<number> {
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
    return (await client.query<{ n: number }>('select 1 as n')).rows[0]!.n;
  } finally {
    await client.end();
  }
}

/** Every provider passes this suite: the machines rely on nothing else. */
export function providerContract(name: string, make: () => Promise<ProviderHarness>): void {
  describe(`provider contract: ${name}`, () => {
    let h: ProviderHarness;
    let ca: KeyedCertificate;
    const issue = () => issueServerCertificate(ca, { name: server.id, hosts: certificateHosts(server.host), validityMs: 3_600_000 });
    const serial = (cert: KeyedCertificate) => new X509Certificate(cert.certificate).serialNumber;
    const served = async () => (await servedCertificate(server.host!, server.port!, 5000)).serialNumber;
    const host = () => h.provider.host(server);
    const server: ServerRecord = {
      id: randomUUID(),
      provider: name,
      host: null,
      port: null,
      superuserPassword: randomBytes(24).toString('base64url'),
      attrs: {},
    };

    beforeAll(async () => {
      h = await make();
      ca = await createAuthority();
    });
    afterAll(async () => {
      await h?.provider.destroy(server).catch(() => undefined);
      await h.cleanup();
    });

    it('provisions a place, and provisioning again returns the same place', async () => {
      const place = await h.provider.provision(server);
      Object.assign(server, { host: place.host, port: place.port, attrs: place.attrs });
      expect(place.port).toBeGreaterThan(0);
      expect(await h.provider.provision(server)).toEqual(place);
    });

    it('initializes, and initializing again leaves the cluster as it is', async () => {
      const certificate = await issue();
      await initializeServer(host(), server, certificate, h.archive);
      await host().start();
      const client = new pg.Client({
        host: server.host!,
        port: server.port!,
        user: 'postgres',
        password: server.superuserPassword,
        database: 'postgres',
      });
      await client.connect();
      await client.query('create table precious (v text)');
      await client.query('insert into precious values ($1)', ['only copy']);
      await client.end();
      await initializeServer(host(), server, await issue(), h.archive);
      await host().start();
      const again = new pg.Client({
        host: server.host!,
        port: server.port!,
        user: 'postgres',
        password: server.superuserPassword,
        database: 'postgres',
      });
      await again.connect();
      expect((await again.query('select v from precious')).rows).toEqual([{ v: 'only copy' }]);
      await again.end();
    });

    it("reads the private memory of the server's backends, and leaves out a process that is gone", async () => {
      const client = new pg.Client({
        host: server.host!,
        port: server.port!,
        user: 'postgres',
        password: server.superuserPassword,
        database: 'postgres',
      });
      await client.connect();
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
      const client = new pg.Client({
        host: server.host!,
        port: server.port!,
        user: 'postgres',
        password: server.superuserPassword,
        database: 'postgres',
        ssl: { ca: ca.certificate },
      });
      await client.connect();
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
      const admin = new pg.Client({
        host: server.host!,
        port: server.port!,
        user: 'postgres',
        password: server.superuserPassword,
        database: 'postgres',
      });
      await admin.connect();
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

    it('observes a live process, restarts it after a crash, and observes that too', async () => {
      expect(await host().observe()).toMatchObject({ alive: 'true' });
      await h.crash(server);
      expect(await host().observe()).toMatchObject({ alive: 'false' });
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
      expect(await select1(server)).toBe(1);
    });

    it('destroys the server, and destroying twice is fine', async () => {
      await h.provider.destroy(server);
      await h.provider.destroy(server);
      expect(await host().observe()).toMatchObject({ alive: 'false' });
    });
  });
}
