import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { LocalHost } from '../hosts/local.ts';
import { LocalProvider } from './local.ts';
import type { Placement, Provider, ProviderContext, ServerRecord } from './provider.ts';

/** The ports every server has on its own address, as on a fleet of hosts: Postgres's, pgbouncer's and Patroni's REST API's. */
const POSTGRES_PORT = 5432;
const POOLER_PORT = 6432;
const HEALTH_PORT = 8008;

/**
 * Addresses tried for one server before giving up. Each is drawn from 16 million, so a
 * second try is rare and a sixteenth means the ports are taken at every address (something
 * listens on 0.0.0.0:5432, say).
 */
const TRIES = 16;

/**
 * The `n`th address tried for a server: drawn from its id, in 127.1.0.1–127.254.255.254,
 * clear of 127.0.0.0/16, where 127.0.0.1 (the local provider's servers, the router, the
 * control database) lives.
 */
function candidate(id: string, n: number): string {
  const [a, b, c] = createHash('sha256').update(`${id}:${n}`).digest();
  return `127.${1 + (a! % 254)}.${b!}.${1 + (c! % 254)}`;
}

/** Whether nothing listens at `host`:`port`, found by listening there a moment. */
function free(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/**
 * This machine, laid out as a fleet of hosts: each server gets an address of its own in
 * 127.0.0.0/8 (Linux routes the whole block to the loopback interface; no root needed) and
 * the standard ports there (Postgres 5432, its pgbouncer 6432, its health checks 8008), with
 * its files under PGFLEET_HOME/servers/<id> and a LocalHost running it, as `local` does.
 * What it is for: code that tells servers apart by port alone, or takes 127.0.0.1 for every
 * server's address, fails its tests here, before the first provider of real hosts is built.
 *
 * An address is claimed by a file under PGFLEET_HOME/loopback named after it and holding
 * the server's id, made whole or not at all (written aside and hard-linked into place, which
 * fails when the name exists): two workers placing servers at once never get one address, and
 * a provision that runs again (its job's worker died) finds its own claim and the same place.
 * An address another process listens at is passed over.
 */
export class LoopbackProvider implements Provider {
  private readonly local: LocalProvider;
  private readonly home: string;
  private readonly pooled: boolean;

  constructor(context: ProviderContext) {
    this.local = new LocalProvider(context);
    this.home = context.home;
    this.pooled = context.pooler !== undefined;
  }

  private get claims(): string {
    return path.join(this.home, 'loopback');
  }

  async provision(server: ServerRecord): Promise<Placement> {
    if (server.host !== null && server.port !== null) return { host: server.host, port: server.port, attrs: server.attrs };
    // Traversable by the Postgres user, which ensureOwnedDir's 0700 would not make it.
    await fs.mkdir(path.join(this.home, 'servers'), { recursive: true, mode: 0o755 });
    await fs.mkdir(this.claims, { recursive: true, mode: 0o700 });
    const attrs: Record<string, string> = { data_dir: this.local.dataDir(server), health_port: String(HEALTH_PORT) };
    if (this.pooled) attrs.pool_port = String(POOLER_PORT);
    const ports = [POSTGRES_PORT, HEALTH_PORT, ...(this.pooled ? [POOLER_PORT] : [])];
    for (let n = 0; n < TRIES; n++) {
      const host = candidate(server.id, n);
      const owner = await this.claimant(host);
      if (owner === server.id) return { host, port: POSTGRES_PORT, attrs };
      if (owner !== undefined) continue;
      if (!(await Promise.all(ports.map((port) => free(host, port)))).every(Boolean)) continue;
      if ((await this.claim(host, server.id)) === server.id) return { host, port: POSTGRES_PORT, attrs };
    }
    throw new Error(`no free loopback address for server ${server.id}: ports ${ports.join(', ')} are taken at ${TRIES} addresses tried`);
  }

  /** The id of the server that claimed `host`, if one did. */
  private async claimant(host: string): Promise<string | undefined> {
    return fs.readFile(path.join(this.claims, host), 'utf8').catch(() => undefined);
  }

  /** Claim `host` for `id`; the id of whoever holds it afterwards. */
  private async claim(host: string, id: string): Promise<string | undefined> {
    // Named for this attempt alone: two workers placing one server at once each link their own.
    const aside = path.join(this.claims, `.${randomUUID()}`);
    await fs.writeFile(aside, id, { mode: 0o600 });
    try {
      await fs.link(aside, path.join(this.claims, host));
      return id;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      return this.claimant(host);
    } finally {
      await fs.rm(aside, { force: true });
    }
  }

  host(server: ServerRecord): LocalHost {
    return this.local.host(server);
  }

  /** The server goes first, then its claim: its address is not handed out while it may still listen there. */
  async destroy(server: ServerRecord): Promise<void> {
    await this.local.destroy(server);
    const names = await fs.readdir(this.claims).catch(() => []);
    for (const name of names)
      if (!name.startsWith('.') && (await this.claimant(name)) === server.id) await fs.rm(path.join(this.claims, name), { force: true });
  }
}
