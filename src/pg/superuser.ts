import pg from 'pg';

/** A server as its superuser reaches it. */
export interface SuperuserTarget {
  host: string;
  port: number;
  password: string;
}

/**
 * Run `fn` with a connection to one database of a server as its superuser, closed after.
 * `queryTimeoutMs` bounds each query where a caller must not wait on a stuck server.
 */
export async function asSuperuser<T>(target: SuperuserTarget, database: string, fn: (client: pg.Client) => Promise<T>, queryTimeoutMs?: number): Promise<T> {
  const client = new pg.Client({
    host: target.host,
    port: target.port,
    user: 'postgres',
    password: target.password,
    database,
    connectionTimeoutMillis: 5000,
    ...(queryTimeoutMs ? { query_timeout: queryTimeoutMs } : {}),
    application_name: 'pgfleet',
  });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}
