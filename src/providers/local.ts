import { readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { controlDataDir } from '../control.ts';
import { LocalHost, localServerFiles, type LocalMachine } from '../hosts/local.ts';
import type { PgCluster } from '../pg/cluster.ts';
import { stopPooler } from '../pg/pgbouncer.ts';
import { freePort } from '../pg/ports.ts';
import { placed, type Placement, type Provider, type ProviderContext, type ServerRecord } from './provider.ts';

/** Each server's own directory, under PGFLEET_HOME/servers. */
function serverDir(home: string, id: string): string {
  return path.join(home, 'servers', id);
}

/**
 * The embedded default: this machine. Each server gets a directory of its own under
 * PGFLEET_HOME/servers and a loopback port, and a port for its pgbouncer (`pool_port`)
 * when the machine has one; a LocalHost runs it there.
 */
export class LocalProvider implements Provider {
  private readonly machine: LocalMachine;

  constructor(context: ProviderContext) {
    this.machine = { ...context, walked: new Map() };
  }

  dataDir(server: Pick<ServerRecord, 'id'>): string {
    return localServerFiles(serverDir(this.machine.home, server.id)).dataDir;
  }

  async provision(server: ServerRecord): Promise<Placement> {
    if (server.host !== null && server.port !== null) return { host: server.host, port: server.port, attrs: server.attrs };
    await fs.mkdir(path.join(this.machine.home, 'servers'), { recursive: true, mode: 0o755 });
    // The router process answers this server's health checks (Patroni's endpoints) on a port of its own.
    const attrs: Record<string, string> = { data_dir: this.dataDir(server), health_port: String(await freePort()) };
    if (this.machine.pooler) attrs.pool_port = String(await freePort());
    return { host: '127.0.0.1', port: await freePort(), attrs };
  }

  host(server: ServerRecord): LocalHost {
    placed(server);
    return new LocalHost(this.machine, server, serverDir(this.machine.home, server.id));
  }

  async destroy(server: ServerRecord): Promise<void> {
    await new LocalHost(this.machine, server, serverDir(this.machine.home, server.id)).destroy();
  }
}

/** Stop every cluster under PGFLEET_HOME, the servers (with their poolers) and the embedded control database. */
export async function stopLocalClusters(home: string, cluster: PgCluster, control: PgCluster = cluster): Promise<string[]> {
  let ids: string[];
  try {
    ids = readdirSync(path.join(home, 'servers'));
  } catch {
    ids = [];
  }
  const stopped: string[] = [];
  for (const id of ids) await stopPooler(localServerFiles(serverDir(home, id)).poolDir);
  const all: [PgCluster, string][] = [
    ...ids.map((id): [PgCluster, string] => [cluster, localServerFiles(serverDir(home, id)).dataDir]),
    [control, controlDataDir(home)],
  ];
  for (const [runs, dir] of all) {
    if (!(await runs.status(dir)).running) continue;
    await runs.stop(dir);
    stopped.push(dir);
  }
  return stopped;
}
