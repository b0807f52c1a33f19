import pg from 'pg';

export type Pool = pg.Pool;
export type Client = pg.PoolClient;
/** Anything that runs a query: a pool, or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>;

export function createPool(connectionString: string, max = 10): Pool {
  // JIT compiling the claim costs more than running it: on a queue table full of dead rows
  // the planner's estimate crossed the JIT thresholds and each claim spent 185 of its 212 ms
  // compiling (bench/queue/explain.ts). The control plane's queries are short; no JIT.
  const pool = new pg.Pool({ connectionString, max, application_name: 'pgfleet', options: '-c jit=off' });
  // An idle client that loses its server (a restart of the control database) must not
  // crash the process; the pool drops it and the next query reconnects.
  pool.on('error', () => undefined);
  return pool;
}

/** A fixed-width UTC ISO time in SQL, so that times compare as strings (machines compare them). */
export function isoTime(expr: string): string {
  return `to_char(${expr} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
}

/**
 * Run `fn` in a transaction on a client of the pool. pg-pool drops its own error handler
 * from a client it hands out, so a server that goes away meanwhile (a restart of the
 * control database) emitted an 'error' nobody heard and crashed the process: here it fails
 * the transaction instead, and the client is thrown away rather than pooled.
 */
export function transaction<T>(pool: Pool, fn: (client: Client) => Promise<T>): Promise<T> {
  return inTransaction(pool, 'begin', fn);
}

/**
 * Reads that must agree with each other (an entity's state and its transitions): one
 * snapshot, so a step committed between two of them cannot show a state without its
 * transition.
 */
export function snapshot<T>(pool: Pool, fn: (client: Client) => Promise<T>): Promise<T> {
  return inTransaction(pool, 'begin isolation level repeatable read read only', fn);
}

async function inTransaction<T>(pool: Pool, begin: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let lost: Error | undefined;
  const onError = (err: Error) => (lost = err);
  client.on('error', onError);
  try {
    await client.query(begin);
    const result = await fn(client);
    await client.query('commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.off('error', onError);
    client.release(lost);
  }
}

/** Connection-level errors: the connection was lost or refused, or the server is starting or stopping. */
const CONNECTION_LOSS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08006',
]);

/**
 * Whether an error says a connection was lost rather than that something went wrong on it:
 * what a database restarting (the control database, a server failing over) does to whatever
 * was under way. The job is tried again; it is no one's bug, and no reason to page.
 */
export function isConnectionLoss(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && CONNECTION_LOSS.has(code)) return true;
  return typeof message === 'string' && /^(Connection terminated|Client has encountered a connection error|timeout expired)/.test(message);
}
