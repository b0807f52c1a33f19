import pg from 'pg';
import { asSuperuser, type SuperuserTarget } from './superuser.ts';

/** The name a standby connects with (its `application_name`), as `synchronous_standby_names` lists it. */
export function standbyName(serverId: string): string {
  return serverId.replace(/-/g, '_');
}

/** How a standby reaches its leader: as the superuser both share, under its own name. */
export function primaryConninfo(leader: { host: string; port: number }, password: string, standbyId: string): string {
  return `host=${leader.host} port=${leader.port} user=postgres password=${password} application_name=${standbyName(standbyId)}`;
}

/** Point a running standby at another leader (a promoted one): it reconnects there and follows its timeline. */
export async function repointStandby(standby: SuperuserTarget, leader: { host: string; port: number }, standbyId: string): Promise<void> {
  await asSuperuser(standby, 'postgres', async (client) => {
    await client.query(`alter system set primary_conninfo = ${pg.escapeLiteral(primaryConninfo(leader, standby.password, standbyId))}`);
    await client.query('select pg_reload_conf()');
  });
}

/**
 * Require one of `standbys` to confirm every commit, and wait until the primary reports one
 * of them as `sync` and that one has flushed all the WAL there was then: only then is the
 * promise kept, by a standby that also has every commit acknowledged without it (while the
 * primary ran without a synchronous copy). With no standby connected, commits wait; that is
 * the point. One that does not get there in time is not waited for while the step retries:
 * a commit must not hang on a standby that could not be made synchronous.
 */
export async function synchronizeStandbys(primary: SuperuserTarget, standbys: string[], timeoutMs = 15_000): Promise<void> {
  if (standbys.length === 0) throw new Error('there is no standby to make synchronous');
  await asSuperuser(primary, 'postgres', async (client) => {
    const names = standbys.map((n) => `"${n}"`).join(', ');
    await client.query(`alter system set synchronous_standby_names = ${pg.escapeLiteral(`FIRST 1 (${names})`)}`);
    await client.query('select pg_reload_conf()');
    const deadline = Date.now() + timeoutMs;
    let target: string | undefined;
    for (;;) {
      const { rows } = await client.query<{ flushed: boolean; now: string }>(
        `select flush_lsn >= coalesce($2::pg_lsn, '0/0') as flushed, pg_current_wal_lsn()::text as now
         from pg_stat_replication where sync_state = 'sync' and application_name = any($1)`,
        [standbys, target ?? null],
      );
      const sync = rows[0];
      if (sync && target !== undefined && sync.flushed) return;
      if (sync && target === undefined) {
        target = sync.now;
        continue;
      }
      if (Date.now() > deadline) {
        await client.query('alter system reset synchronous_standby_names');
        await client.query('select pg_reload_conf()');
        throw new Error(`no standby of ${standbys.join(', ')} became synchronous within ${timeoutMs / 1000} s`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  });
}

/**
 * Promote a standby and wait until it takes writes; a server already promoted is not
 * promoted again. A new primary waits for no standby until one is made synchronous again:
 * a setting it brought along (from a backup or a rewind) could name a server that is gone,
 * or itself, and then no commit would ever be acknowledged.
 */
export async function promoteStandby(standby: SuperuserTarget): Promise<void> {
  await asSuperuser(standby, 'postgres', async (client) => {
    const { rows } = await client.query<{ recovering: boolean }>('select pg_is_in_recovery() as recovering');
    if (rows[0]!.recovering) {
      const promoted = await client.query<{ ok: boolean }>('select pg_promote(true, 60) as ok');
      if (!promoted.rows[0]!.ok) throw new Error('the standby did not finish promotion within 60 s');
    }
  });
  await desynchronize(standby);
}

/** The primary acknowledges commits without waiting for any standby (one about to go, say). */
export async function desynchronize(primary: SuperuserTarget): Promise<void> {
  await asSuperuser(primary, 'postgres', async (client) => {
    await client.query('alter system reset synchronous_standby_names');
    await client.query('select pg_reload_conf()');
  });
}
