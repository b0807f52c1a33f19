import { isoTime as iso, type Queryable } from '../db.ts';

/**
 * What observers saw: a row per source in `observations` (kept a few days, in partitions
 * the clock drops), and the merged set on the entity's own row, where a tick reads it.
 */

/** The tables whose rows carry their entity's latest observation. */
export type ObservedTable = 'servers' | 'resources';

/**
 * Record what every observer saw, one row per source, and make the merged set the
 * entity's latest observation. Returns the observation's time (the database's clock, the
 * one every machine event is stamped with).
 */
export async function recordObservation(
  db: Queryable,
  id: string,
  sources: Record<string, Record<string, string>>,
  table: ObservedTable,
): Promise<string> {
  const { rows } = await db.query<{ at: string }>(
    `with src as (
       select key as source, value as attrs from jsonb_each($2::jsonb)
     ), ins as (
       insert into observations (entity_id, observed_at, source, attrs)
       select $1, clock_timestamp(), source,
         coalesce((select hstore(array_agg(key), array_agg(value)) from jsonb_each_text(attrs)), '') from src
       returning observed_at
     )
     update ${table} set last_observed_at = (select max(observed_at) from ins),
       last_observation = coalesce((select hstore(array_agg(key), array_agg(value)) from src, jsonb_each_text(src.attrs)), '')
     where id = $1
     returning ${iso('last_observed_at')} as at`,
    [id, JSON.stringify(sources)],
  );
  return rows[0]!.at;
}

export async function latestObservation(
  db: Queryable,
  id: string,
  table: ObservedTable,
): Promise<{ at: string; obs: Record<string, string> } | undefined> {
  const { rows } = await db.query<{ at: string | null; obs: Record<string, string> }>(
    `select ${iso('last_observed_at')} as at, hstore_to_json(last_observation) as obs from ${table} where id = $1`,
    [id],
  );
  const row = rows[0];
  return row?.at ? { at: row.at, obs: row.obs } : undefined;
}
