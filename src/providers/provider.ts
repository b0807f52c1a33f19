import type { Host } from '../hosts/host.ts';
import type { PgCluster } from '../pg/cluster.ts';
import type { Pgbouncer } from '../pg/pgbouncer.ts';

/** A server as a provider sees it. */
export interface ServerRecord {
  id: string;
  provider: string;
  host: string | null;
  port: number | null;
  superuserPassword: string;
  attrs: Record<string, string>;
  /** Where the server it follows (`attrs.follows`) listens now, when it follows one that is placed. */
  leader?: { host: string; port: number };
}

export interface Placement {
  host: string;
  port: number;
  /** Provider-specific facts kept on the server row (a data directory, an instance id). */
  attrs: Record<string, string>;
}

/**
 * Finds places for servers and gives them back: a port and a directory on this machine for
 * `local`, an instance for a cloud. What runs there is the host's business (`host`), and
 * the replication steps above both (src/replication/) work on any provider. Every method
 * may run twice for one server (a job whose worker died runs again), so each must be safe
 * to repeat. Every provider is registered in src/providers/registry.ts and passes the
 * contract suite in test/providers/contract.ts.
 */
export interface Provider {
  /** Decide where the server lives. Repeating it for a placed server returns the same place. */
  provision(server: ServerRecord): Promise<Placement>;
  /** The host a placed server runs on; a server not placed yet has none. */
  host(server: ServerRecord): Host;
  /** Stop the server and remove everything it had, giving its place back. Only an operator's delete reaches it. */
  destroy(server: ServerRecord): Promise<void>;
}

/**
 * What every provider is made from (src/providers/registry.ts): PGFLEET_HOME, and Postgres
 * and pgbouncer as this machine runs them (Postgres as an unprivileged user when pgfleet is
 * root).
 */
export interface ProviderContext {
  home: string;
  cluster: PgCluster;
  /** The pgbouncer put in front of each server; none when this machine has none. */
  pooler: Pgbouncer | undefined;
}

/** Where a server was placed; one not placed yet has no address and no host. */
export function placed(server: ServerRecord): { host: string; port: number } {
  if (server.host === null || server.port === null) throw new Error(`server ${server.id} has no port yet: provision it first`);
  return { host: server.host, port: server.port };
}
