import pg from 'pg';
import { endClient } from './endClient.ts';

/** A server as its superuser reaches it. */
export interface SuperuserTarget {
  host: string;
  port: number;
  password: string;
}

/**
 * A client (not connected yet) of a server as its superuser, named in pg_stat_activity as
 * `applicationName`. `queryTimeoutMs` bounds each query where a caller must not wait on a
 * stuck server.
 */
export function superuserClient(
  target: SuperuserTarget,
  opts: { database?: string; connectTimeoutMs: number; queryTimeoutMs?: number; applicationName: string },
): pg.Client {
  return new pg.Client({
    host: target.host,
    port: target.port,
    user: 'postgres',
    password: target.password,
    database: opts.database ?? 'postgres',
    connectionTimeoutMillis: opts.connectTimeoutMs,
    ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {}),
    application_name: opts.applicationName,
  });
}

/** Run `fn` with a connection to one database of a server as its superuser, closed after. */
export async function asSuperuser<T>(
  target: SuperuserTarget,
  database: string,
  fn: (client: pg.Client) => Promise<T>,
  queryTimeoutMs?: number,
): Promise<T> {
  const client = superuserClient(target, { database, connectTimeoutMs: 5000, queryTimeoutMs, applicationName: 'pgfleet' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await endClient(client);
  }
}
