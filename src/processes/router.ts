import net from 'node:net';
import { statesTagged } from '../../machines/policy.ts';
import { resourceMachine } from '../../machines/resource.ts';
import { serverMachine } from '../../machines/server.ts';
import type { Pool } from '../db.ts';
import type { Logger } from '../log.ts';
import { enqueue, PRIORITY } from '../queue/jobs.ts';
import { Notifications } from '../listen.ts';
import { refreshEvery, type Refresher } from '../refresher.ts';
import { queueForTask } from '../runner/runner.ts';

/**
 * The router: stable addresses per resource with standbys, so its URLs keep working across
 * a failover for every client (psql, node-postgres, anything speaking TCP) with no change
 * of config. Each resource gets two ports of its own. On the first, each new connection is
 * piped to the server that is its primary in the control database right now: when a
 * failover swaps the roles, connections to the old primary die with it and reconnecting
 * clients reach the new one. The old primary is fenced before the standby is promoted, so
 * the router never has two primaries to choose from. On the second (read-only) port, each
 * connection goes to the next of the standbys that keep up (replay lag within a bound, as
 * their health check measures it), and to the primary when none does. On a third (the
 * pooled URL), each connection goes to the current primary's pgbouncer.
 */
export interface Server {
  id: string;
  host: string;
  port: number;
  /** Where the server's pgbouncer listens, when it has one. */
  poolPort?: number;
}

export interface Route {
  resourceId: string;
  port: number;
  readOnlyPort: number | undefined;
  poolPort: number | undefined;
  primary: Server | undefined;
  /** Standbys whose machines are available, in a stable order. */
  standbys: Server[];
}

export async function loadRoutes(pool: Pool): Promise<Route[]> {
  const { rows } = await pool.query<{
    id: string;
    port: string;
    read_only_port: string | null;
    pool_port: string | null;
    servers: { id: string; role: string; host: string; port: number; pool_port: string | null }[];
  }>(
    `select r.id, r.attrs->'router_port' as port, r.attrs->'router_read_only_port' as read_only_port,
       r.attrs->'router_pool_port' as pool_port,
       coalesce((select json_agg(json_build_object('id', s.id, 'role', rs.role, 'host', s.host, 'port', s.port,
                                                   'pool_port', s.attrs->'pool_port') order by s.id)
                 from resource_servers rs join servers s on s.id = rs.server_id join entity_states sm on sm.entity_id = s.id
                 where rs.resource_id = r.id and s.port is not null
                   and (rs.role = 'primary' or (rs.role = 'standby' and sm.state = any($1::text[])))), '[]') as servers
     from resources r join entity_states m on m.entity_id = r.id
     where r.attrs ? 'router_port' and m.finished_at is null and not (m.state = any($2::text[]))`,
    [statesTagged(serverMachine, 'healthy'), statesTagged(resourceMachine, 'gone')],
  );
  return rows.map((r) => {
    const server = (s: { id: string; host: string; port: number; pool_port: string | null }) => ({
      id: s.id,
      host: s.host,
      port: s.port,
      ...(s.pool_port ? { poolPort: Number(s.pool_port) } : {}),
    });
    const primary = r.servers.find((s) => s.role === 'primary');
    return {
      resourceId: r.id,
      port: Number(r.port),
      readOnlyPort: r.read_only_port ? Number(r.read_only_port) : undefined,
      poolPort: r.pool_port ? Number(r.pool_port) : undefined,
      primary: primary && server(primary),
      standbys: r.servers.filter((s) => s.role === 'standby').map(server),
    };
  });
}

/** The server's pgbouncer as a place to pipe to; none for a server without one. */
function poolOf(server: Server | undefined): Server | undefined {
  return server?.poolPort === undefined ? undefined : { id: server.id, host: server.host, port: server.poolPort };
}

export interface RouterOptions {
  /** Whether a standby's replay lag is within the bound; the health checks answer it. */
  replicaWithin?: (serverId: string, maxLagBytes: number) => Promise<boolean>;
  /** The read-only pool's bound on a standby's replay lag, in bytes. */
  readOnlyMaxLagBytes?: number;
  refreshMs?: number;
}

type Listener = { server: net.Server; port: number };

export class Router {
  private readonly listeners = new Map<
    string,
    { primary: Listener; readOnly: Listener | undefined; pooled: Listener | undefined; route: Route; next: number }
  >();
  private readonly sockets = new Set<net.Socket>();
  private refresher: Refresher | undefined;
  private changes: Notifications | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly host: string,
    private readonly log: Logger,
    private readonly opts: RouterOptions = {},
  ) {}

  async start(): Promise<void> {
    this.refresher = await refreshEvery(this.opts.refreshMs ?? 250, () => this.refresh(), this.log, 'refreshing routes');
    // Told of every change of a resource's servers (migrations/0013_route_notify.sql), it
    // refreshes at once: clients reach a promoted standby without waiting for the period.
    this.changes = new Notifications(this.pool, {
      channels: ['pgfleet_routes'],
      purpose: 'route changes',
      log: this.log,
      onNotify: () => this.refresher?.now(),
      onConnected: () => this.refresher?.now(),
    });
    await this.changes.start();
  }

  /** Listen for new resources, forget deleted ones, and follow each resource's servers. */
  async refresh(): Promise<void> {
    const routes = await loadRoutes(this.pool);
    const live = new Set(routes.map((r) => r.resourceId));
    for (const [id, entry] of this.listeners) {
      if (!live.has(id)) {
        entry.primary.server.close();
        entry.readOnly?.server.close();
        entry.pooled?.server.close();
        this.listeners.delete(id);
      }
    }
    for (const route of routes) {
      const existing = this.listeners.get(route.resourceId);
      if (existing) {
        existing.route = route;
        continue;
      }
      const entry = {
        route,
        next: 0,
        primary: this.listen(route, route.port, (socket) => this.pipe(socket, entry.route.primary)),
        readOnly:
          route.readOnlyPort === undefined
            ? undefined
            : this.listen(route, route.readOnlyPort, (socket) => void this.pipeRead(socket, entry)),
        pooled:
          route.poolPort === undefined
            ? undefined
            : this.listen(route, route.poolPort, (socket) => this.pipe(socket, poolOf(entry.route.primary))),
      };
      this.listeners.set(route.resourceId, entry);
    }
  }

  private listen(route: Route, port: number, onConnection: (socket: net.Socket) => void): Listener {
    const server = net.createServer(onConnection);
    server.on('error', (err) => this.log.error({ err, resource: route.resourceId, port }, 'the router cannot listen for this resource'));
    server.listen(port, this.host);
    return { server, port };
  }

  /** The next standby that keeps up, round robin; the primary when none does. */
  private async pipeRead(client: net.Socket, entry: { route: Route; next: number }): Promise<void> {
    const { standbys, primary } = entry.route;
    const bound = this.opts.readOnlyMaxLagBytes ?? 16 * 1024 * 1024;
    const within = this.opts.replicaWithin;
    const ok = within ? await Promise.all(standbys.map((s) => within(s.id, bound).catch(() => false))) : standbys.map(() => true);
    const pool = standbys.filter((_, i) => ok[i]);
    this.pipe(client, pool.length > 0 ? pool[entry.next++ % pool.length] : primary);
  }

  private pipe(client: net.Socket, target: Server | undefined): void {
    if (!target || client.destroyed) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
    }
    // A refused connection is the first sign of a crash: have the server observed now
    // rather than at its next scheduled observation.
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') this.observeNow(target.id);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  }

  private observeNow(serverId: string): void {
    enqueue(this.pool, {
      task: 'observe',
      entityId: serverId,
      key: 'observe',
      queue: queueForTask('observe'),
      priority: PRIORITY.urgent,
    }).catch((err: unknown) => this.log.warn({ err, server: serverId }, 'asking for an observation failed'));
  }

  async stop(): Promise<void> {
    await this.changes?.stop();
    await this.refresher?.stop();
    for (const s of this.sockets) s.destroy();
    const closing = [...this.listeners.values()]
      .flatMap((e) => [e.primary, e.readOnly, e.pooled])
      .filter((l): l is Listener => l !== undefined);
    await Promise.all(closing.map((l) => new Promise<void>((resolve) => l.server.close(() => resolve()))));
    this.listeners.clear();
  }
}
