import path from 'node:path';
import pg from 'pg';
import { lsnBytes } from '../wal/segments.ts';
import { asSuperuser, type SuperuserTarget } from '../pg/superuser.ts';
import { NotYet } from './notYet.ts';

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
 * What one attempt to make a standby synchronous leaves for the next, which the re-asked job
 * carries: the bound, and the position a synchronous standby must have flushed.
 */
export interface SyncProgress {
  /** When the attempts give up, by the primary's clock: fixed at the first attempt. */
  deadline: string;
  /** The primary's WAL position when a standby was first seen synchronous. */
  target?: string;
  /** The primary's configuration load then (pg_conf_load_time): a later reload makes the target taken again. */
  loadedAt?: string;
}

/** No standby is synchronous and caught up yet: the step ends and is asked again, with `progress`. */
export class StandbysNotSynchronous extends NotYet {
  constructor(readonly progress: SyncProgress) {
    super(progress.target ? `a standby is synchronous but has not flushed ${progress.target} yet` : 'no standby is synchronous yet');
  }
}

/** The progress a re-asked job carries, if it is one; anything else starts afresh. */
export function syncProgress(value: unknown): SyncProgress | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { deadline, target, loadedAt } = value as Record<string, unknown>;
  if (typeof deadline !== 'string') return undefined;
  return {
    deadline,
    ...(typeof target === 'string' && typeof loadedAt === 'string' ? { target, loadedAt } : {}),
  };
}

/**
 * Require one of `standbys` to confirm every commit, and check whether the primary reports
 * one of them as `sync` and that one has flushed all the WAL there was when it was first
 * seen so: only then is the promise kept, by a standby that also has every commit
 * acknowledged without it (while the primary ran without a synchronous copy). With no
 * standby connected, commits wait; that is the point.
 *
 * One attempt does not wait: it throws StandbysNotSynchronous, and the step is asked again
 * with its progress (it polled in place for up to 15 s, holding a worker slot and its
 * resource's actions). The bound `timeoutMs` counts from the first attempt: one that does not
 * get there in time is not waited for while the step retries, as a commit must not hang on a
 * standby that could not be made synchronous. A reload of the primary's configuration
 * between attempts may have let commits through unconfirmed (the setting reset, then set
 * again): the target is then taken again, never kept from before it.
 */
export async function synchronizeStandbys(
  primary: SuperuserTarget,
  standbys: string[],
  timeoutMs = 15_000,
  progress?: SyncProgress,
): Promise<void> {
  if (standbys.length === 0) throw new Error('there is no standby to make synchronous');
  await asSuperuser(primary, 'postgres', async (client) => {
    const wanted = `FIRST 1 (${standbys.map((n) => `"${n}"`).join(', ')})`;
    const { rows } = await client.query<{ deadline: string; late: boolean; setting: string; loaded: string }>(
      `select coalesce($1::timestamptz, clock_timestamp() + make_interval(secs => $2))::text as deadline,
         coalesce(clock_timestamp() > $1::timestamptz, false) as late,
         current_setting('synchronous_standby_names') as setting, pg_conf_load_time()::text as loaded`,
      [progress?.deadline ?? null, timeoutMs / 1000],
    );
    const { deadline, late, setting, loaded } = rows[0]!;
    const giveUp = async () => {
      await client.query('alter system reset synchronous_standby_names');
      await client.query('select pg_reload_conf()');
      throw new Error(`no standby of ${standbys.join(', ')} became synchronous within ${timeoutMs / 1000} s`);
    };
    if (setting !== wanted) {
      if (late) await giveUp();
      await client.query(`alter system set synchronous_standby_names = ${pg.escapeLiteral(wanted)}`);
      // The reload is asynchronous, and this session's load time is its own: the next attempt looks.
      await client.query('select pg_reload_conf()');
      throw new StandbysNotSynchronous({ deadline });
    }
    let target = progress?.loadedAt === loaded ? progress.target : undefined;
    for (;;) {
      const sync = await client.query<{ flushed: boolean; now: string }>(
        `select flush_lsn >= coalesce($2::pg_lsn, '0/0') as flushed, pg_current_wal_lsn()::text as now
         from pg_stat_replication where sync_state = 'sync' and application_name = any($1)`,
        [standbys, target ?? null],
      );
      const seen = sync.rows[0];
      if (seen && target !== undefined && seen.flushed) return;
      if (seen && target === undefined) {
        target = seen.now;
        continue;
      }
      if (late) await giveUp();
      throw new StandbysNotSynchronous({ deadline, ...(target !== undefined ? { target, loadedAt: loaded } : {}) });
    }
  });
}

/**
 * The file, next to a standby's data directory, that tells its restore command the archive
 * has nothing for it (see `skippableRestoreCommand`): written by the server itself, so the
 * promotion needs no access to its host beyond SQL.
 */
export const ARCHIVE_SKIPPED_FILE = 'archive-skipped';

/**
 * A restore command that answers "not there" at once, without starting `command`, while
 * `ARCHIVE_SKIPPED_FILE` next to the data directory is not empty. Postgres runs it in the
 * data directory.
 */
export function skippableRestoreCommand(command: string): string {
  return `test ! -s ../${ARCHIVE_SKIPPED_FILE} && exec ${command}`;
}

/**
 * Promote a standby and wait until it takes writes; a server already promoted is not
 * promoted again. A new primary waits for no standby until one is made synchronous again:
 * a setting it brought along (from a backup or a rewind) could name a server that is gone,
 * or itself, and then no commit would ever be acknowledged.
 *
 * At its end, recovery asks the restore command for the next segment and for timeline
 * history files, each call a process of its own: 0.7 s of a 0.85 s promotion on an idle
 * machine, over 1 s under load. When `archiveAhead` says the old primary's archive has
 * nothing past what the standby received, the restore command is told to skip the archive
 * for the promotion. When it may be ahead (a standby that fell behind), or cannot be read,
 * recovery reads it first, as it always did. The standby follows the newest timeline it
 * has a history file of; its last restartpoint's may be older (a rewound server's is).
 */
export async function promoteStandby(
  standby: SuperuserTarget,
  archiveAhead: (timeline: number, position: number) => Promise<boolean>,
): Promise<void> {
  await asSuperuser(standby, 'postgres', async (client) => {
    const { rows } = await client.query<{
      recovering: boolean;
      received: string | null;
      replayed: string | null;
      timeline: number;
      dir: string;
    }>(
      `select pg_is_in_recovery() as recovering, pg_last_wal_receive_lsn()::text as received,
         pg_last_wal_replay_lsn()::text as replayed, greatest((select timeline_id from pg_control_checkpoint()),
           (select max(('x' || left(name, 8))::bit(32)::int) from pg_ls_waldir() where name ~ '^[0-9A-F]{8}\\.history$')) as timeline,
         current_setting('data_directory') as dir`,
    );
    const { recovering, received, replayed, timeline, dir } = rows[0]!;
    if (!recovering) return;
    const has = Math.max(lsnBytes(received) ?? 0, lsnBytes(replayed) ?? 0);
    const skipped = pg.escapeLiteral(path.join(path.dirname(dir), ARCHIVE_SKIPPED_FILE));
    const skip = has > 0 && !(await archiveAhead(timeline, has).catch(() => true));
    if (skip) await client.query(`copy (select 'promoting') to ${skipped}`);
    try {
      const promoted = await client.query<{ ok: boolean }>('select pg_promote(true, 60) as ok');
      if (!promoted.rows[0]!.ok) throw new Error('the standby did not finish promotion within 60 s');
    } finally {
      // Emptied, not removed (SQL cannot): a standby that stays one reads its archive again.
      if (skip) await client.query(`copy (select 1 where false) to ${skipped}`);
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
