import pg from 'pg';
import { asSuperuser, type SuperuserTarget } from './superuser.ts';
import { roleSettings, type Tenant } from './tenant.ts';

/**
 * A plan's limits, enforced from outside the tenant's sessions. The role's defaults are
 * where a limit starts, but a tenant can `SET statement_timeout = 0`, `ALTER ROLE
 * current_user SET …` or raise `work_mem` to 2000GB from its own connection: Postgres lets
 * any role change those. So the platform's superuser looks every few seconds and puts each
 * limit back: statements past the plan's timeout are cancelled (and their session ended
 * when a handler swallows the cancel), settings a tenant gave itself are reset, a session
 * whose private memory passes the plan's bound is ended, and a database past its size is
 * made read-only by default, with any session that still makes it grow ended.
 */
export type GovernedTenant = Pick<Tenant, 'database' | 'role' | 'statementTimeoutMs' | 'sizeLimitBytes' | 'memoryLimitBytes'> & {
  /** Its named credentials' roles, held to the same plan as the owner (absent ones are skipped). */
  others?: string[];
};

export interface Governed {
  role: string;
  database: string;
  sizeBytes: number;
  overSize: boolean;
  /** Settings the tenant had given itself, or a limit newly in force, were put back. */
  settingsRestored: boolean;
  cancelled: number[];
  terminated: { pid: number; why: string }[];
}

export interface GovernOptions {
  /** Each database's size at the previous look: one over its limit may not grow past it. */
  previousSizes: Record<string, number>;
  /** Private memory (bytes) of processes, read on the server's host; without it memory goes unchecked. */
  memoryOf?: (pids: number[]) => Promise<Map<number, number>>;
}

/** The role's own statement_timeout fires first; this is the backstop, after a second more. */
const CANCEL_GRACE_MS = 1000;
/** Growth of a database over its limit that is let pass (hint bits, a page of the FSM). */
const GROWTH_TOLERANCE_BYTES = 1024 * 1024;

interface Activity {
  pid: number;
  role: string;
  active: boolean;
  writing: boolean;
  running_ms: number | null;
}

/**
 * The settings that make a plan's limits, or undo them: the plan's own, and the memory a
 * session may take by default (the memory check would end every session of a tenant whose
 * role says work_mem = 2000GB). A tenant's other defaults (search_path, TimeZone, …) are its own.
 */
const GOVERNED = new Set([
  'statement_timeout',
  'temp_file_limit',
  'default_transaction_read_only',
  'transaction_read_only',
  'work_mem',
  'maintenance_work_mem',
  'hash_mem_multiplier',
  'temp_buffers',
  'logical_decoding_work_mem',
]);
const nameOf = (setting: string) => setting.split('=')[0]!.toLowerCase();
const governed = (config: string[]) => config.filter((s) => GOVERNED.has(nameOf(s)));
const sameSettings = (a: string[], b: string[]) => a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');

interface Setting {
  role: string | null;
  database: string | null;
  setconfig: string[];
}

export async function govern(target: SuperuserTarget, tenants: GovernedTenant[], opts: GovernOptions): Promise<Governed[]> {
  if (tenants.length === 0) return [];
  const roles = tenants.flatMap((t) => [t.role, ...(t.others ?? [])]);
  const databases = tenants.map((t) => t.database);
  return asSuperuser(
    target,
    'postgres',
    async (client) => {
      const sizes = new Map(
        (
          await client.query<{ datname: string; bytes: string }>(
            'select datname, pg_database_size(oid)::text as bytes from pg_database where datname = any($1)',
            [databases],
          )
        ).rows.map((r) => [r.datname, Number(r.bytes)]),
      );
      const activity = (
        await client.query<Activity>(
          `select pid, usename as role, state = 'active' as active, backend_xid is not null as writing,
             case when state = 'active' then extract(epoch from clock_timestamp() - query_start) * 1000 end::float8 as running_ms
           from pg_stat_activity where usename = any($1) and pid <> pg_backend_pid()`,
          [roles],
        )
      ).rows;
      const settings = (
        await client.query<Setting>(
          `select r.rolname as role, d.datname as database, s.setconfig from pg_db_role_setting s
           left join pg_roles r on r.oid = s.setrole left join pg_database d on d.oid = s.setdatabase
           where r.rolname = any($1) or d.datname = any($2)`,
          [roles, databases],
        )
      ).rows;
      const existing = new Set(
        (await client.query<{ rolname: string }>('select rolname from pg_roles where rolname = any($1)', [roles])).rows.map(
          (r) => r.rolname,
        ),
      );
      const memory = opts.memoryOf && activity.length > 0 ? await opts.memoryOf(activity.map((a) => a.pid)) : new Map<number, number>();

      const results: Governed[] = [];
      for (const tenant of tenants) {
        const sizeBytes = sizes.get(tenant.database) ?? 0;
        const overSize = tenant.sizeLimitBytes > 0 && sizeBytes > tenant.sizeLimitBytes;
        const wanted = roleSettings(tenant, overSize);
        const tenantRoles = [tenant.role, ...(tenant.others ?? [])].filter((r) => existing.has(r));
        let settingsRestored = false;
        let wasReadOnly = true;
        for (const role of tenantRoles) {
          const own = settings.filter((s) => s.role === role || (s.role === null && s.database === tenant.database));
          const roleLevel = governed(own.find((s) => s.role === role && s.database === null)?.setconfig ?? []);
          if (role === tenant.role) wasReadOnly = roleLevel.includes('default_transaction_read_only=on');
          if (sameSettings(roleLevel, wanted) && !own.some((s) => s.database !== null && governed(s.setconfig).length > 0)) continue;
          await restoreSettings(client, role, own, wanted);
          settingsRestored = true;
        }

        const sessions = activity.filter((a) => tenantRoles.includes(a.role));
        const cancelled: number[] = [];
        const terminated: { pid: number; why: string }[] = [];
        const end = async (pid: number, why: string) => {
          if (terminated.some((t) => t.pid === pid)) return;
          await client.query('select pg_terminate_backend($1)', [pid]);
          terminated.push({ pid, why });
        };
        const grew = sizeBytes > (opts.previousSizes[tenant.database] ?? sizeBytes) + GROWTH_TOLERANCE_BYTES;
        for (const s of sessions) {
          // Sessions that began before the limit came into force are not read-only: they end.
          if (overSize && !wasReadOnly) await end(s.pid, 'the database passed its size limit');
          else if (overSize && grew && s.writing) await end(s.pid, 'it wrote past the size limit');
          const bytes = memory.get(s.pid);
          if (tenant.memoryLimitBytes > 0 && bytes !== undefined && bytes > tenant.memoryLimitBytes)
            await end(s.pid, `it used ${Math.round(bytes / 1024 ** 2)} MB of memory`);
          const limit = tenant.statementTimeoutMs;
          if (limit > 0 && s.running_ms !== null && s.running_ms > limit + CANCEL_GRACE_MS) {
            // A cancel a handler swallowed leaves the statement running: the session goes.
            if (s.running_ms > 2 * limit + CANCEL_GRACE_MS)
              await end(s.pid, 'its statement ran past the timeout and would not be cancelled');
            else if (!terminated.some((t) => t.pid === s.pid)) {
              await client.query('select pg_cancel_backend($1)', [s.pid]);
              cancelled.push(s.pid);
            }
          }
        }
        results.push({ role: tenant.role, database: tenant.database, sizeBytes, overSize, settingsRestored, cancelled, terminated });
      }
      return results;
    },
    10_000,
  );
}

/**
 * Each default of one of the tenant's roles (the role's, the role's in a database, the
 * tenant database's) that names a governed setting goes, and the plan's come back; the
 * rest is the tenant's.
 */
async function restoreSettings(client: pg.Client, name: string, own: Setting[], wanted: string[]): Promise<void> {
  const role = pg.escapeIdentifier(name);
  await client.query('begin');
  try {
    for (const s of own) {
      for (const setting of new Set(governed(s.setconfig).map(nameOf))) {
        const quoted = pg.escapeIdentifier(setting);
        if (s.role === name && s.database === null) await client.query(`alter role ${role} reset ${quoted}`);
        else if (s.role === name) await client.query(`alter role ${role} in database ${pg.escapeIdentifier(s.database!)} reset ${quoted}`);
        else await client.query(`alter database ${pg.escapeIdentifier(s.database!)} reset ${quoted}`);
      }
    }
    for (const setting of wanted) {
      const [name, value] = setting.split(/=(.*)/s) as [string, string];
      await client.query(`alter role ${role} set ${pg.escapeIdentifier(name)} = ${pg.escapeLiteral(value)}`);
    }
    await client.query('commit');
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  }
}
