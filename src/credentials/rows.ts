import { transaction, type Client, type Pool, type Queryable } from '../db.ts';
import type { NamedRole, Privileges } from '../pg/credentials.ts';
import { tenantPassword } from '../pg/tenant.ts';
import { loadResourceRecord, resourceServers, type ResourceRecord } from '../resources/rows.ts';
import { resourceConfig } from '../resources/config.ts';
import { sendEvent, type EventOf, type Unstamped } from '../runner/runner.ts';
import type { Sealer } from '../sealer.ts';

/**
 * A resource's credentials in the control database: the owner's password and its rotation,
 * and named credentials (Heroku's `pg:credentials`). What is asked for is written here with
 * the event that tells the resource's machine, in one transaction; the machine's steps
 * (src/credentials/tasks.ts) make the server agree and then settle the rows.
 */

/** Heroku's rule for credential names: lowercase letters, digits and `_`; `default` is the owner. */
export const CREDENTIAL_NAME = /^[a-z][a-z0-9_]{0,29}$/;
export const OWNER_CREDENTIAL = 'default';

/**
 * Named credentials a database may have. Each is a pool of its own in the server's
 * pgbouncer and a role the governor reads every 2 s; 10 with the owner is more than a
 * quarter each of the plan's connections can serve at once anyway.
 */
export const MAX_NAMED_CREDENTIALS = 10;

export interface CredentialView {
  name: string;
  role: string;
  privileges: Privileges | 'owner';
  /** `rotating` while a new password is on its way to the server. */
  state: 'creating' | 'active' | 'rotating' | 'destroying';
  createdAt: Date | null;
}

/** A credential's URLs, shown only in the answer that made its password. */
export interface CredentialSecret extends CredentialView {
  url: string | undefined;
  pooledUrl: string | undefined;
}

interface CredentialRow {
  name: string;
  role_name: string;
  privileges: Privileges;
  password_sealed: string;
  password_pending_sealed: string | null;
  state: 'creating' | 'active' | 'destroying';
  created_at: Date;
}

async function rows(db: Queryable, resourceId: string): Promise<CredentialRow[]> {
  return (await db.query<CredentialRow>('select * from credentials where resource_id = $1 order by created_at, name', [resourceId])).rows;
}

function view(row: CredentialRow): CredentialView {
  const state = row.state === 'active' && row.password_pending_sealed !== null ? 'rotating' : row.state;
  return { name: row.name, role: row.role_name, privileges: row.privileges, state, createdAt: row.created_at };
}

/** The owner first (Heroku's `default`), then the named ones; never a password. */
export async function listCredentials(db: Queryable, resource: ResourceRecord): Promise<CredentialView[]> {
  const { rows: owner } = await db.query<{ rotating: boolean; created_at: Date }>(
    'select password_pending_sealed is not null as rotating, created_at from resources where id = $1',
    [resource.id],
  );
  return [
    {
      name: OWNER_CREDENTIAL,
      role: resource.tenant.role,
      privileges: 'owner',
      state: owner[0]?.rotating ? 'rotating' : 'active',
      createdAt: owner[0]?.created_at ?? null,
    },
    ...(await rows(db, resource.id)).map(view),
  ];
}

/** What the server should hold for each named credential: a pending password wins. */
export async function namedRoles(
  db: Queryable,
  sealer: Sealer,
  resourceId: string,
): Promise<(NamedRole & { name: string; pendingSealed: string | null })[]> {
  return (await rows(db, resourceId)).map((r) => ({
    name: r.name,
    role: r.role_name,
    password: sealer.open(r.password_pending_sealed ?? r.password_sealed),
    privileges: r.privileges,
    destroy: r.state === 'destroying',
    pendingSealed: r.password_pending_sealed,
  }));
}

/** Role names of the resource's named credentials, to freeze, thaw or drop with the owner. */
export async function namedRoleNames(db: Queryable, resourceId: string): Promise<string[]> {
  return (await rows(db, resourceId)).map((r) => r.role_name);
}

/**
 * After the server agrees: each credential the step applied takes its pending password as
 * its own and is active, and each it destroyed goes. A row asked to change since the step
 * read it (another pending password) is left for the next step.
 */
export async function settleCredentials(
  client: Client,
  resourceId: string,
  applied: { name: string; destroy: boolean; pendingSealed: string | null }[],
): Promise<void> {
  for (const c of applied) {
    if (c.destroy) {
      await client.query(`delete from credentials where resource_id = $1 and name = $2 and state = 'destroying'`, [resourceId, c.name]);
    } else {
      await client.query(
        `update credentials set password_sealed = coalesce(password_pending_sealed, password_sealed),
           password_pending_sealed = null, state = 'active'
         where resource_id = $1 and name = $2 and state <> 'destroying' and password_pending_sealed is not distinct from $3`,
        [resourceId, c.name, c.pendingSealed],
      );
    }
  }
}

/**
 * The owner's pending password becomes its current one, on the resource and on its
 * followers (physical copies: the same role, which got the new password by replication), in
 * the caller's transaction. Only the pending password the step set: nothing else changes.
 */
export async function settleRotation(client: Client, resourceId: string, pendingSealed: string | null): Promise<void> {
  if (pendingSealed !== null) {
    await client.query(
      `update resources set password_sealed = password_pending_sealed, password_pending_sealed = null
       where id = $1 and password_pending_sealed = $2`,
      [resourceId, pendingSealed],
    );
  }
  await client.query('update resources f set password_sealed = r.password_sealed from resources r where r.id = $1 and f.follows = r.id', [
    resourceId,
  ]);
}

export async function pendingOwnerPassword(db: Queryable, resourceId: string): Promise<string | null> {
  return (
    (await db.query<{ sealed: string | null }>('select password_pending_sealed as sealed from resources where id = $1', [resourceId]))
      .rows[0]?.sealed ?? null
  );
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; status: 404 | 409 | 422; message: string };

const fail = (status: 404 | 409 | 422, message: string): { ok: false; status: 404 | 409 | 422; message: string } => ({
  ok: false,
  status,
  message,
});

/**
 * Tell the machine `event` in the caller's transaction, having written what it is about;
 * a machine that is busy with something else does not take it, and the caller rolls back.
 */
async function tell(client: Client, resourceId: string, event: Unstamped<EventOf<'resource'>>): Promise<boolean> {
  const step = await sendEvent<'resource'>(client, resourceId, event);
  return step !== undefined && step.from !== step.to;
}

class Refused extends Error {
  constructor(readonly outcome: { ok: false; status: 404 | 409 | 422; message: string }) {
    super(outcome.message);
  }
}

async function refusable<T>(pool: Pool, fn: (client: Client) => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await transaction(pool, fn) };
  } catch (err) {
    if (err instanceof Refused) return err.outcome;
    throw err;
  }
}

const busy = (state: string) => fail(409, `the database is ${state}; try again once it is available`);

/** A new password for the owner, stored as pending: the machine's `rotating` step sets it on the server. */
export async function requestRotation(pool: Pool, sealer: Sealer, resource: ResourceRecord, state: string): Promise<Outcome<void>> {
  if (resource.follows) return fail(422, `a follower shares the credentials of the database it follows: rotate ${resource.follows}`);
  return refusable(pool, async (client) => {
    // A pending password left by a rotation a failover interrupted is the one to finish.
    await client.query('update resources set password_pending_sealed = coalesce(password_pending_sealed, $2) where id = $1', [
      resource.id,
      sealer.seal(tenantPassword()),
    ]);
    if (!(await tell(client, resource.id, { type: 'rotate' }))) throw new Refused(busy(state));
  });
}

/** A named credential's role: the owner's name and the credential's, unique because the owner's is. */
export const namedRole = (ownerRole: string, name: string) => `${ownerRole}_${name}`;

export async function createCredential(
  pool: Pool,
  sealer: Sealer,
  resource: ResourceRecord,
  state: string,
  name: string,
  privileges: Privileges,
): Promise<Outcome<string>> {
  if (resource.follows)
    return fail(422, `a follower is read-only and shares the credentials of ${resource.follows}: create the credential there`);
  const password = tenantPassword();
  return refusable(pool, async (client) => {
    // The resource's row, locked: two creations at once count each other.
    await client.query('select 1 from resources where id = $1 for update', [resource.id]);
    const existing = await rows(client, resource.id);
    if (existing.some((r) => r.name === name))
      throw new Refused(fail(409, `the credential "${name}" exists already: rotate it, or destroy it first`));
    if (existing.length >= MAX_NAMED_CREDENTIALS)
      throw new Refused(fail(422, `a database has at most ${MAX_NAMED_CREDENTIALS} named credentials: destroy one first`));
    await client.query('insert into credentials (resource_id, name, role_name, privileges, password_sealed) values ($1, $2, $3, $4, $5)', [
      resource.id,
      name,
      namedRole(resource.tenant.role, name),
      privileges,
      sealer.seal(password),
    ]);
    if (!(await tell(client, resource.id, { type: 'credentials' }))) throw new Refused(busy(state));
    return password;
  });
}

async function changeCredential(
  pool: Pool,
  resource: ResourceRecord,
  state: string,
  name: string,
  sql: string,
  params: unknown[],
): Promise<Outcome<void>> {
  return refusable(pool, async (client) => {
    const { rowCount } = await client.query(sql, [resource.id, name, ...params]);
    if (!rowCount) throw new Refused(fail(404, `no credential "${name}": see GET /api/resources/${resource.id}/credentials`));
    if (!(await tell(client, resource.id, { type: 'credentials' }))) throw new Refused(busy(state));
  });
}

/** A new pending password for a named credential; answers it, for the one answer that shows it. */
export async function rotateCredential(
  pool: Pool,
  sealer: Sealer,
  resource: ResourceRecord,
  state: string,
  name: string,
): Promise<Outcome<string>> {
  const password = tenantPassword();
  const done = await changeCredential(
    pool,
    resource,
    state,
    name,
    `update credentials set password_pending_sealed = $3 where resource_id = $1 and name = $2 and state <> 'destroying'`,
    [sealer.seal(password)],
  );
  return done.ok ? { ok: true, value: password } : done;
}

export async function destroyCredential(pool: Pool, resource: ResourceRecord, state: string, name: string): Promise<Outcome<void>> {
  return changeCredential(
    pool,
    resource,
    state,
    name,
    `update credentials set state = 'destroying' where resource_id = $1 and name = $2`,
    [],
  );
}

/** A credential with the URLs its password makes, as the resource's config vars would carry them. */
export async function withUrls(
  db: Queryable,
  sealer: Sealer,
  prefix: string,
  resourceId: string,
  name: string,
  password: string,
): Promise<CredentialSecret | undefined> {
  const resource = await loadResourceRecord(db, sealer, resourceId);
  const credential = resource && (await listCredentials(db, resource)).find((c) => c.name === name);
  if (!resource || !credential) return undefined;
  const primary = (await resourceServers(db, resourceId)).find((s) => s.role === 'primary');
  const config = resourceConfig(prefix, { database: resource.tenant.database, role: credential.role, password }, primary, resource.route);
  return { ...credential, url: config[`${prefix}_URL`], pooledUrl: config[`${prefix}_CONNECTION_POOL_URL`] };
}
