import { observeTls } from '../../observers/tls.ts';
import type { Queryable } from '../db.ts';
import { asSuperuser } from '../pg/superuser.ts';
import type { Provider, ServerRecord } from '../providers/provider.ts';
import type { JobHandler } from '../queue/worker.ts';
import { queueForTask } from '../runner.ts';
import type { Sealer } from '../sealer.ts';
import { loadServerRecord } from '../servers.ts';
import { certificateExpiry, issueServerCertificate, type KeyedCertificate } from './certificates.ts';
import { certificateHosts } from './postgres.ts';

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
  return issueServerCertificate(tls.authority, { name: `pgfleet server ${server.id}`, hosts: certificateHosts(server.host), validityMs: tls.certDays * DAY_MS });
}

export function renewalDue(expiresAt: Date, renewDays: number, now = new Date()): boolean {
  return expiresAt.getTime() - now.getTime() < renewDays * DAY_MS;
}

export const RENEW_TASK = 'renew_certificate';

/**
 * Ask for the renewal of every certificate that its server's latest observation shows
 * expiring within `renewDays`. Only live, available servers: one that is starting,
 * restarting or fenced has its own job to finish first, and its next observation asks
 * again. The job key makes asking twice a no-op.
 */
export async function enqueueRenewals(db: Queryable, renewDays: number): Promise<number> {
  const { rowCount } = await db.query(
    `insert into jobs (queue, entity_id, task, key)
     select $1, s.id, $2, $2
     from servers s join machines m on m.entity_id = s.id
     where m.finished_at is null and m.state = 'available' and s.last_observation ? 'tls_cert_expires_at'
       and (s.last_observation->'tls_cert_expires_at')::timestamptz < now() + make_interval(days => $3)
     on conflict (entity_id, key) where locked_by is null and dead_at is null do nothing`,
    [queueForTask(RENEW_TASK), RENEW_TASK, renewDays],
  );
  return rowCount ?? 0;
}

/**
 * Replace a server's certificate that is due, without a restart: a new key and certificate
 * are written where the server reads them, and `pg_reload_conf()` makes it serve them to
 * new connections (sessions already open keep the TLS session they have). Safe to run
 * twice: it first looks at the certificate the server serves now, and one that is no
 * longer due (an earlier run renewed it) is left alone.
 */
export function renewCertificateTask(providers: Record<string, Provider>, sealer: Sealer, tls: TlsOptions, timeoutMs: number): JobHandler {
  return async (job, { pool, log }) => {
    const server = await loadServerRecord(pool, sealer, job.entityId!);
    if (!server?.host || server.port === null) return;
    const provider = providers[server.provider];
    if (!provider) throw new Error(`server ${server.id} uses provider "${server.provider}", which this process does not have`);
    const served = await observeTls(server.host, server.port, timeoutMs);
    if (!served.tls_cert_expires_at) {
      log.warn({ error: served.tls_error }, 'the server serves no certificate to renew right now; its next observation asks again');
      return;
    }
    if (!renewalDue(new Date(served.tls_cert_expires_at), tls.renewDays)) return;
    const certificate = await issueFor(server, tls);
    await provider.installCertificate(server, certificate);
    await asSuperuser({ host: server.host, port: server.port, password: server.superuserPassword }, 'postgres', (client) => client.query('select pg_reload_conf()'));
    log.info({ was: served.tls_cert_expires_at, expires: certificateExpiry(certificate.certificate).toISOString() }, 'server certificate renewed');
  };
}
