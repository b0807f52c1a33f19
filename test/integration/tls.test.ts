import { randomUUID, X509Certificate } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { servedCertificate } from '../../observers/tls.ts';
import { createLogger } from '../../src/log.ts';
import { pgIdentity } from '../../src/pg/cluster.ts';
import type { Job } from '../../src/queue/jobs.ts';
import { loadServerRecord } from '../../src/servers/rows.ts';
import { certificateAuthority } from '../../src/tls/authority.ts';
import { createAuthority, issueServerCertificate } from '../../src/tls/certificates.ts';
import { certificateHosts } from '../../src/tls/postgres.ts';
import { renewCertificateTask } from '../../src/servers/certificates.ts';
import { ssoToken } from '../../src/web/sso.ts';
import { waitFor, type TestDatabase } from '../support/db.ts';
import { addonFetch, adminUrl, provisionHa, psql, TEST_SEALER, type System, useSystemWithPlatform } from '../support/system.ts';
import { caClient, verifyFull } from '../support/tls.ts';

const SSO_SALT = 'sso-salt-0123456789abcdef';

const nodeClient = (url: string, ca: string) => caClient(url, ca, { connectionTimeoutMillis: 5000 });

async function nodeQuery(client: pg.Client, sql: string): Promise<Record<string, unknown>> {
  await client.connect();
  try {
    return (await client.query(sql)).rows[0]!;
  } finally {
    await client.end();
  }
}

const SSL_NOW = 'select ssl, version from pg_stat_ssl where pid = pg_backend_pid()';

describe("TLS on every connection to a customer database, with pgfleet's own CA", { timeout: 240_000 }, () => {
  const ctx = useSystemWithPlatform(['web', 'worker', 'clock', 'router'], {
    ADDON_SSO_SALT: SSO_SALT,
    PGFLEET_ANSWER_WITHIN: '20',
    PGFLEET_TLS_CERT_DAYS: '30',
    PGFLEET_TLS_RENEW_DAYS: '10',
  });
  const { platform } = ctx;
  let db: TestDatabase;
  let system: System;
  let ca: string;
  let shared: { id: string; url: string };

  beforeAll(async () => {
    ({ db, system } = ctx);
    ca = system.running.caCertificate;
  });

  const primaryOf = async (id: string) =>
    ((await system.api('GET', `/api/resources/${id}`)).body.servers as { id: string; role: string; port: number }[]).find(
      (s) => s.role === 'primary',
    )!;

  it('hands out one CA certificate: publicly at /ca.pem, to operators, and to customers', async () => {
    const pem = await fetch(`${system.running.url}/ca.pem`);
    expect(pem.status).toBe(200);
    expect(pem.headers.get('content-type')).toMatch(/application\/x-pem-file/);
    expect(await pem.text()).toBe(ca);
    const cert = new X509Certificate(ca);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toMatch(/CN=pgfleet CA [0-9a-f]{8}/);
    // The control database keeps it, sealed: every process hands out this one.
    const { rows } = await db.pool.query<{ certificate: string; key_sealed: string }>(
      'select certificate, key_sealed from certificate_authority',
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]!.certificate).toBe(ca);
    expect(rows[0]!.key_sealed).not.toMatch(/PRIVATE KEY/);

    expect((await fetch(`${system.running.url}/api/ca`)).status).toBe(401);
    const api = await system.api('GET', '/api/ca');
    expect(api.status).toBe(200);
    expect(api.body).toMatchObject({
      certificate: ca,
      fingerprint256: cert.fingerprint256,
      notAfter: new Date(cert.validTo).toISOString(),
    });
  });

  it('a shared database: psql and node-postgres connect with verify-full and the CA; no TLS, no entry', async () => {
    const uuid = randomUUID();
    const res = await addonFetch(system, 'POST', '/heroku/resources', { uuid, plan: 'shared', region: 'us' });
    expect(res.status).toBe(200);
    const url = ((await res.json()) as { config: { PGFLEET_URL: string } }).config.PGFLEET_URL;
    expect(url).toMatch(/\?sslmode=require$/);
    shared = { id: uuid, url };

    // As the URL is: encrypted, whatever the client trusts.
    expect(await psql(url, SSL_NOW)).toMatch(/^t\|TLSv1\.[23]$/);
    // Checking the certificate: it chains to the CA handed out and names the URL's host.
    expect(await psql(verifyFull(url, system.caFile), SSL_NOW)).toMatch(/^t\|TLSv1\.[23]$/);
    expect(await nodeQuery(nodeClient(url, ca), SSL_NOW)).toMatchObject({ ssl: true });
    expect(await nodeQuery(new pg.Client({ connectionString: verifyFull(url, system.caFile) }), SSL_NOW)).toMatchObject({ ssl: true });

    // The key is the Postgres user's alone, and lives beside the data directory, never in it.
    const serverDir = path.join(system.config.home, 'servers', (await primaryOf(uuid)).id);
    const key = await fs.stat(path.join(serverDir, 'tls', 'server.key'));
    expect(key.mode & 0o777).toBe(0o600);
    expect(key.uid).toBe(pgIdentity(system.config.pgUser)?.uid ?? process.getuid!());
    expect((await fs.readdir(path.join(serverDir, 'data'))).filter((f) => /\.(key|crt)$/.test(f))).toEqual([]);

    // Verification is real: another CA's certificate is not this one's.
    const stranger = path.join(system.config.home, 'stranger-ca.pem');
    await fs.writeFile(stranger, (await createAuthority()).certificate);
    await expect(psql(verifyFull(url, stranger), 'select 1')).rejects.toThrow(/certificate verify failed/);
    await expect(nodeQuery(nodeClient(url, (await createAuthority()).certificate), 'select 1')).rejects.toThrow(
      /self[- ]signed|unable to verify|certificate/,
    );

    // Asking for no encryption: the server has no line that lets a tenant in without TLS.
    await expect(psql(`${url}&sslmode=disable`, 'select 1')).rejects.toThrow(/no pg_hba\.conf entry .* no encryption/);
    const plain = new URL(url);
    plain.searchParams.delete('sslmode');
    await expect(nodeQuery(new pg.Client({ connectionString: plain.href, ssl: false }), 'select 1')).rejects.toThrow(
      /no pg_hba\.conf entry .* no encryption/,
    );
  });

  it('the SSO page shows the CA and how to connect with verify-full', async () => {
    const timestamp = String(Math.floor(Date.now() / 1000));
    const login = await fetch(
      `${system.running.url}/heroku/resources/${shared.id}?token=${ssoToken(shared.id, SSO_SALT, timestamp)}&timestamp=${timestamp}`,
      { redirect: 'manual' },
    );
    expect(login.status).toBe(302);
    const session = login.headers
      .getSetCookie()
      .find((c) => c.startsWith('pgfleet_sso='))!
      .split(';')[0]!;
    const page = await (await fetch(`${system.running.url}/sso/resources/${shared.id}`, { headers: { cookie: session } })).text();
    expect(page).toContain('href="/ca.pem"');
    expect(page).toContain('psql "$PGFLEET_URL&amp;sslmode=verify-full&amp;sslrootcert=pgfleet-ca.pem"');
    expect(page).toContain(ca.trim());
  });

  it("an ha database through the router: the primary's certificate names the router's address", async () => {
    const { uuid, config } = await provisionHa(system, platform);
    const url = config.PGFLEET_URL!;
    const primary = await primaryOf(uuid);
    expect(new URL(url).port).not.toBe(String(primary.port));

    // The router pipes the TLS session through: the client checks the primary's certificate.
    expect(
      await psql(verifyFull(url, system.caFile), `select inet_server_port(), (${SSL_NOW.replace('select ssl, version', 'select ssl')})`),
    ).toBe(`${primary.port}|t`);
    expect(await nodeQuery(nodeClient(url, ca), 'select inet_server_port() as port, pg_is_in_recovery() as standby')).toMatchObject({
      port: primary.port,
      standby: false,
    });
    expect(await psql(verifyFull(config.PGFLEET_READONLY_URL!, system.caFile), SSL_NOW)).toMatch(/^t\|TLSv1\.[23]$/);
    await expect(psql(`${url}&sslmode=disable`, 'select 1')).rejects.toThrow(/no pg_hba\.conf entry .* no encryption/);
  });

  it('a server from before TLS gets it with no restart, and then holds customers to it', async () => {
    const created = await system.api('POST', '/api/servers', { provider: 'local' });
    const id = created.body.id as string;
    await waitFor(
      'the server to be available',
      async () => (await system.api('GET', `/api/servers/${id}`)).body.state === 'available',
      60_000,
    );
    const admin = await adminUrl(db.pool, id);
    const startedAt = await psql(admin, 'select pg_postmaster_start_time()');
    await psql(admin, "create role app login password 'app-password-0123456789'");
    const { hostname: host, port } = new URL(admin);
    const app = `postgres://app:app-password-0123456789@${host}:${port}/postgres`;

    // As servers were made before: initdb's pg_hba.conf (TCP lines) and no TLS.
    await fs.writeFile(
      path.join(system.config.home, 'servers', id, 'data', 'pg_hba.conf'),
      'host all all all scram-sha-256\nhost replication all all scram-sha-256\n',
    );
    await psql(admin, 'alter system set ssl = off');
    await psql(admin, 'select pg_reload_conf()');

    // Seen without TLS (the job acts only on such an observation), then seen with it, required.
    const seenWithout = await waitFor(
      'an observation without TLS',
      async () => {
        const { rows } = await db.pool.query<{ at: Date }>(
          `select max(observed_at) as at from observations where entity_id = $1 and attrs->'tls_offered' = 'false'`,
          [id],
        );
        return rows[0]!.at ?? undefined;
      },
      30_000,
    );
    await waitFor(
      'TLS on and required',
      async () => {
        const { rows } = await db.pool.query<{ obs: Record<string, string>; at: Date }>(
          'select hstore_to_json(last_observation) as obs, last_observed_at as at from servers where id = $1',
          [id],
        );
        const { obs, at } = rows[0]!;
        return at > seenWithout && obs.tls_offered === 'true' && obs.tls_required === 'true';
      },
      60_000,
    );
    const served = await servedCertificate(host, Number(port), 2000);
    expect(new X509Certificate(served.raw).checkIssued(new X509Certificate(ca))).toBe(true);
    expect(await psql(admin, 'select pg_postmaster_start_time()')).toBe(startedAt);
    expect(await psql(verifyFull(`${app}?sslmode=require`, system.caFile), SSL_NOW)).toMatch(/^t\|TLSv1\.[23]$/);
    await expect(psql(`${app}?sslmode=disable`, 'select 1')).rejects.toThrow(/no pg_hba\.conf entry .* no encryption/);
  });

  it('renews a certificate near its expiry with no restart; open and new connections keep working', async () => {
    const { id: serverId } = await primaryOf(shared.id);
    const server = (await loadServerRecord(db.pool, TEST_SEALER, serverId))!;
    const admin = await adminUrl(db.pool, serverId);
    const startedAt = await psql(admin, 'select pg_postmaster_start_time()');
    const held = nodeClient(shared.url, ca);
    await held.connect();

    // A certificate made long ago: an hour left, well within PGFLEET_TLS_RENEW_DAYS.
    const authority = await certificateAuthority(db.pool, TEST_SEALER);
    const short = await issueServerCertificate(authority, {
      name: 'short-lived',
      hosts: certificateHosts(server.host),
      validityMs: 3_600_000,
    });
    const shortSerial = new X509Certificate(short.certificate).serialNumber;
    await system.running.providers.local!.host(server).installCertificate(short);
    await psql(admin, 'select pg_reload_conf()');

    const renewed = await waitFor(
      'a renewed certificate to be served',
      async () => {
        const cert = await servedCertificate(server.host!, server.port!, 2000);
        return cert.serialNumber !== shortSerial && new Date(cert.valid_to).getTime() - Date.now() > 29 * 86_400_000 ? cert : undefined;
      },
      60_000,
    );
    // PGFLEET_TLS_CERT_DAYS=30.
    expect(new Date(renewed.valid_to).getTime() - Date.now()).toBeLessThan(31 * 86_400_000);
    await waitFor(
      'the renewed certificate to be observed',
      async () => {
        const { rows } = await db.pool.query<{ serial: string }>(
          `select last_observation->'tls_cert_serial' as serial from servers where id = $1`,
          [serverId],
        );
        return rows[0]?.serial === renewed.serialNumber.toLowerCase();
      },
      30_000,
    );

    expect(await psql(admin, 'select pg_postmaster_start_time()')).toBe(startedAt);
    expect((await held.query('select 1 as n')).rows[0]).toEqual({ n: 1 });
    await held.end();
    expect(await psql(verifyFull(shared.url, system.caFile), SSL_NOW)).toMatch(/^t\|TLSv1\.[23]$/);
    expect(await nodeQuery(nodeClient(shared.url, ca), SSL_NOW)).toMatchObject({ ssl: true });

    // Running the renewal again (a retried job, the clock asking twice) leaves a certificate
    // that is not due as it is.
    const renew = renewCertificateTask(system.running.providers, TEST_SEALER, { authority, certDays: 30, renewDays: 10 }, 2000);
    const job: Job<'renew_certificate'> = {
      id: '0',
      queue: 'default',
      entityId: serverId,
      task: 'renew_certificate',
      payload: {},
      key: null,
      priority: 0,
      attempts: 0,
      maxAttempts: 1,
    };
    const ctx = { pool: db.pool, log: createLogger('silent') };
    await renew(job, ctx);
    await renew(job, ctx);
    expect((await servedCertificate(server.host!, server.port!, 2000)).serialNumber).toBe(renewed.serialNumber);
  });
});
