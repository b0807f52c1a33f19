import pg from 'pg';
import { statesTagged } from '../../machines/policy.ts';
import { serverMachine } from '../../machines/server.ts';
import { observeTls } from '../../observers/tls.ts';
import type { Queryable } from '../db.ts';
import { asSuperuser } from '../pg/superuser.ts';
import type { ServerRecord } from '../providers/provider.ts';
import { providerOf, type Providers } from '../providers/registry.ts';
import { enqueueEach } from '../queue/jobs.ts';
import type { JobHandler } from '../queue/worker.ts';
import { queueForTask } from '../runner/runner.ts';
import type { Sealer } from '../sealer.ts';
import { loadServerRecord } from './rows.ts';
import { certificateExpiry, issueServerCertificate, type KeyedCertificate } from '../tls/certificates.ts';
import { certificateHosts, installHba, TLS_SETTINGS } from '../tls/postgres.ts';

const DAY_MS = 86_400_000;

/** The deployment's authority and how long the certificates it signs live. */
export interface TlsOptions {
  authority: KeyedCertificate;
  /** Days a server certificate is valid (PGFLEET_TLS_CERT_DAYS). */
  certDays: number;
  /** A certificate that expires within this many days is replaced (PGFLEET_TLS_RENEW_DAYS). */
  renewDays: number;
}

/** A new key and certificate for the server, naming every address its clients use. */
export function issueFor(server: Pick<ServerRecord, 'id' | 'host'>, tls: TlsOptions): Promise<KeyedCertificate> {
  return issueServerCertificate(tls.authority, {
    name: `pgfleet server ${server.id}`,
    hosts: certificateHosts(server.host),
    validityMs: tls.certDays * DAY_MS,
  });
}

export function renewalDue(expiresAt: Date, renewDays: number, now = new Date()): boolean {
  return expiresAt.getTime() - now.getTime() < renewDays * DAY_MS;
}

export const RENEW_TASK = 'renew_certificate';

/**
 * Ask for the job on every server whose latest observation shows its TLS short of what it
 * should be: a certificate expiring within `renewDays`, or a server that predates TLS
 * (offers none, or lets customers in without it). Only live, available servers: one that
 * is starting, restarting or fenced has its own job to finish first, and its next
 * observation asks again. The job key makes asking twice a no-op.
 */
export async function enqueueRenewals(db: Queryable, renewDays: number): Promise<number> {
  const { rows } = await db.query<{ id: string }>(
    `select s.id from servers s join entity_states m on m.entity_id = s.id
     where m.finished_at is null and m.state = any($2::text[])
       and (s.last_observation->'tls_offered' = 'false' or s.last_observation->'tls_required' = 'false'
            or (s.last_observation->'tls_cert_expires_at')::timestamptz < now() + make_interval(days => $1))`,
    [renewDays, statesTagged(serverMachine, 'healthy')],
  );
  return enqueueEach(
    db,
    RENEW_TASK,
    queueForTask(RENEW_TASK),
    rows.map((r) => r.id),
  );
}

const reload = (client: pg.Client) => client.query('select pg_reload_conf()');

/**
 * Bring a server's TLS to what it should be, without a restart, each step only when a
 * fresh look shows it is needed, so the job is safe to run twice or to resume after a
 * crash at any point:
 * 1. a server that predates TLS gets a key and certificate and `ssl = on` (ALTER SYSTEM,
 *    which a standby takes too), and a reload;
 * 2. a certificate within `renewDays` of its expiry is replaced: new files, and
 *    `pg_reload_conf()` makes the server serve them to new connections (sessions already
 *    open keep the TLS session they have);
 * 3. once the server serves TLS, and only then, customers' roles are held to it (pg_hba).
 */
export function renewCertificateTask(
  providers: Providers,
  sealer: Sealer,
  tls: TlsOptions,
  timeoutMs: number,
): JobHandler<typeof RENEW_TASK> {
  return async (job, { pool, log }) => {
    const server = await loadServerRecord(pool, sealer, job.entityId);
    if (!server?.host || server.port === null) return;
    const host = providerOf(providers, server).host(server);
    const target = { host: server.host, port: server.port, password: server.superuserPassword };
    const superuser = <T>(fn: (client: pg.Client) => Promise<T>) => asSuperuser(target, 'postgres', fn);
    let served = await observeTls(server.host, server.port, timeoutMs);
    if (served.tls_offered === 'false') {
      await host.installCertificate(await issueFor(server, tls));
      await superuser(async (client) => {
        // Our own constants, already in postgresql.conf syntax, which ALTER SYSTEM shares.
        for (const [name, value] of Object.entries(TLS_SETTINGS))
          await client.query(`alter system set ${pg.escapeIdentifier(name)} = ${value}`);
        await reload(client);
      });
      served = await servingTls(server.host, server.port, timeoutMs);
      log.info({ expires: served.tls_cert_expires_at }, 'TLS turned on for a server that predates it');
    }
    if (!served.tls_cert_expires_at) {
      log.warn({ error: served.tls_error }, 'the server serves no certificate right now; its next observation asks again');
      return;
    }
    if (renewalDue(new Date(served.tls_cert_expires_at), tls.renewDays)) {
      const certificate = await issueFor(server, tls);
      await host.installCertificate(certificate);
      await superuser(reload);
      log.info(
        { was: served.tls_cert_expires_at, expires: certificateExpiry(certificate.certificate).toISOString() },
        'server certificate renewed',
      );
    }
    const required = await superuser(
      async (client) => (await client.query(`select from pg_hba_file_rules where type = 'hostssl'`)).rowCount! > 0,
    );
    if (!required) {
      await installHba(host);
      await superuser(reload);
      log.info('customers must now connect to this server over TLS');
    }
  };
}

/** The reload is asynchronous: the postmaster reads the files when it handles the signal. */
async function servingTls(host: string, port: number, timeoutMs: number): Promise<Record<string, string>> {
  for (let waited = 0; ; waited += 100) {
    const seen = await observeTls(host, port, timeoutMs);
    if (seen.tls_offered === 'true') return seen;
    if (waited >= 10_000)
      throw new Error(
        `the server does not serve TLS 10 s after ssl = on and a reload (${seen.tls_error ?? 'it still answers N'}): its log says why`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}
