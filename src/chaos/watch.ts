import type pg from 'pg';
import type { Pool } from '../db.ts';
import { superuserClient, type SuperuserTarget } from '../pg/superuser.ts';
import type { Sealer } from '../sealer.ts';
import { loadServerRecord } from '../servers/rows.ts';
import { isSplitBrain, writableServers, type Answer } from './checks.ts';
import { sleep, wallMs } from './writer.ts';

/** Two servers of one database that answered writable in the same poll. */
export interface SplitBrain {
  resourceId: string;
  servers: string[];
  /** Wall ms of the first and the last poll that saw it. */
  from: number;
  to: number;
}

interface Watched extends SuperuserTarget {
  id: string;
  resourceId: string;
  client: pg.Client | undefined;
}

/**
 * Asks every server of the watched databases directly, every `everyMs`, whether it is in
 * recovery, and records each stretch of polls in which two of one database's servers said
 * no: a split brain, seen by the servers themselves and not by what pgfleet believes.
 * The servers are every one the control database ever linked to the databases during the
 * run (one unlinked stays watched: it could still take writes); their addresses are read
 * again every 2 s and kept while the control database is away.
 */
export class SplitBrainWatch {
  readonly splitBrains: SplitBrain[] = [];
  polls = 0;
  private readonly servers = new Map<string, Watched>();
  private readonly open = new Map<string, SplitBrain>();
  private stopped = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly pool: Pool,
    private readonly sealer: Sealer,
    private readonly resources: string[],
    private readonly everyMs = 100,
  ) {}

  async start(): Promise<void> {
    await this.refresh();
    this.loops = [this.pollLoop(), this.refreshLoop()];
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    await Promise.all([...this.servers.values()].flatMap((s) => (s.client ? [s.client.end().catch(() => undefined)] : [])));
  }

  /** Split brains that overlap [from, to]. */
  between(from: number, to: number): SplitBrain[] {
    return [...this.splitBrains, ...this.open.values()].filter((s) => s.to >= from && s.from <= to);
  }

  private async refresh(): Promise<void> {
    const { rows } = await this.pool.query<{ resource_id: string; server_id: string }>(
      'select resource_id, server_id from resource_servers where resource_id = any($1::uuid[])',
      [this.resources],
    );
    for (const row of rows) {
      const record = await loadServerRecord(this.pool, this.sealer, row.server_id);
      if (!record?.host || !record.port) continue;
      const known = this.servers.get(row.server_id);
      if (known && known.port === record.port && known.host === record.host) continue;
      await known?.client?.end().catch(() => undefined);
      this.servers.set(row.server_id, {
        id: row.server_id,
        resourceId: row.resource_id,
        host: record.host,
        port: record.port,
        password: record.superuserPassword,
        client: undefined,
      });
    }
  }

  private async refreshLoop(): Promise<void> {
    while (!this.stopped) {
      await sleep(2000);
      await this.refresh().catch(() => undefined);
    }
  }

  private async ask(server: Watched): Promise<Answer> {
    try {
      if (!server.client) {
        const client = superuserClient(server, { connectTimeoutMs: 500, queryTimeoutMs: 500, applicationName: 'pgfleet-chaos' });
        client.on('error', () => undefined);
        server.client = client;
        await client.connect();
      }
      const { rows } = await server.client.query<{ recovery: boolean }>('select pg_is_in_recovery() as recovery');
      return { serverId: server.id, writable: rows[0]?.recovery === false };
    } catch {
      // Not awaited: end() on a connection to a frozen server can wait forever.
      void server.client?.end().catch(() => undefined);
      server.client = undefined;
      return { serverId: server.id, writable: undefined };
    }
  }

  private async pollLoop(): Promise<void> {
    while (!this.stopped) {
      const started = wallMs();
      const byResource = new Map<string, Watched[]>();
      for (const s of this.servers.values()) byResource.set(s.resourceId, [...(byResource.get(s.resourceId) ?? []), s]);
      await Promise.all(
        [...byResource].map(async ([resourceId, servers]) => {
          const answers = await Promise.all(servers.map((s) => this.ask(s)));
          const at = wallMs();
          const open = this.open.get(resourceId);
          if (isSplitBrain(answers)) {
            if (open) open.to = at;
            else this.open.set(resourceId, { resourceId, servers: writableServers(answers), from: at, to: at });
          } else if (open) {
            this.open.delete(resourceId);
            this.splitBrains.push(open);
          }
        }),
      );
      this.polls++;
      await sleep(Math.max(0, this.everyMs - (wallMs() - started)));
    }
    this.splitBrains.push(...this.open.values());
    this.open.clear();
  }
}
