import { endClient } from '../src/pg/endClient.ts';
import { superuserClient, type SuperuserTarget } from '../src/pg/superuser.ts';
import { lsnBytes, SEGMENT_BYTES, segmentStartBytes } from '../src/wal/segments.ts';

/**
 * One catalog query fills the whole observation. Every value becomes an hstore string;
 * each database's size is a key of its own, so a new check is a new key, not a migration.
 */
const OBSERVE_SQL = `
select pg_is_in_recovery() as in_recovery,
  current_setting('server_version') as version,
  extract(epoch from now() - pg_postmaster_start_time())::bigint as uptime_seconds,
  (select count(*) from pg_stat_activity where backend_type = 'client backend') as connections,
  current_setting('max_connections') as max_connections,
  (select json_object_agg(datname, pg_database_size(oid)) from pg_database where datallowconn) as database_sizes,
  (select timeline_id from pg_control_checkpoint()) as timeline,
  (select max(age(datfrozenxid)) from pg_database) as oldest_xid_age,
  (select failed_count from pg_stat_archiver) as archiver_failed_count,
  -- Whether pg_hba.conf makes customers' roles use TLS (pgfleet's has a hostssl line).
  exists (select from pg_hba_file_rules where type = 'hostssl') as tls_required,
  (select archived_count from pg_stat_archiver) as archiver_archived_count,
  (select last_failed_wal from pg_stat_archiver) as archiver_last_failed_wal,
  (select last_archived_wal from pg_stat_archiver) as archiver_last_archived_wal,
  -- The oldest segment waiting for archive_command. Unlike pg_stat_archiver, which a crash
  -- resets, archive_status is on disk: what is not .ready is archived.
  (select split_part(name, '.', 1) || case when name like '%.partial.ready' then '.partial' else '' end
   from pg_ls_archive_statusdir() where name ~ '^[0-9A-F]{24}(\\.partial)?\\.ready$'
   order by substr(name, 9, 16) limit 1) as archive_oldest_ready,
  case when not pg_is_in_recovery() then pg_current_wal_lsn()::text end as current_lsn,
  -- Failing now: the last attempt failed, with no success since.
  (select coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) from pg_stat_archiver) as archiver_failing,
  -- On a primary: how far its slowest standby is behind, in seconds and bytes.
  (select extract(epoch from max(replay_lag))::float8 from pg_stat_replication) as replication_lag_seconds,
  (select max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::bigint from pg_stat_replication where not pg_is_in_recovery())
    as replication_lag_bytes,
  current_setting('synchronous_standby_names') as synchronous_standby_names,
  -- Commits waiting for a synchronous standby, and for how long the oldest has (since its
  -- statement began: a little more than its wait, by the statement's own run).
  (select count(*) from pg_stat_activity where wait_event = 'SyncRep') as sync_waiting,
  (select (extract(epoch from clock_timestamp() - min(query_start)) * 1000)::bigint from pg_stat_activity where wait_event = 'SyncRep')
    as sync_wait_ms,
  -- Each standby streaming from it, by its name: whether it still answers, and how much WAL it has not flushed.
  (select json_object_agg(application_name, json_build_object(
      'state', state,
      'sync_state', sync_state,
      'reply_ms', (extract(epoch from clock_timestamp() - reply_time) * 1000)::bigint,
      'flush_lag_bytes', case when not pg_is_in_recovery() then pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::bigint end))
   from pg_stat_replication) as replicas`;

/**
 * How much WAL a primary has written past the last segment it archived: what would be lost
 * with the server if the archive were all there was. `oldestReady` is the oldest segment
 * waiting to be archived; with none waiting, every finished segment is archived and the lag
 * is what the current segment holds. Undefined when it cannot tell (a standby).
 */
export function archiveLagBytes(currentLsn: string | undefined, oldestReady: string | undefined): number | undefined {
  const current = lsnBytes(currentLsn);
  if (current === undefined) return undefined;
  const waiting = segmentStartBytes(oldestReady);
  return Math.max(0, current - (waiting ?? current - (current % SEGMENT_BYTES)));
}

export async function observePostgres(target: SuperuserTarget, timeoutMs = 2000): Promise<Record<string, string>> {
  const client = superuserClient(target, { connectTimeoutMs: timeoutMs, queryTimeoutMs: timeoutMs, applicationName: 'pgfleet-observer' });
  client.on('error', () => undefined);
  const started = performance.now();
  try {
    await client.connect();
    const { rows } = await client.query<Record<string, unknown>>(OBSERVE_SQL);
    const row = rows[0] ?? {};
    const { database_sizes: sizes, replicas, ...rest } = row;
    const obs: Record<string, string> = { reachable: 'true', probe_ms: String(Math.round(performance.now() - started)) };
    for (const [k, v] of Object.entries(rest)) if (v !== null && v !== undefined) obs[k] = String(v);
    const lag = archiveLagBytes(obs.current_lsn, obs.archive_oldest_ready);
    if (lag !== undefined) obs.archive_lag_bytes = String(lag);
    for (const [db, bytes] of Object.entries((sizes ?? {}) as Record<string, number>)) obs[`database_size.${db}`] = String(bytes);
    for (const [name, replica] of Object.entries((replicas ?? {}) as Record<string, Record<string, unknown>>)) {
      for (const [k, v] of Object.entries(replica)) if (v !== null) obs[`replica.${name}.${k}`] = String(v);
    }
    return obs;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { reachable: 'false', error: e.message.slice(0, 500), ...(e.code ? { error_code: e.code } : {}) };
  } finally {
    await endClient(client);
  }
}
