import { snapshot, type Pool, type Queryable } from '../db.ts';
import { listTransitions, type TransitionView } from '../runner/store.ts';
import type { Sealer } from '../sealer.ts';
import { resourceConfig } from './config.ts';
import { resourceServers, type ServerRole } from './rows.ts';
import { routeOf } from './routes.ts';

export interface ResourceView {
  id: string;
  plan: string;
  region: string;
  name: string | null;
  state: string;
  createdAt: Date;
  observedAt: Date | null;
  observation: Record<string, string>;
  lastError: string | null;
  /** Since when the primary has acknowledged commits without waiting for its stalled standby; null while it waits. */
  unsynchronizedSince: string | null;
  /** The config vars the platform got, or gets once the database is ready. */
  config: Record<string, string>;
  servers: { id: string; role: ServerRole; state: string; host: string | null; port: number | null }[];
}

const VIEW_SQL = `
  select r.id, r.plan, r.region, r.name, m.state, r.created_at as "createdAt", r.last_observed_at as "observedAt",
    hstore_to_json(r.last_observation) as observation, m.context->>'lastError' as "lastError",
    m.context->>'unsynchronizedSince' as "unsynchronizedSince",
    r.database_name, r.role_name, r.password_sealed, hstore_to_json(r.attrs) as attrs
  from resources r join entity_states m on m.entity_id = r.id`;

type ViewRow = Omit<ResourceView, 'config' | 'servers'> & {
  database_name: string;
  role_name: string;
  password_sealed: string;
  attrs: Record<string, string>;
};

async function toView(db: Queryable, sealer: Sealer, prefix: string, row: ViewRow): Promise<ResourceView> {
  const { database_name: database, role_name: role, password_sealed: sealed, attrs, ...rest } = row;
  const servers = await resourceServers(db, row.id);
  const primary = servers.find((s) => s.role === 'primary');
  const config =
    row.state === 'deleted' ? {} : resourceConfig(prefix, { database, role, password: sealer.open(sealed) }, primary, routeOf(attrs));
  return { ...rest, config, servers: servers.map(({ id, role, state, host, port }) => ({ id, role, state, host, port })) };
}

/** A resource, its servers and its transitions as of one moment. */
export function getResource(
  pool: Pool,
  sealer: Sealer,
  prefix: string,
  id: string,
): Promise<(ResourceView & { transitions: TransitionView[] }) | undefined> {
  return snapshot(pool, async (db) => {
    const { rows } = await db.query<ViewRow>(`${VIEW_SQL} where r.id = $1`, [id]);
    if (!rows[0]) return undefined;
    return { ...(await toView(db, sealer, prefix, rows[0])), transitions: await listTransitions(db, id) };
  });
}

export async function listResources(db: Queryable, sealer: Sealer, prefix: string): Promise<ResourceView[]> {
  const { rows } = await db.query<ViewRow>(`${VIEW_SQL} where m.finished_at is null order by r.created_at`);
  return Promise.all(rows.map((row) => toView(db, sealer, prefix, row)));
}
