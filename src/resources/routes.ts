import type { Queryable } from '../db.ts';
import { freePort } from '../pg/ports.ts';

/** Where the router serves a resource (src/processes/router.ts): addresses that outlive any of its servers. */
export interface Route {
  host: string;
  port: number;
  /** Reads spread over the standbys that keep up (the primary when none does). */
  readOnlyPort: number | undefined;
  /** Piped to the current primary's pooler. */
  poolPort: number | undefined;
}

export function routeOf(attrs: Record<string, string>): Route | undefined {
  if (!attrs.router_port || !attrs.router_host) return undefined;
  const port = (name: string) => (attrs[name] ? Number(attrs[name]) : undefined);
  return {
    host: attrs.router_host,
    port: Number(attrs.router_port),
    readOnlyPort: port('router_read_only_port'),
    poolPort: port('router_pool_port'),
  };
}

/**
 * A resource with standbys is reached through the router, at addresses that survive a
 * failover: one for the primary, one that spreads reads over the standbys, one for the
 * primary's pooler. Once it has them it keeps them, so its URLs never change again.
 */
export async function ensureRoute(db: Queryable, id: string): Promise<void> {
  await db.query(
    `update resources set attrs = attrs || hstore(array['router_host', 'router_port', 'router_read_only_port', 'router_pool_port'],
                                                 array['127.0.0.1', $2, $3, $4])
     where id = $1 and not attrs ? 'router_port'`,
    [id, String(await freePort()), String(await freePort()), String(await freePort())],
  );
}
