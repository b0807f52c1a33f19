/**
 * `pgfleet chaos`: the chaos run against a deployment that is running already, for game days.
 * It makes only the faults it can reach from here: those of Postgres (crash, freeze, standby
 * crash, walsender stall, back-to-back failovers), on servers of the local provider under
 * this PGFLEET_HOME, which it signals by the pids in their data directories. Killing
 * pgfleet's own processes is left to the operator's supervisor (npm run chaos does it on the
 * layout it starts). It needs the operator API (PGFLEET_API_URL, OPERATOR_TOKEN), the control
 * database (DATABASE_URL, or the embedded one under PGFLEET_HOME) and the encryption key, and
 * writes numbered rows into a table of its own in each database it is given.
 */
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config.ts';
import { encryptionKey, existingOperatorToken } from '../control.ts';
import { createPool } from '../db.ts';
import { Sealer } from '../sealer.ts';
import { certificateAuthority } from '../tls/authority.ts';
import { showResource, type Deployment } from './deployment.ts';
import { POSTGRES_FAULTS } from './faults.ts';
import { chaosSettings } from './options.ts';
import { clusterPids, Frozen, serverDataDir } from './processes.ts';
import { chaosMarkdown } from './report.ts';
import { runChaos, type ChaosDatabase } from './run.ts';
import { ChaosReader, ChaosWriter, query } from './writer.ts';

export const CHAOS_HELP = `pgfleet chaos --resource <id> [--resource <id> …] [--faults 100] [--seed N]
              [--kinds ${POSTGRES_FAULTS.join(',')}] [--whole-bound 60]
    seeded random faults, one at a time, against running ha databases of this deployment,
    each under a writer; exits 1 on a lost row, a split brain or a database not whole in time`;

class UsageError extends Error {}
export { UsageError as ChaosUsageError };

/** The control database's URL: DATABASE_URL, or the embedded one's, read (never started) from PGFLEET_HOME. */
function controlUrl(config: Config): string {
  if (config.databaseUrl) return config.databaseUrl;
  const file = path.join(config.home, 'control.json');
  if (!existsSync(file))
    throw new UsageError(
      `no control database: set DATABASE_URL, or PGFLEET_HOME to the home of \`pgfleet start\` (${config.home} has none)`,
    );
  const state = JSON.parse(readFileSync(file, 'utf8')) as { port: number; password: string };
  return `postgres://postgres:${encodeURIComponent(state.password)}@127.0.0.1:${state.port}/pgfleet`;
}

export async function chaosCommand(config: Config, args: string[], out: (line: string) => void): Promise<number> {
  const resources = args.flatMap((a, i) => (a === '--resource' && args[i + 1] ? [args[i + 1]!] : []));
  if (resources.length === 0) throw new UsageError(`usage: ${CHAOS_HELP}`);
  let settings;
  try {
    settings = chaosSettings(args, process.env, POSTGRES_FAULTS);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const token = existingOperatorToken(config.home, config.operatorToken);
  if (!token) throw new UsageError(`no operator token: set OPERATOR_TOKEN, or PGFLEET_HOME to the home of \`pgfleet start\``);
  const pool = createPool(controlUrl(config), 5);
  pool.on('error', () => undefined);
  const dep: Deployment = {
    apiUrl: process.env.PGFLEET_API_URL ?? `http://127.0.0.1:${config.port}`,
    token,
    pool,
    sealer: new Sealer(await encryptionKey(config.home, config.encryptionKey)),
    home: config.home,
  };
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-chaos-'));
  const table = `pgfleet_chaos_${settings.seed}`;
  const dbs: ChaosDatabase[] = [];
  try {
    const caFile = path.join(tmp, 'ca.pem');
    await fs.writeFile(caFile, (await certificateAuthority(pool, dep.sealer)).certificate);
    for (const id of resources) {
      const shown = await showResource(dep, id).catch((err: unknown) => {
        throw new UsageError(`resource ${id}: ${(err as Error).message}`);
      });
      const url = Object.entries(shown.config).find(
        ([k]) => k.endsWith('_URL') && !k.endsWith('_READONLY_URL') && !k.endsWith('_CONNECTION_POOL_URL'),
      )?.[1];
      const readOnly = Object.entries(shown.config).find(([k]) => k.endsWith('_READONLY_URL'))?.[1];
      if (!url || !shown.servers.some((s) => s.role === 'standby'))
        throw new UsageError(`resource ${id} is not an ha database with a URL (state ${shown.state})`);
      for (const s of shown.servers) {
        if ((await clusterPids(serverDataDir(config.home, s.id))).length === 0)
          throw new UsageError(`server ${s.id} of ${id} is not a running local server under ${config.home}: chaos signals Postgres here`);
      }
      const verify = `${url}&sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}`;
      const writer = new ChaosWriter(verify, table);
      await writer.create();
      writer.start();
      const reader = readOnly
        ? new ChaosReader(`${readOnly}&sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}`, table)
        : undefined;
      reader?.start();
      dbs.push({ id, writer, ...(reader ? { reader } : {}) });
    }
    out(`chaos: ${settings.faults} faults, seed ${settings.seed}, kinds ${settings.kinds.join(', ')}, on ${resources.join(', ')}`);
    const frozen = new Frozen();
    // Ctrl-C must not leave a server stopped (SIGSTOP) behind.
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        frozen.thaw();
        out(`chaos: ${signal}: the frozen processes are continued; the table ${table} stays in each database`);
        process.exit(130);
      });
    }
    const result = await runChaos(dep, dbs, { ...settings, log: out, frozen });
    await Promise.all(dbs.map((d) => Promise.all([d.writer.stop(), d.reader?.stop()])));
    out(chaosMarkdown(result));
    // The table is the evidence when something was lost: kept then, dropped otherwise.
    if (result.failures.length === 0) for (const d of dbs) await query(d.writer.url, `drop table ${table}`).catch(() => undefined);
    else out(`the table ${table} stays in each database for a look at what was lost`);
    return result.failures.length === 0 ? 0 : 1;
  } finally {
    await Promise.all(dbs.map((d) => Promise.all([d.writer.stop(), d.reader?.stop()])));
    await pool.end();
    await fs.rm(tmp, { recursive: true, force: true });
  }
}
