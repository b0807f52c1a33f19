import { describe, expect, it } from 'vitest';
import { createPool } from '../../src/db.ts';
import { migrate, readMigrations } from '../../src/migrate.ts';
import { createTestDatabase } from '../support/db.ts';

describe('migrations', () => {
  it('are applied once when several processes migrate an empty database at the same time', async () => {
    const db = await createTestDatabase({ empty: true });
    const pools = Array.from({ length: 4 }, () => createPool(db.url, 2));
    try {
      const applied = await Promise.all(pools.map((p) => migrate(p)));
      const all = readMigrations().map((m) => m.name);
      expect(applied.flat().sort()).toEqual(all.sort());
      const { rows } = await pools[0]!.query<{ n: number }>('select count(*)::int as n from pgfleet_migrations');
      expect(rows[0]!.n).toBe(all.length);
      expect(await migrate(pools[0]!)).toEqual([]);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
      await db.drop();
    }
  });

  it('roll back a migration that fails and do not count it as applied', async () => {
    const db = await createTestDatabase({ empty: true });
    const pool = db.pool;
    try {
      const broken = [{ id: 1, name: '0001_broken.sql', sql: 'create table half (n int); select no_such_function();' }];
      await expect(migrate(pool, broken)).rejects.toThrow(/0001_broken.sql failed/);
      const { rows } = await pool.query(`select to_regclass('half') as t, (select count(*)::int from pgfleet_migrations) as n`);
      expect(rows[0]).toEqual({ t: null, n: 0 });
    } finally {
      await db.drop();
    }
  });
});
