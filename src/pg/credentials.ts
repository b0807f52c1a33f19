import { createHash, createHmac, pbkdf2Sync, timingSafeEqual } from 'node:crypto';
import pg from 'pg';
import { asSuperuser, type SuperuserTarget } from './superuser.ts';
import { roleSettings, scramVerifier, type Tenant } from './tenant.ts';

/**
 * Login roles on a tenant's server and their passwords, as the server holds them: the
 * owner's password set again (a rotation), and named credentials (Heroku's
 * `pg:credentials:create`): more login roles on the tenant's database, each with its own
 * password, connection limit and privileges on the schema `public`.
 */

const ident = (name: string) => pg.escapeIdentifier(name);
const literal = (value: string) => pg.escapeLiteral(value);

/**
 * Whether a SCRAM-SHA-256 verifier (as pg_authid stores it) is the one of `password`: the
 * stored key is derived again with the verifier's own salt and iterations. A step that sets
 * a password checks this first, so running it again changes nothing on the server (a new
 * verifier would have a new salt, and would rewrite the pooler's auth_file for nothing).
 */
export function verifierMatches(password: string, verifier: string | null): boolean {
  const match = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(verifier ?? '');
  if (!match) return false;
  const [, iterations, salt, storedKey] = match as unknown as [string, string, string, string];
  const salted = pbkdf2Sync(password, Buffer.from(salt, 'base64'), Number(iterations), 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const expected = createHash('sha256').update(clientKey).digest();
  const stored = Buffer.from(storedKey, 'base64');
  return stored.length === expected.length && timingSafeEqual(stored, expected);
}

/** The role's verifier as the server holds it now; null when the role does not exist. */
export async function roleVerifier(target: SuperuserTarget, role: string): Promise<string | null> {
  return asSuperuser(target, 'postgres', async (client) => {
    const { rows } = await client.query<{ verifier: string | null }>('select rolpassword as verifier from pg_authid where rolname = $1', [
      role,
    ]);
    return rows[0]?.verifier ?? null;
  });
}

/**
 * Make the role's password `password` on the server, unless it is already: the new
 * verifier, never the password, goes into the statement. Sessions that logged in before keep
 * running: Postgres checks a password only at login. Answers the verifier the server holds.
 */
async function ensurePassword(client: pg.Client, role: string, password: string): Promise<string> {
  const current =
    (await client.query<{ verifier: string | null }>('select rolpassword as verifier from pg_authid where rolname = $1', [role])).rows[0]
      ?.verifier ?? null;
  if (verifierMatches(password, current)) return current!;
  const verifier = scramVerifier(password);
  await client.query(`alter role ${ident(role)} password ${literal(verifier)}`);
  return verifier;
}

export async function setRolePassword(target: SuperuserTarget, role: string, password: string): Promise<string> {
  return asSuperuser(target, 'postgres', (client) => ensurePassword(client, role, password));
}

export type Privileges = 'read' | 'write';

/** A named credential as the server should hold it; `password` is the pending one during a rotation. */
export interface NamedRole {
  role: string;
  password: string;
  privileges: Privileges;
  destroy: boolean;
}

/**
 * A named credential's share of its plan's connections: a quarter of the plan's limit (5 of
 * shared's 20, 22 of dedicated's 90), at least 1. The database's own connection limit (the
 * plan's, see applyLimits) bounds the owner and every named role together, so credentials
 * never add connections to a plan: an analyst holding its 5 leaves the app 15, and a
 * runaway tool cannot take the app's whole limit.
 */
export function namedRoleLimit(planLimit: number): number {
  return Math.max(1, Math.floor(planLimit / 4));
}

const TABLE_PRIVILEGES: Record<Privileges, string> = { read: 'select', write: 'select, insert, update, delete' };
const SEQUENCE_PRIVILEGES: Record<Privileges, string> = { read: 'select', write: 'usage, select, update' };

/** Every session of the role ended, waiting until they are gone (terminating is asynchronous). */
async function endSessions(client: pg.Client, role: string): Promise<void> {
  for (let i = 0; ; i++) {
    const { rows } = await client.query<{ n: number }>(
      'select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where usename = $1 and pid <> pg_backend_pid()',
      [role],
    );
    if (rows[0]!.n === 0) return;
    if (i >= 100) throw new Error(`sessions of ${role} did not end within 10 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Bring the tenant's named roles to what the control database says: safe to run again at
 * any point. A role to keep exists with its password, its share of connections, the plan's
 * defaults (as the owner's: the governor holds both) and CONNECT on the tenant's database
 * only; in `public`, `read` may SELECT every table and sequence, `write` may also change
 * rows; both for the owner's future tables too (default privileges). Neither may create
 * anything: every object stays the owner's, so a credential goes without REASSIGN, and
 * only `public` is granted (other schemas the owner makes are its own to grant).
 * A role to destroy stops logging in, its sessions end, its grants and the role go.
 */
export async function syncNamedRoles(target: SuperuserTarget, tenant: Tenant, roles: NamedRole[]): Promise<void> {
  if (roles.length === 0) return;
  const database = ident(tenant.database);
  await asSuperuser(target, 'postgres', async (client) => {
    for (const r of roles) {
      const exists = (await client.query('select 1 from pg_roles where rolname = $1', [r.role])).rowCount === 1;
      if (r.destroy) {
        if (!exists) continue;
        await client.query(`alter role ${ident(r.role)} nologin`);
        await endSessions(client, r.role);
        continue;
      }
      if (!exists)
        await client.query(`create role ${ident(r.role)} with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls`);
      await client.query(`alter role ${ident(r.role)} with login connection limit ${namedRoleLimit(tenant.connectionLimit)}`);
      await ensurePassword(client, r.role, r.password);
      for (const setting of roleSettings(tenant)) {
        const [name, value] = setting.split(/=(.*)/s) as [string, string];
        await client.query(`alter role ${ident(r.role)} set ${ident(name)} = ${literal(value)}`);
      }
      await client.query(`grant connect on database ${database} to ${ident(r.role)}`);
    }
  });
  await asSuperuser(target, tenant.database, async (client) => {
    // Servers before PostgreSQL 15 let PUBLIC create in `public`: a read-only role must not.
    await client.query('revoke create on schema public from public');
    for (const r of roles) {
      if (r.destroy) {
        if ((await client.query('select 1 from pg_roles where rolname = $1', [r.role])).rowCount === 1)
          await client.query(`drop owned by ${ident(r.role)}`);
        continue;
      }
      const role = ident(r.role);
      const owner = ident(tenant.role);
      await client.query(`grant usage on schema public to ${role}`);
      await client.query(`grant ${TABLE_PRIVILEGES[r.privileges]} on all tables in schema public to ${role}`);
      await client.query(`grant ${SEQUENCE_PRIVILEGES[r.privileges]} on all sequences in schema public to ${role}`);
      await client.query(
        `alter default privileges for role ${owner} in schema public grant ${TABLE_PRIVILEGES[r.privileges]} on tables to ${role}`,
      );
      await client.query(
        `alter default privileges for role ${owner} in schema public grant ${SEQUENCE_PRIVILEGES[r.privileges]} on sequences to ${role}`,
      );
    }
  });
  // `drop owned` above took the role's grants in the tenant's database (and CONNECT on it).
  await asSuperuser(target, 'postgres', async (client) => {
    for (const r of roles.filter((x) => x.destroy)) await client.query(`drop role if exists ${ident(r.role)}`);
  });
}
