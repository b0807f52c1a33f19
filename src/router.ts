import net from 'node:net';
import type { Pool } from './db.ts';
import type { Logger } from './log.ts';

/**
 * The router: a stable address per resource with standbys, so its URL keeps working across
 * a failover for every client (psql, node-postgres, anything speaking TCP) with no change
 * of config. Each resource gets a port of its own; each new connection is piped to the
 * server that is its primary in the control database right now. When a failover swaps the
 * roles, connections to the old primary die with it and reconnecting clients reach the new
 * one. The old primary is fenced before the standby is promoted, so the router never has
 * two primaries to choose from.
 */
export interface Route {
  resourceId: string;
  port: number;
  target: { host: string; port: number } | undefined;
}

export async function loadRoutes(pool: Pool): Promise<Route[]> {
  const { rows } = await pool.query<{ id: string; port: string; host: string | null; target_port: number | null }>(
    `select r.id, r.attrs->'router_port' as port, s.host, s.port as target_port
     from resources r join machines m on m.entity_id = r.id
     left join resource_servers rs on rs.resource_id = r.id and rs.role = 'primary'
     left join servers s on s.id = rs.server_id
     where r.attrs ? 'router_port' and m.finished_at is null and m.state <> 'deprovisioning'`,
  );
  return rows.map((r) => ({
    resourceId: r.id,
    port: Number(r.port),
    target: r.host && r.target_port ? { host: r.host, port: r.target_port } : undefined,
  }));
}

export class Router {
  private readonly listeners = new Map<string, { server: net.Server; route: Route }>();
  private readonly sockets = new Set<net.Socket>();
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly host: string,
    private readonly log: Logger,
    private readonly refreshMs = 250,
  ) {}

  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => {
      this.refreshing ??= this.refresh()
        .catch((err: unknown) => this.log.warn({ err }, 'refreshing routes failed'))
        .finally(() => (this.refreshing = undefined));
    }, this.refreshMs);
  }

  /** Listen for new resources, forget deleted ones, and follow each resource's primary. */
  async refresh(): Promise<void> {
    const routes = await loadRoutes(this.pool);
    const live = new Set(routes.map((r) => r.resourceId));
    for (const [id, entry] of this.listeners) {
      if (!live.has(id)) {
        entry.server.close();
        this.listeners.delete(id);
      }
    }
    for (const route of routes) {
      const existing = this.listeners.get(route.resourceId);
      if (existing) {
        existing.route = route;
        continue;
      }
      const entry = { server: net.createServer((socket) => this.pipe(socket, entry.route)), route };
      entry.server.on('error', (err) => this.log.error({ err, resource: route.resourceId, port: route.port }, 'the router cannot listen for this resource'));
      entry.server.listen(route.port, this.host);
      this.listeners.set(route.resourceId, entry);
    }
  }

  private pipe(client: net.Socket, route: Route): void {
    const target = route.target;
    if (!target) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.refreshing;
    for (const s of this.sockets) s.destroy();
    await Promise.all([...this.listeners.values()].map((e) => new Promise<void>((resolve) => e.server.close(() => resolve()))));
    this.listeners.clear();
  }
}
