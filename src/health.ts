import http from 'node:http';
import pg from 'pg';
import { hasTag } from '../machines/policy.ts';
import { serverMachine } from '../machines/server.ts';
import type { Pool } from './db.ts';
import type { Logger } from './log.ts';
import { superuserClient, type SuperuserTarget } from './pg/superuser.ts';
import { refreshEvery } from './refresher.ts';
import type { Sealer } from './sealer.ts';
import { lsnBytes } from './wal/segments.ts';

/**
 * Patroni's health endpoints, one port per server (its `health_port` attr), so a stock
 * HAProxy config (`option httpchk OPTIONS /primary`, `/replica?lag=16MB`) routes to
 * pgfleet's servers as it would to Patroni's. An answer joins the control database's view
 * (the server's role, its machine's state, refreshed every 250 ms like the router's routes)
 * with a live probe of Postgres, so neither a stale row nor a server that merely answers is
 * enough to be sent writes.
 */
export type HealthCheck = 'primary' | 'replica' | 'read-only' | 'health';

const CHECKS: Record<string, HealthCheck> = {
  '/': 'primary',
  '/primary': 'primary',
  '/master': 'primary',
  '/leader': 'primary',
  '/read-write': 'primary',
  '/replica': 'replica',
  '/read-only': 'read-only',
  '/health': 'health',
};

const UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3, tb: 1024 ** 4 };

/** Patroni's `lag` values: bytes, or an integer with a unit (`16MB`, `1GB`; 1024-based). Undefined when it is neither. */
export function parseLag(value: string): number | undefined {
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m && UNITS[(m[2] || 'b').toLowerCase()];
  return m && unit ? Number(m[1]) * unit : undefined;
}

/** What an answer is decided from. */
export interface HealthFacts {
  /** The server's machine state (`available`, `restarting.running`, `fenced`, …). */
  machineState: string;
  /** It is a resource's primary in the control database. */
  controlPrimary: boolean;
  /** What the live probe saw; undefined when Postgres did not answer in time. */
  probe: { inRecovery: boolean } | undefined;
  /** Bytes of WAL its primary has that it has not replayed; undefined when unknown. */
  lagBytes: number | undefined;
}

/** The status code for one check; `maxLag` is the `lag` query parameter, in bytes. */
export function healthStatus(check: HealthCheck, facts: HealthFacts, maxLag?: number): 200 | 503 {
  // Machines on their way out (gone): fenced so there are never two primaries, or being deleted.
  const withdrawn = hasTag(serverMachine, facts.machineState, 'gone');
  const primary =
    !withdrawn && facts.controlPrimary && hasTag(serverMachine, facts.machineState, 'healthy') && facts.probe?.inRecovery === false;
  // An unknown lag fails a check that asks for a bound: a replica nobody can measure is not sent reads that must be fresh.
  const replica =
    !withdrawn && facts.probe?.inRecovery === true && (maxLag === undefined || (facts.lagBytes !== undefined && facts.lagBytes <= maxLag));
  switch (check) {
    case 'primary':
      return primary ? 200 : 503;
    case 'replica':
      return replica ? 200 : 503;
    case 'read-only':
      return primary || replica ? 200 : 503;
    case 'health':
      return facts.probe ? 200 : 503;
  }
}

/** Every live, placed server: where it is, its machine, and the server it replicates from. */
interface HealthTarget extends SuperuserTarget {
  id: string;
  healthPort: number | undefined;
  machineState: string;
  controlPrimary: boolean;
  /** The primary of a resource it is the standby of, else the leader it follows. */
  upstream: string | undefined;
  /** Its last observed WAL position, when it was a primary: the lag fallback when it cannot be reached. */
  observedLsn: string | undefined;
}

async function loadTargets(pool: Pool, sealer: Sealer): Promise<HealthTarget[]> {
  const { rows } = await pool.query<{
    id: string;
    host: string;
    port: number;
    sealed: string;
    health_port: string | null;
    state: string;
    control_primary: boolean;
    upstream: string | null;
    observed_lsn: string | null;
  }>(
    `select s.id, s.host, s.port, s.superuser_password_sealed as sealed, s.attrs->'health_port' as health_port, m.state,
       exists (select 1 from resource_servers rs where rs.server_id = s.id and rs.role = 'primary') as control_primary,
       coalesce((select p.server_id::text from resource_servers st
                 join resource_servers p on p.resource_id = st.resource_id and p.role = 'primary'
                 where st.server_id = s.id and st.role = 'standby' limit 1), s.attrs->'follows') as upstream,
       s.last_observation->'current_lsn' as observed_lsn
     from servers s join entity_states m on m.entity_id = s.id
     where m.finished_at is null and s.host is not null and s.port is not null`,
  );
  return rows.map((r) => ({
    id: r.id,
    host: r.host,
    port: r.port,
    password: sealer.open(r.sealed),
    healthPort: r.health_port ? Number(r.health_port) : undefined,
    machineState: r.state,
    controlPrimary: r.control_primary,
    upstream: r.upstream ?? undefined,
    observedLsn: r.observed_lsn ?? undefined,
  }));
}

const STATUS_SQL = `
select pg_is_in_recovery() as in_recovery,
  current_setting('server_version_num')::int as server_version,
  pg_postmaster_start_time() as postmaster_start_time,
  (select timeline_id from pg_control_checkpoint()) as timeline,
  case when not pg_is_in_recovery() then pg_current_wal_lsn()::text end as location,
  pg_last_wal_receive_lsn()::text as received_location,
  pg_last_wal_replay_lsn()::text as replayed_location,
  pg_last_xact_replay_timestamp() as replayed_timestamp,
  case when pg_is_in_recovery() then pg_is_wal_replay_paused() end as paused`;

interface Status {
  in_recovery: boolean;
  server_version: number;
  postmaster_start_time: Date;
  timeline: number;
  location: string | null;
  received_location: string | null;
  replayed_location: string | null;
  replayed_timestamp: Date | null;
  paused: boolean | null;
}

interface Connection {
  client: pg.Client;
  ready: Promise<unknown>;
}

/**
 * One connection per server, kept open as Patroni keeps its own: HAProxy checks every
 * server several times a second, and a new superuser login each time (a fork and a SCRAM
 * exchange) would cost more than the query. A connection that fails or closes is dropped
 * and the next check opens another.
 */
class Probe {
  private conn: Connection | undefined;
  /** Checks that arrive together (HAProxy's frontends, a replica's lag) share one query. */
  private asking: Promise<Status | undefined> | undefined;

  constructor(
    readonly target: SuperuserTarget,
    private readonly timeoutMs: number,
  ) {}

  /** The server's status, or undefined when it does not answer within the timeout. */
  status(): Promise<Status | undefined> {
    return (this.asking ??= this.ask().finally(() => (this.asking = undefined)));
  }

  private async ask(): Promise<Status | undefined> {
    const conn = (this.conn ??= this.open());
    try {
      await conn.ready;
      const { rows } = await conn.client.query<Status>(STATUS_SQL);
      return rows[0];
    } catch {
      this.drop(conn);
      return undefined;
    }
  }

  async close(): Promise<void> {
    const conn = this.conn;
    this.conn = undefined;
    await conn?.client.end().catch(() => undefined);
  }

  private open(): Connection {
    const client = superuserClient(this.target, {
      connectTimeoutMs: this.timeoutMs,
      queryTimeoutMs: this.timeoutMs,
      applicationName: 'pgfleet-health',
    });
    const conn = { client, ready: client.connect() };
    conn.ready.catch(() => undefined);
    client.on('error', () => this.drop(conn));
    client.on('end', () => this.drop(conn));
    return conn;
  }

  /** Forget a connection; ending one whose query is stuck on a hung server destroys its socket. */
  private drop(conn: Connection): void {
    if (this.conn === conn) this.conn = undefined;
    conn.client.end().catch(() => undefined);
  }
}

export class HealthServer {
  private readonly listeners = new Map<string, { server: http.Server; host: string; port: number }>();
  private targets = new Map<string, HealthTarget>();
  private readonly probes = new Map<string, Probe>();
  private refresher: { stop(): Promise<void> } | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly sealer: Sealer,
    private readonly log: Logger,
    private readonly refreshMs = 250,
    /** A hung server answers 503 within about this long instead of holding the check. */
    private readonly probeTimeoutMs = 1000,
  ) {}

  async start(): Promise<void> {
    this.refresher = await refreshEvery(this.refreshMs, () => this.refresh(), this.log, 'refreshing health targets');
  }

  /** Listen for new servers, forget finished ones, and take in roles and machine states. */
  async refresh(): Promise<void> {
    const targets = await loadTargets(this.pool, this.sealer);
    this.targets = new Map(targets.map((t) => [t.id, t]));
    for (const [id, probe] of this.probes) {
      const t = this.targets.get(id);
      if (!t || t.host !== probe.target.host || t.port !== probe.target.port || t.password !== probe.target.password) {
        void probe.close();
        this.probes.delete(id);
      }
    }
    for (const [id, entry] of this.listeners) {
      const t = this.targets.get(id);
      if (t?.host !== entry.host || t.healthPort !== entry.port) {
        entry.server.close();
        entry.server.closeAllConnections();
        this.listeners.delete(id);
      }
    }
    for (const t of targets) {
      if (t.healthPort === undefined || this.listeners.has(t.id)) continue;
      const server = http.createServer((req, res) => {
        this.answer(t.id, req, res).catch((err: unknown) => {
          this.log.warn({ err, server: t.id }, 'a health check failed');
          if (!res.headersSent) res.writeHead(503);
          res.end();
        });
      });
      server.on('error', (err) => this.log.error({ err, server: t.id, port: t.healthPort }, 'cannot serve health checks for this server'));
      // At the server's own address, where HAProxy's `check port` looks (Patroni's REST API is
      // on each server's host): servers on hosts of their own may each use one port, as Patroni's 8008.
      server.listen(t.healthPort, t.host);
      this.listeners.set(t.id, { server, host: t.host, port: t.healthPort });
    }
  }

  private probe(t: HealthTarget): Probe {
    let probe = this.probes.get(t.id);
    if (!probe) {
      probe = new Probe({ host: t.host, port: t.port, password: t.password }, this.probeTimeoutMs);
      this.probes.set(t.id, probe);
    }
    return probe;
  }

  /** The primary's WAL position now, or as last observed when it cannot be reached. */
  private async upstreamLsn(t: HealthTarget): Promise<number | undefined> {
    const upstream = t.upstream ? this.targets.get(t.upstream) : undefined;
    if (!upstream) return undefined;
    const live = await this.probe(upstream).status();
    return lsnBytes(live?.location) ?? lsnBytes(upstream.observedLsn);
  }

  private async answer(id: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://health');
    const check = CHECKS[url.pathname];
    const method = req.method ?? 'GET';
    if (!['GET', 'HEAD', 'OPTIONS'].includes(method)) return void res.writeHead(405, { allow: 'GET, HEAD, OPTIONS' }).end();
    if (!check) return void res.writeHead(404).end();
    const lagParam = url.searchParams.get('lag');
    const maxLag = lagParam === null ? undefined : parseLag(lagParam);
    if (lagParam !== null && maxLag === undefined)
      return void res.writeHead(400, { 'content-type': 'text/plain' }).end('lag is bytes or a size like 16MB\n');
    const t = this.targets.get(id);
    if (!t) return void res.writeHead(503).end();
    const { code, status, lagBytes } = await this.judge(t, check, maxLag, method === 'GET');
    // Like Patroni: OPTIONS and HEAD (what HAProxy sends) get the status line only.
    if (method !== 'GET') return void res.writeHead(code).end();
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(patroniBody(t, status, lagBytes)));
  }

  /** One check of one server; `showLag` measures a replica's lag even without a bound to check. */
  private async judge(t: HealthTarget, check: HealthCheck, maxLag: number | undefined, showLag: boolean) {
    const status = await this.probe(t).status();
    // The primary is asked only when a replica's lag is wanted: a bound to check, or a body to show it in.
    const primaryLsn = status?.in_recovery && (maxLag !== undefined || showLag) ? await this.upstreamLsn(t) : undefined;
    const replayed = lsnBytes(status?.replayed_location);
    const lagBytes = primaryLsn !== undefined && replayed !== undefined ? Math.max(0, primaryLsn - replayed) : undefined;
    const code = healthStatus(
      check,
      { machineState: t.machineState, controlPrimary: t.controlPrimary, probe: status && { inRecovery: status.in_recovery }, lagBytes },
      maxLag,
    );
    return { code, status, lagBytes };
  }

  /** What `/replica?lag=` answers for the server, for the router's read-only pool. */
  async replicaWithin(serverId: string, maxLagBytes: number): Promise<boolean> {
    const t = this.targets.get(serverId);
    return t !== undefined && (await this.judge(t, 'replica', maxLagBytes, false)).code === 200;
  }

  async stop(): Promise<void> {
    await this.refresher?.stop();
    await Promise.all(
      [...this.listeners.values()].map(({ server }) => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        return closed;
      }),
    );
    this.listeners.clear();
    await Promise.all([...this.probes.values()].map((p) => p.close()));
    this.probes.clear();
  }
}

/** The body of a GET, in the shape of Patroni's, with pgfleet's own facts under `pgfleet`. */
function patroniBody(t: HealthTarget, status: Status | undefined, lagBytes: number | undefined): Record<string, unknown> {
  const pgfleet = { server_id: t.id, machine_state: t.machineState, resource_primary: t.controlPrimary };
  if (!status) return { state: 'unreachable', role: t.controlPrimary ? 'primary' : 'replica', pgfleet };
  return {
    state: 'running',
    postmaster_start_time: status.postmaster_start_time.toISOString(),
    role: status.in_recovery ? 'replica' : 'primary',
    server_version: status.server_version,
    timeline: status.timeline,
    xlog: status.in_recovery
      ? {
          received_location: lsnBytes(status.received_location) ?? null,
          replayed_location: lsnBytes(status.replayed_location) ?? null,
          replayed_timestamp: status.replayed_timestamp?.toISOString() ?? null,
          paused: status.paused,
        }
      : { location: lsnBytes(status.location) ?? null },
    ...(status.in_recovery ? { lag: lagBytes ?? null } : {}),
    pgfleet,
  };
}
