import type { Queryable } from '../db.ts';

/**
 * The resources a server serves, oldest link first. Its own module, importing nothing but
 * the database's type, so the runner's machine table can use it without an import circle.
 */
export async function resourcesServedBy(db: Queryable, serverId: string): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    'select resource_id as id from resource_servers where server_id = $1 order by created_at',
    [serverId],
  );
  return rows.map((r) => r.id);
}
