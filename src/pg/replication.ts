import pg from 'pg';
import type { SuperuserTarget } from './tenant.ts';

/** The name a standby connects with (its `application_name`), as `synchronous_standby_names` lists it. */
export function standbyName(serverId: string): string {
  return serverId.replace(/-/g, '_');
}

/**
 * Require one of `standbys` to confirm every commit, and wait until the primary reports one
 * of them as `sync`: only then is the promise kept. With no standby connected, commits wait;
 * that is the point.
 */
export async function synchronizeStandbys(primary: SuperuserTarget, standbys: string[], timeoutMs = 15_000): Promise<void> {
  if (standbys.length === 0) throw new Error('there is no standby to make synchronous');
  const client = new pg.Client({ ...primary, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 5000, application_name: 'pgfleet' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const names = standbys.map((n) => `"${n}"`).join(', ');
    await client.query(`alter system set synchronous_standby_names = ${pg.escapeLiteral(`FIRST 1 (${names})`)}`);
    await client.query('select pg_reload_conf()');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { rows } = await client.query(`select 1 from pg_stat_replication where sync_state = 'sync' and application_name = any($1)`, [standbys]);
      if (rows.length > 0) return;
      if (Date.now() > deadline) throw new Error(`no standby of ${standbys.join(', ')} became synchronous within ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}
