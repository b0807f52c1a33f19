import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accepts, freePort } from '../../src/pg/ports.ts';
import { createTenant, tenantUrl } from '../../src/pg/tenant.ts';
import { testTenant } from '../support/tenants.ts';
import type { ServerRecord } from '../../src/providers/provider.ts';
import { PROVIDERS } from '../../src/providers/registry.ts';
import { initializeServer } from '../../src/replication/initialize.ts';
import { openArchive } from '../../src/store/open.ts';
import { createAuthority, issueServerCertificate, type KeyedCertificate } from '../../src/tls/certificates.ts';
import { certificateHosts } from '../../src/tls/postgres.ts';
import { takeBaseBackup } from '../../src/wal/backup.ts';
import { waitFor } from '../support/db.ts';
import { psql } from '../support/system.ts';
import { superuserClient, testProviderContext } from '../support/providers.ts';

/** An address of 127.0.0.0/8 other than 127.0.0.1: Linux routes the whole block to the loopback interface. */
const otherLoopback = () => `127.${randomInt(1, 255)}.${randomInt(1, 255)}.${randomInt(1, 255)}`;

/**
 * A host runs its server where the provider placed it. The local provider places every
 * server at 127.0.0.1, so these servers are placed by hand at other loopback addresses, as
 * a provider of one address per server (or a fleet of machines) places them.
 */
describe('a local host placed at an address other than 127.0.0.1', { timeout: 180_000 }, () => {
  let context: Awaited<ReturnType<typeof testProviderContext>>;
  let provider: ReturnType<typeof PROVIDERS.local>;
  let ca: KeyedCertificate;
  const archive = () => ({ storeUrl: `file://${context.home}/archive` });
  const newServer = (superuserPassword = randomBytes(24).toString('base64url')): ServerRecord => ({
    id: randomUUID(),
    provider: 'local',
    host: null,
    port: null,
    superuserPassword,
    attrs: {},
  });
  const primary = newServer();
  // A follower has its leader's superuser, password and all.
  const follower = newServer(primary.superuserPassword);
  const place = async (server: ServerRecord) => {
    const placed = await provider.provision(server);
    const host = otherLoopback();
    const attrs = { ...placed.attrs, ...(placed.attrs.pool_port ? { pool_port: String(await freePort(host)) } : {}) };
    Object.assign(server, { host, port: await freePort(host), attrs: { ...server.attrs, ...attrs } });
  };
  const initialize = async (server: ServerRecord) => {
    const certificate = await issueServerCertificate(ca, { name: server.id, hosts: certificateHosts(server.host), validityMs: 3_600_000 });
    await initializeServer(provider.host(server), server, certificate, archive());
    await provider.host(server).start();
  };
  const query = async (server: ServerRecord, sql: string) => {
    const client = superuserClient(server);
    await client.connect();
    try {
      return (await client.query(sql)).rows;
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    context = await testProviderContext({ pooler: true });
    provider = PROVIDERS.local(context);
    ca = await createAuthority();
    await place(primary);
    await initialize(primary);
  });
  afterAll(async () => {
    for (const server of [primary, follower]) await provider?.destroy(server).catch(() => undefined);
    await context?.remove();
  });

  it('runs Postgres at that address, and not at 127.0.0.1', async () => {
    expect(await query(primary, 'select 1 as n')).toEqual([{ n: 1 }]);
    expect(await accepts('127.0.0.1', primary.port!)).toBe(false);
  });

  it('runs its pooler at that address, in front of Postgres there, and not at 127.0.0.1', async () => {
    const tenant = testTenant();
    await createTenant({ host: primary.host!, port: primary.port!, password: primary.superuserPassword }, tenant);
    await provider.host(primary).refreshPool();
    const poolPort = Number(primary.attrs.pool_port);
    expect(await psql(tenantUrl(primary.host!, poolPort, tenant), 'select current_user')).toBe(tenant.role);
    expect(await accepts('127.0.0.1', poolPort)).toBe(false);
  });

  it('runs a follower restored from its leader at its own address, not at its leader’s', async () => {
    await query(primary, 'create table t as select generate_series(1, 10) as n');
    await takeBaseBackup(
      context.bin,
      openArchive(archive()),
      `servers/${primary.id}`,
      { host: primary.host!, port: primary.port!, password: primary.superuserPassword },
      'p-1',
    );
    await place(follower);
    Object.assign(follower, {
      attrs: { ...follower.attrs, follows: primary.id, backup_label: 'p-1' },
      leader: { host: primary.host!, port: primary.port! },
    });
    await initialize(follower);
    const rows = () =>
      query(follower, 'select count(*)::int as n from t').then(
        (r) => r[0].n as number,
        () => undefined,
      );
    await waitFor('the follower to answer at its address', async () => (await rows()) === 10, 30_000);
    expect(await accepts(primary.host!, follower.port!)).toBe(false);
  });
});
