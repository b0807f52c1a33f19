import pg from 'pg';
import { endClient } from '../src/pg/endClient.ts';
import { STATS_USER, statsPassword } from '../src/pg/poolConfig.ts';

interface PoolRow {
  database: string;
  cl_active: string;
  cl_waiting: string;
  sv_active: string;
  sv_idle: string;
  sv_used: string;
  maxwait: string;
}

/**
 * What the server's pgbouncer says of its pools, from its admin console (`SHOW POOLS`) as
 * the stats user, summed over the tenants: clients served and waiting for a server
 * connection, server connections held, and the longest wait. Clients that wait mean a
 * tenant uses its whole share of the server.
 */
export async function observePooler(
  host: string,
  port: number,
  superuserPassword: string,
  timeoutMs = 2000,
): Promise<Record<string, string>> {
  // The pooler takes clients over TLS only. Its certificate is not checked here: SCRAM
  // proves both ends know the stats password, and an impostor learns nothing from it.
  const client = new pg.Client({
    host,
    port,
    user: STATS_USER,
    password: statsPassword(superuserPassword),
    database: 'pgbouncer',
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    ssl: { rejectUnauthorized: false },
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<PoolRow>('SHOW POOLS');
    const pools = rows.filter((r) => r.database !== 'pgbouncer');
    const sum = (key: keyof PoolRow) => String(pools.reduce((total, r) => total + Number(r[key]), 0));
    return {
      pool_reachable: 'true',
      pool_active_clients: sum('cl_active'),
      pool_waiting_clients: sum('cl_waiting'),
      pool_server_connections: String(pools.reduce((total, r) => total + Number(r.sv_active) + Number(r.sv_idle) + Number(r.sv_used), 0)),
      pool_max_wait_seconds: String(Math.max(0, ...pools.map((r) => Number(r.maxwait)))),
    };
  } catch (err) {
    return { pool_reachable: 'false', pool_error: (err as Error).message.slice(0, 300) };
  } finally {
    await endClient(client);
  }
}
