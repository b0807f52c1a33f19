import { spawn } from 'node:child_process';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import pg from 'pg';
import type { PgBinaries } from './binaries.ts';
import { endClient } from './endClient.ts';
import { asSuperuser, type SuperuserTarget } from './superuser.ts';

/** A customer's database on a server: a database, the one role that owns it, and limits. */
export interface Tenant {
  database: string;
  role: string;
  password: string;
  connectionLimit: number;
  statementTimeoutMs: number;
  /** Bytes the database may hold before writes are refused; 0: no limit. */
  sizeLimitBytes: number;
  /** Private memory one session may use before it is ended; 0: no limit. */
  memoryLimitBytes: number;
}

/** Names are ours, never the customer's: a letter and hex, so no identifier needs care. */
export function tenantNames(): { database: string; role: string } {
  const suffix = randomBytes(8).toString('hex');
  return { database: `d${suffix}`, role: `u${suffix}` };
}

/** At least 32 random bytes, URL-safe so the URL needs no escaping. */
export function tenantPassword(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * `sslmode=require`: the server takes tenants over TLS only, and every libpq client
 * (psql, Python's psycopg, Ruby's pg) encrypts without needing pgfleet's CA. A client that
 * also checks the certificate adds `sslmode=verify-full` and the CA (docs/credentials-and-tls.md).
 */
export function tenantUrl(host: string, port: number, tenant: Pick<Tenant, 'database' | 'role' | 'password'>): string {
  return `postgres://${tenant.role}:${encodeURIComponent(tenant.password)}@${host}:${port}/${tenant.database}?sslmode=require`;
}

/**
 * The SCRAM-SHA-256 verifier Postgres stores for a password (RFC 5802, as libpq's
 * PQencryptPasswordConn makes it). Sending the verifier instead of the password means the
 * password never appears in a statement, a server log or pg_stat_activity.
 */
export function scramVerifier(password: string, salt = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

const ident = (name: string) => pg.escapeIdentifier(name);
const literal = (value: string) => pg.escapeLiteral(value);

/**
 * Create the tenant, or bring an existing one back to the spec: safe to run twice. Nobody
 * but its role may connect to the tenant's database (CONNECT is revoked from PUBLIC), and
 * it may not connect to the server's own databases either. The platform's superuser owns
 * the database, so the tenant cannot set the database's defaults (a plan's limits among
 * them); the tenant owns its `public` schema and may create schemas and temporary tables.
 */
export async function createTenant(target: SuperuserTarget, tenant: Tenant): Promise<void> {
  await asSuperuser(target, 'postgres', async (client) => {
    await closeServerDatabases(client);
    const exists = (await client.query('select 1 from pg_roles where rolname = $1', [tenant.role])).rowCount === 1;
    await client.query(
      `${exists ? 'alter' : 'create'} role ${ident(tenant.role)} with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls
       password ${literal(scramVerifier(tenant.password))}`,
    );
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [tenant.database]);
    if (rowCount === 0) await client.query(`create database ${ident(tenant.database)} owner postgres`);
    await applyLimits(client, tenant);
    // Databases made before the platform kept ownership were the tenant's: take them back.
    await client.query(`alter database ${ident(tenant.database)} owner to postgres`);
    await client.query(`revoke all on database ${ident(tenant.database)} from public`);
    await client.query(`grant connect, create, temporary on database ${ident(tenant.database)} to ${ident(tenant.role)}`);
  });
  await asSuperuser(target, tenant.database, (client) => client.query(`alter schema public owner to ${ident(tenant.role)}`));
}

/**
 * CONNECT on the server's own databases is revoked from PUBLIC once. Every provision used
 * to revoke it again, and a burst of provisions on one server failed with "tuple
 * concurrently updated" (two REVOKEs rewriting one pg_database row; 95 of 200 in a probe):
 * the revoke is made only while PUBLIC still has the right, one session at a time.
 */
async function closeServerDatabases(client: pg.Client): Promise<void> {
  const open = async () =>
    (
      await client.query<{ open: boolean }>(
        `select has_database_privilege('public', 'postgres', 'connect')
           or has_database_privilege('public', 'template1', 'connect') as open`,
      )
    ).rows[0]!.open;
  if (!(await open())) return;
  await client.query('begin');
  try {
    await client.query(`select pg_advisory_xact_lock(hashtext('pgfleet-close-server-databases'))`);
    if (await open()) {
      await client.query('revoke connect on database postgres from public');
      await client.query('revoke connect on database template1 from public');
    }
    await client.query('commit');
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  }
}

/**
 * The defaults the tenant's role carries, as `pg_db_role_setting` stores them: the plan's
 * statement timeout, temporary files bounded by its size (`temp_file_limit` is a setting only
 * a superuser may change), and read-only transactions while the database is over its size.
 */
export function roleSettings(tenant: Pick<Tenant, 'statementTimeoutMs' | 'sizeLimitBytes'>, overSize = false): string[] {
  return [
    `statement_timeout=${Number(tenant.statementTimeoutMs)}`,
    ...(tenant.sizeLimitBytes > 0 ? [`temp_file_limit=${Math.floor(tenant.sizeLimitBytes / 1024)}`] : []),
    ...(overSize ? ['default_transaction_read_only=on'] : []),
  ];
}

/**
 * Logins the role may hold beyond its plan's: the platform's check that the customer can
 * log in (the resource observer) logs in as the tenant every few seconds, and without a slot
 * of its own it took one of the customer's: a customer opening its 20th connection at that
 * moment was refused.
 */
export const PLATFORM_LOGIN_SLOTS = 1;

/**
 * The plan's connection limit on the owner's role, and on the database too: the database's
 * bounds the owner and its named credentials together (src/pg/credentials.ts), so another
 * login role never adds connections to the plan's budget on a shared server.
 */
async function applyLimits(client: pg.Client, tenant: Tenant): Promise<void> {
  const limit = Number(tenant.connectionLimit) + PLATFORM_LOGIN_SLOTS;
  await client.query(`alter role ${ident(tenant.role)} connection limit ${limit}`);
  if ((await client.query('select 1 from pg_database where datname = $1', [tenant.database])).rowCount === 1) {
    await client.query(`alter database ${ident(tenant.database)} connection limit ${limit}`);
  }
  for (const setting of roleSettings(tenant)) {
    const [name, value] = setting.split(/=(.*)/s) as [string, string];
    await client.query(`alter role ${ident(tenant.role)} set ${ident(name)} = ${literal(value)}`);
  }
}

/** A plan change within one kind of server: only the role's limits change. */
export async function setTenantLimits(target: SuperuserTarget, tenant: Tenant): Promise<void> {
  await asSuperuser(target, 'postgres', (client) => applyLimits(client, tenant));
}

/**
 * Stop the tenant writing: no new logins, and every session ended, of its owner and of its
 * named credentials (`others`, which may write too). Its committed data stays where it is,
 * to be copied.
 */
export async function freezeTenant(target: SuperuserTarget, tenant: Pick<Tenant, 'role'>, others: string[] = []): Promise<void> {
  const roles = [tenant.role, ...others];
  await asSuperuser(target, 'postgres', async (client) => {
    for (const role of await existingRoles(client, roles)) await client.query(`alter role ${ident(role)} nologin`);
    // Terminating is asynchronous: wait until every session is gone, so none can still commit.
    for (let i = 0; ; i++) {
      const { rows } = await client.query<{ n: number }>(
        'select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where usename = any($1) and pid <> pg_backend_pid()',
        [roles],
      );
      if (rows[0]!.n === 0) return;
      if (i >= 100) throw new Error(`sessions of ${tenant.role} did not end within 10 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });
}

async function existingRoles(client: pg.Client, roles: string[]): Promise<string[]> {
  return (
    await client.query<{ rolname: string }>('select rolname from pg_roles where rolname = any($1) order by rolname', [roles])
  ).rows.map((r) => r.rolname);
}

/**
 * Remove the tenant's database, its role and its named credentials' roles (`others`);
 * nothing to do when they are gone already. Their grants went with the database.
 */
export async function dropTenant(target: SuperuserTarget, tenant: Pick<Tenant, 'database' | 'role'>, others: string[] = []): Promise<void> {
  await asSuperuser(target, 'postgres', async (client) => {
    for (const role of [tenant.role, ...others]) await client.query(`alter role ${ident(role)} nologin`).catch(() => undefined);
    await client.query(`drop database if exists ${ident(tenant.database)} with (force)`);
    for (const role of [...others, tenant.role]) await client.query(`drop role if exists ${ident(role)}`);
  });
}

function superuserEnv(target: SuperuserTarget): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    PGHOST: target.host,
    PGPORT: String(target.port),
    PGUSER: 'postgres',
    PGPASSWORD: target.password,
    PGCONNECT_TIMEOUT: '5',
  };
}

function waitForExit(child: ReturnType<typeof spawn>, name: string, stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${name} failed (${code}): ${stderr().slice(-1000)}`))));
  });
}

/**
 * Copy the tenant's database from one server to another: pg_dump piped into pg_restore,
 * restored as the tenant's role so it owns everything, in one transaction. The target
 * database is made afresh first, so a copy that ran before (a retried job) is replaced,
 * never doubled. Freeze the source first: what is committed there is what arrives.
 */
export async function copyTenant(bin: PgBinaries, from: SuperuserTarget, to: SuperuserTarget, tenant: Tenant): Promise<void> {
  if (!bin.pgDump || !bin.pgRestore) {
    throw new Error(
      `moving a database between servers needs pg_dump and pg_restore next to the Postgres binaries in ${bin.dir}: ` +
        'install the PostgreSQL client tools of that version or set PG_BIN',
    );
  }
  await asSuperuser(to, 'postgres', (client) => client.query(`drop database if exists ${ident(tenant.database)} with (force)`));
  await createTenant(to, tenant);
  await freezeTenant(to, tenant);
  const dump = spawn(bin.pgDump, ['--format=custom', '--no-owner', '--no-privileges', tenant.database], {
    env: superuserEnv(from),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const restore = spawn(
    bin.pgRestore,
    ['--single-transaction', '--exit-on-error', '--no-owner', '--no-privileges', `--role=${tenant.role}`, '--dbname', tenant.database],
    {
      env: superuserEnv(to),
      stdio: ['pipe', 'ignore', 'pipe'],
    },
  );
  let dumpErr = '';
  let restoreErr = '';
  dump.stderr!.on('data', (d: Buffer) => (dumpErr += d.toString()));
  restore.stderr!.on('data', (d: Buffer) => (restoreErr += d.toString()));
  dump.stdout!.pipe(restore.stdin!);
  await Promise.all([waitForExit(dump, 'pg_dump', () => dumpErr), waitForExit(restore, 'pg_restore', () => restoreErr)]);
}

/** Let the tenant log in again, on the server that now holds its data. */
export async function thawTenant(target: SuperuserTarget, tenant: Pick<Tenant, 'role'>, others: string[] = []): Promise<void> {
  await asSuperuser(target, 'postgres', async (client) => {
    await client.query(`alter role ${ident(tenant.role)} login`);
    // Named credentials come to a new server with the next step; where they are, they log in again.
    for (const role of await existingRoles(client, others)) await client.query(`alter role ${ident(role)} login`);
  });
}

/**
 * Whether the tenant itself can log in and run a query: what its customer sees, over TLS
 * and checking the server's certificate against pgfleet's authority (`ca`), as a customer
 * with `sslmode=verify-full` does.
 */
export async function probeTenant(
  host: string,
  port: number,
  tenant: Pick<Tenant, 'database' | 'role' | 'password'>,
  ca: string,
  timeoutMs = 2000,
): Promise<Record<string, string>> {
  const client = new pg.Client({
    host,
    port,
    user: tenant.role,
    password: tenant.password,
    database: tenant.database,
    ssl: { ca },
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: 'pgfleet-observer',
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('select 1');
    return { reachable: 'true' };
  } catch (err) {
    return { reachable: 'false', error: (err as Error).message.slice(0, 300) };
  } finally {
    await endClient(client);
  }
}
