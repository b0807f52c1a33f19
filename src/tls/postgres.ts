import type { Host } from '../hosts/host.ts';

/**
 * What makes a Postgres server speak TLS. The key and certificate live beside the data
 * directory (`<server dir>/tls`), not in it: a base backup copies the data directory into
 * the archive and into every standby and follower made from it, and no server's private
 * key should travel with its data. The paths are relative to the data directory, so the
 * settings a copy inherits from its leader still name the copy's own files.
 */
export const TLS_DIR = 'tls';
export const CERT_FILE = 'server.crt';
export const KEY_FILE = 'server.key';

/** postgresql.conf settings; every setting here takes effect on a reload (Postgres 10 and later). */
export const TLS_SETTINGS: Record<string, string> = {
  ssl: 'on',
  ssl_cert_file: `'../${TLS_DIR}/${CERT_FILE}'`,
  ssl_key_file: `'../${TLS_DIR}/${KEY_FILE}'`,
  ssl_min_protocol_version: "'TLSv1.2'",
};

/**
 * Who may connect, and how. Customers' roles only over TLS: a tenant that asks for no
 * encryption finds no line that lets it in ("no pg_hba.conf entry … no encryption").
 * pgfleet's own superuser connections (observers, tenant management, base backups,
 * rewinds, streaming replication) may use TLS and are not made to: they run on the
 * machine that hosts the servers and reach them over loopback, and libpq's own tools
 * (walreceiver, pg_basebackup, pg_rewind, psql) ask for TLS by default (sslmode=prefer)
 * anyway. Servers on other hosts will need `hostssl` for these lines too.
 */
export const PG_HBA = `# managed by pgfleet
# TYPE   DATABASE     USER      ADDRESS  METHOD
host     all          postgres  all      scram-sha-256
host     replication  postgres  all      scram-sha-256
hostssl  all          all       all      scram-sha-256
`;

/**
 * The addresses a server's certificate names: where it listens, and loopback in every
 * spelling, which covers the router (it listens on 127.0.0.1 and pipes TLS through
 * untouched, so clients of an `ha` database check the primary's certificate against the
 * router's address).
 */
export function certificateHosts(serverHost: string | null): string[] {
  return [...new Set([...(serverHost ? [serverHost] : []), '127.0.0.1', '::1', 'localhost'])];
}

/**
 * pgfleet's own pg_hba.conf, read from the server's next start or configuration reload. A
 * copy carries its leader's, which may be older than TLS, so every server gets it when it is
 * made or rejoins; a server that predates TLS gets it only once it serves TLS
 * (src/tls/renewal.ts), since it lets customers' roles in over TLS only.
 */
export async function installHba(host: Host): Promise<void> {
  await host.writeDataFile('pg_hba.conf', PG_HBA);
}
