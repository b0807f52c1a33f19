import { createHmac } from 'node:crypto';
import { scramVerifier } from './tenant.ts';
import { asSuperuser, type SuperuserTarget } from './superuser.ts';

/**
 * What a server's pgbouncer must know, read from the server's own catalog: every tenant
 * database with the login roles let into it (its owner and its named credentials), their
 * SCRAM verifiers and connection limits, and how many
 * connections the server takes. The catalog is the one source of truth, so a pooler
 * configured from it after any change (a tenant made, dropped, its plan changed, a
 * failover) never disagrees with Postgres, and no password is stored anywhere else.
 */
export interface PoolCatalog {
  maxConnections: number;
  superuserReserved: number;
  tenants: PoolTenant[];
}

/** One login role granted CONNECT on one tenant database: a row per pair. */
export interface PoolTenant {
  database: string;
  role: string;
  /** The role's `SCRAM-SHA-256$…` verifier exactly as pg_authid holds it. */
  verifier: string;
  /** The role's connection limit; -1 means none. */
  connectionLimit: number;
  /**
   * The database's connection limit, which bounds all its roles together (the plan's);
   * -1 or absent (tenants made before it was set) means its largest role's limit.
   */
  databaseLimit?: number;
}

/** The admin-console user that may only read pgbouncer's statistics (`SHOW POOLS`). */
export const STATS_USER = 'pgfleet_stats';

/**
 * Connections of a server the pooler never hands out besides the
 * `superuser_reserved_connections` Postgres keeps (3 by default): pgfleet's own sessions
 * (the observer, the tenant probe, a base backup, a dump during a move, an operator's psql).
 * With the 3, a default server (100) has 90 left: the dedicated plan's connection limit.
 */
const PGFLEET_SESSIONS = 7;

/**
 * The part of a tenant's connection limit its pool may use: a pooled server connection
 * logs in as the tenant's role and counts against the role's limit like a direct one, so a
 * pool allowed the whole limit would leave a tenant that also connects directly refused
 * there, and its pool failing logins. Heroku's pooler takes 75% too: a plan of 20 pools 15
 * and keeps 5 for direct connections.
 */
const POOLED_SHARE_OF_LIMIT = 0.75;

/**
 * Idle server connections close after 30 s: a pooled connection counts against its role's
 * connection limit like a direct one, so idle ones must not sit on a tenant's limit.
 */
const SERVER_IDLE_TIMEOUT_SECONDS = 30;

/**
 * The stats user's password, derived from the server's superuser password: whoever may
 * observe the server may read its pooler's statistics, and nothing more is stored.
 */
export function statsPassword(superuserPassword: string): string {
  return createHmac('sha256', superuserPassword).update('pgfleet pgbouncer stats').digest('base64url');
}

/** Its verifier, salted from the password too, so the files of an unchanged catalog stay byte for byte the same. */
function statsVerifier(superuserPassword: string): string {
  const salt = createHmac('sha256', superuserPassword).update('pgfleet pgbouncer stats salt').digest().subarray(0, 16);
  return scramVerifier(statsPassword(superuserPassword), salt);
}

/**
 * The advisory lock key that serialises refreshes of one server's pooler. Workers in any
 * process may refresh it at once (a tenant made by one, the pooler restarted by another):
 * one that read the catalog before a tenant was made must not write its files after one
 * that read it since, nor two write the same files at once.
 */
const POOL_REFRESH_LOCK = 0x70_6f_6f_6c;

/**
 * Run `fn` with the server's catalog as it is now, holding the server's pool refresh lock
 * until `fn` is done (a session lock, so it goes with the connection whatever happens).
 */
export async function withPoolCatalog<T>(target: SuperuserTarget, fn: (catalog: PoolCatalog) => Promise<T>): Promise<T> {
  return asSuperuser(target, 'postgres', async (client) => {
    await client.query('select pg_advisory_lock($1)', [POOL_REFRESH_LOCK]);
    const settings = await client.query<{ max: number; reserved: number }>(
      `select current_setting('max_connections')::int as max, current_setting('superuser_reserved_connections')::int as reserved`,
    );
    // Tenant databases: every connectable database but the server's own, with each login
    // role that is no superuser and was granted CONNECT on it (the platform owns tenant
    // databases; their tenant and its named credentials are the roles it let in). Only SCRAM verifiers: pgbouncer logs
    // in to Postgres with the client's own SCRAM proof, which needs the very verifier the
    // server holds. Only plain names (pgfleet's are `d…` and `u…` in hex), which need no
    // quoting in the files.
    const { rows } = await client.query<PoolTenant>(
      `select distinct d.datname as database, r.rolname as role, r.rolpassword as verifier,
         r.rolconnlimit as "connectionLimit", d.datconnlimit as "databaseLimit"
       from pg_database d cross join lateral aclexplode(d.datacl) a join pg_authid r on r.oid = a.grantee
       where a.privilege_type = 'CONNECT' and d.datallowconn and not d.datistemplate and d.datname <> 'postgres'
         and r.rolcanlogin and not r.rolsuper and r.rolpassword like 'SCRAM-SHA-256$%'
         and d.datname ~ '^[a-z_][a-z0-9_]*$' and r.rolname ~ '^[a-z_][a-z0-9_]*$'
       order by d.datname, r.rolname`,
    );
    return fn({ maxConnections: settings.rows[0]!.max, superuserReserved: settings.rows[0]!.reserved, tenants: rows });
  });
}

/**
 * Server connections each tenant may have through the pooler. Together they never exceed
 * what the server has room for (`max_connections` less what is kept back) and none exceeds
 * 75% of its tenant's own limit. When those fit, each tenant gets them (2 tenants of 20 on
 * a server of 100: 15 each); else each gets 1 (0 would mean no limit to pgbouncer) and the
 * rest of the room is shared in proportion, rounded down: 40 tenants of 15 and one of 67 on
 * a room of 90 get 1 + ⌊49 × 14 / 626⌋ = 2 each and 1 + ⌊49 × 66 / 626⌋ = 6 (86 in all). A
 * server takes at most 50 tenants, fewer than its room, so every tenant gets its 1.
 */
export function poolShares(catalog: PoolCatalog): Map<string, number> {
  const room = Math.max(catalog.maxConnections - catalog.superuserReserved - PGFLEET_SESSIONS, 1);
  const databases = databaseLimits(catalog.tenants);
  const limit = (connectionLimit: number) => (connectionLimit < 0 ? room : Math.max(Math.min(pooledShare(connectionLimit), room), 1));
  const total = [...databases.values()].reduce((sum, l) => sum + limit(l), 0);
  const count = databases.size;
  const spare = Math.max(room - count, 0);
  const share = (l: number) => (total <= room ? limit(l) : 1 + Math.floor((spare * (limit(l) - 1)) / (total - count)));
  return new Map([...databases].map(([database, l]) => [database, share(l)]));
}

const pooledShare = (connectionLimit: number) => Math.floor(connectionLimit * POOLED_SHARE_OF_LIMIT);

/** Each database's connection limit: its own, else its largest role's (-1 when a role has none). */
function databaseLimits(tenants: PoolTenant[]): Map<string, number> {
  const limits = new Map<string, number>();
  for (const t of tenants) {
    const own = t.databaseLimit ?? -1;
    const before = limits.get(t.database);
    if (own >= 0) limits.set(t.database, own);
    else if (before === undefined || (before >= 0 && (t.connectionLimit < 0 || t.connectionLimit > before)))
      limits.set(t.database, t.connectionLimit);
  }
  return limits;
}

/**
 * Server connections one role may hold through the pool, where that is less than its
 * database's share: a named credential's own limit (a quarter of the plan's) taken down by
 * the same 75%, so its pool never asks Postgres for more than the role may have.
 */
function userCaps(catalog: PoolCatalog, shares: Map<string, number>): Map<string, number> {
  const caps = new Map<string, number>();
  for (const t of catalog.tenants) {
    if (t.connectionLimit < 0) continue;
    const cap = Math.max(pooledShare(t.connectionLimit), 1);
    if (cap < shares.get(t.database)!) caps.set(t.role, Math.min(cap, caps.get(t.role) ?? cap));
  }
  return caps;
}

export interface PoolFiles {
  'pgbouncer.ini': string;
  'userlist.txt': string;
  'hba.conf': string;
}

export interface PoolPlace {
  /** Where the pooler's files live: the server's `pgbouncer` directory. */
  dir: string;
  /** Where its server was placed: the pooler listens there too, and reaches its server there. */
  host: string;
  listenPort: number;
  serverPort: number;
  superuserPassword: string;
  /** The server's own key and certificate: clients reach the pooler over TLS, as they reach Postgres. */
  tls?: { keyFile: string; certFile: string };
}

const quote = (value: string) => `"${value.replace(/"/g, '""')}"`;

/**
 * pgbouncer's three files. Authentication is an `auth_file` of SCRAM verifiers copied from
 * pg_authid, not `auth_query`: Debian 12's pgbouncer (1.18) runs an auth query inside the
 * database the client asks for (`auth_dbname` came in 1.20), which would put a function and
 * a CONNECT grant for a lookup role into every customer's database, and into its dump when
 * it moves. A verifier cannot log in by itself; pgbouncer logs in to Postgres with the
 * client's own SCRAM proof. `auth_type = hba` with one line per role and database lets a role reach
 * only its own database: another tenant's is refused at the pooler, before any server
 * connection is tried.
 */
export function poolFiles(place: PoolPlace, catalog: PoolCatalog): PoolFiles {
  const shares = poolShares(catalog);
  const databases = [...shares].map(
    ([database, share]) =>
      `${database} = host=${place.host} port=${place.serverPort} dbname=${database} pool_size=${share} max_db_connections=${share}`,
  );
  const caps = [...userCaps(catalog, shares)].map(([role, cap]) => `${role} = max_user_connections=${cap}`);
  const ini = [
    '; written by pgfleet from the server catalog; edits are overwritten',
    '[databases]',
    ...databases,
    '',
    ...(caps.length > 0 ? ['[users]', ...caps, ''] : []),
    '[pgbouncer]',
    `listen_addr = ${place.host}`,
    `listen_port = ${place.listenPort}`,
    'unix_socket_dir =',
    'auth_type = hba',
    `auth_hba_file = ${place.dir}/hba.conf`,
    `auth_file = ${place.dir}/userlist.txt`,
    `stats_users = ${STATS_USER}`,
    // Each transaction takes a server connection and gives it back: many clients share few.
    'pool_mode = transaction',
    // Only the per-database settings above apply; nothing else is listed to pool for.
    'default_pool_size = 5',
    'reserve_pool_size = 0',
    // Clients are cheap to pgbouncer (about 2 kB each); 50 tenants × 100 clients.
    'max_client_conn = 5000',
    `server_idle_timeout = ${SERVER_IDLE_TIMEOUT_SECONDS}`,
    // JDBC sends it at start-up; pgbouncer would otherwise refuse such clients.
    'ignore_startup_parameters = extra_float_digits',
    // Two lines per client connection would grow the log without bound under an app that
    // connects per request; failures and the minutely stats are still logged.
    'log_connections = 0',
    'log_disconnections = 0',
    // Tenants reach Postgres over TLS only (pg_hba hostssl), through the pooler too: the
    // pooler takes TLS with the server's own certificate and speaks TLS to the server.
    ...(place.tls
      ? [
          'client_tls_sslmode = require',
          `client_tls_key_file = ${place.tls.keyFile}`,
          `client_tls_cert_file = ${place.tls.certFile}`,
          'client_tls_protocols = secure',
          'server_tls_sslmode = require',
        ]
      : []),
    `pidfile = ${place.dir}/pgbouncer.pid`,
    `logfile = ${place.dir}/pgbouncer.log`,
    '',
  ].join('\n');
  const verifiers = new Map(catalog.tenants.map((t) => [t.role, t.verifier]));
  const users = [...verifiers, [STATS_USER, statsVerifier(place.superuserPassword)]];
  // From any (IPv4) address, as the server's own pg_hba.conf (src/tls/postgres.ts): the router, the
  // observers and customers' apps reach a server's pooler from other machines once servers
  // have hosts of their own.
  const hba = [
    ...catalog.tenants.map((t) => `host ${t.database} ${t.role} 0.0.0.0/0 scram-sha-256`),
    `host pgbouncer ${STATS_USER} 0.0.0.0/0 scram-sha-256`,
  ];
  return {
    'pgbouncer.ini': ini,
    'userlist.txt': users.map(([user, verifier]) => `${quote(user!)} ${quote(verifier!)}\n`).join(''),
    'hba.conf': `${hba.join('\n')}\n`,
  };
}
