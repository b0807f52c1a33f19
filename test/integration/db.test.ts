import { describe, expect, it } from 'vitest';
import { transaction } from '../../src/db.ts';
import { useTestDatabase } from '../support/db.ts';

/**
 * A transaction whose connection goes away (the control database restarts, an operator
 * ends the session) fails, and the process goes on: pg-pool drops its handler for a client
 * it hands out, and an 'error' event with no listener crashed workers (issue 11).
 */
describe('a transaction whose connection is lost', () => {
  const ctx = useTestDatabase();

  it('rejects, leaves the process running, and the pool serves the next one', async () => {
    const run = transaction(ctx.db.pool, async (client) => {
      const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
      await ctx.db.pool.query('select pg_terminate_backend($1)', [rows[0]!.pid]);
      // The server's goodbye arrives while nothing is asked: only the 'error' event sees it.
      await new Promise((r) => setTimeout(r, 300));
      await client.query('select 1');
    });
    await expect(run).rejects.toThrow(/terminat|Connection|closed/i);
    expect(await transaction(ctx.db.pool, async (client) => (await client.query<{ n: number }>('select 1 as n')).rows[0]!.n)).toBe(1);
  });
});
