import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Pool } from './db.ts';

const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'migrations');
/** Any fixed number: it only has to be the same in every pgfleet process. */
const MIGRATION_LOCK = 7_460_001;

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

export function readMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ id: Number(f.slice(0, 4)), name: f, sql: readFileSync(path.join(dir, f), 'utf8') }));
}

/**
 * Apply the numbered SQL files not yet applied. A session advisory lock makes a second
 * process wait and then find nothing to do; each file runs in its own transaction with
 * its row inserted first, so a half-applied migration never counts as applied.
 */
export async function migrate(pool: Pool, migrations = readMigrations()): Promise<string[]> {
  const client = await pool.connect();
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query(
      `create table if not exists pgfleet_migrations
         (id integer primary key, name text not null, applied_at timestamptz not null default now())`,
    );
    const { rows } = await client.query<{ id: number }>('select id from pgfleet_migrations');
    const applied = new Set(rows.map((r) => r.id));
    const done: string[] = [];
    for (const m of migrations.filter((m) => !applied.has(m.id))) {
      await client.query('begin');
      try {
        await client.query('insert into pgfleet_migrations (id, name) values ($1, $2)', [m.id, m.name]);
        await client.query(m.sql);
        await client.query('commit');
      } catch (err) {
        await client.query('rollback');
        throw new Error(`migration ${m.name} failed: ${(err as Error).message}`);
      }
      done.push(m.name);
    }
    return done;
  } finally {
    await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    client.release();
  }
}
